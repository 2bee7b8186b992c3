"""The GPU path end to end, in one command: tests, segmentation, training, prediction, the demo.

    python bench/gpu_check.py OUT_DIR [--size full|tiny] [--budget SECONDS] [--steps a,b,...]
                              [--limit STEP=SECONDS ...]

Each step runs in its own process (its own embedded Ray), after the ones before it even if they
failed, under its own time limit and the whole run's budget; OUT_DIR gets `gpu_check.json`
(every step's `status` ok|error|timeout|skipped, `seconds`, `error`, GPU and CPU utilisation
sampled while it ran, and its `result`) and `gpu_check.log` (every step's output). Steps:

1. `pytest_gpu`: `pytest -m gpu tests/unit/test_gpu.py and tests/stages/test_gpu.py` (CUDA inference = CPU inference).
2. `segment`: `run_segment`, `hpa` backend on GPU actors over generated images, stand-in U-Nets
   as costly as HPA's (timm's DPN-92 encoder where timm imports, else the small stand-in),
   loaded through the same pickle path; the stage's images/s beside the actor's bare `infer` and
   the CPU steps per image.
3. `train`: `fit_fold` (Ray Train + Ray Data) vs the bare training step on the same device,
   model, batch and precision (bench/gpu_train.py); the end-to-end / bare ratio (goal >= 0.9).
4. `predict`: `run_predict` with GPU segmentation and GPU classifier actors: images/s.
5. `demo`: `python -m hpa_ray demo --model efficientnet-b2` (tiny: `--quick --model tiny`):
   mAP and wall time.
6. `train_compile`: step 3 with `compile: true` (torch.compile).
7. `train_bag`: step 3 with `method: bag` (an image's 16 cells per bag; cells/s).

`--size tiny` runs the same code at sizes a 2-core CPU machine manages in minutes (CI checks
that every field is written); timings from it mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
STEPS = ("pytest_gpu", "segment", "train", "predict", "demo", "train_compile", "train_bag")


@dataclass(frozen=True)
class Size:
    images: int  # generated images for segment and predict
    image_size: int  # their side in px
    seg_batch: int  # images per segmentation actor call
    encoder: str | None  # the stand-in U-Nets' encoder (None: the small stand-in)
    model: str  # classifier for train and predict
    cells: int  # training crops
    crop: int  # crop side
    batch: int  # training batch
    epochs: int  # training epochs (the first is left out of the end-to-end rate)
    folds: int  # predict's ensemble
    limits: dict  # seconds per step


SIZES = {
    "full": Size(64, 2048, 8, "dpn92", "efficientnet-b2", 8192, 260, 128, 3, 3,
                 {"pytest_gpu": 45, "segment": 90, "train": 170, "predict": 90, "demo": 240, "train_compile": 170,
                  "train_bag": 170}),
    "tiny": Size(4, 512, 2, None, "tiny", 256, 32, 32, 2, 2,
                 {"pytest_gpu": 120, "segment": 150, "train": 150, "predict": 150, "demo": 400, "train_compile": 300,
                  "train_bag": 150}),
}  # fmt: skip


# ---------------------------------------------------------------- the steps (run in a child process)

_PARTIAL: dict = {}  # what the running step has measured so far (kept when it is stopped)
_RESULT_PATH: Path | None = None
_T0 = time.perf_counter()


def note(**values) -> None:
    """Record measurements as they come: a step stopped at its limit still reports them."""
    _PARTIAL.update(values)
    print(f"[{time.perf_counter() - _T0:6.1f} s] " + ", ".join(f"{k}={v}" for k, v in values.items()), flush=True)
    if _RESULT_PATH is not None:
        _RESULT_PATH.write_text(json.dumps({"status": "partial", "result": _PARTIAL}, indent=2, default=str))


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def step_pytest_gpu(size: Size, work: Path) -> dict:
    tests = ["tests/unit/test_gpu.py", "tests/stages/test_gpu.py"]
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *tests],
                         cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    print(out.stdout[-5000:], out.stderr[-5000:])
    summary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    if out.returncode not in (0, 5):  # 5: nothing collected
        raise RuntimeError(f"pytest -m gpu failed: {summary}")
    return {"summary": summary, "cuda": _cuda()}


def _standins(work: Path, encoder: str | None) -> tuple[str, str, str]:
    from hpa_ray.segment.backends.standin import save_standin, timm_available

    encoder = encoder if encoder and timm_available() else None
    kwargs = {"encoder": encoder} if encoder else {"width": 16}
    nuclei = save_standin(str(work / "nuclei_standin.pth"), **kwargs)
    cell = save_standin(str(work / "cell_standin.pth"), **kwargs)
    return nuclei, cell, encoder or "small (no timm here)"


def _images(work: Path, size: Size) -> Path:
    from hpa_ray.synth.config import SynthConfig
    from hpa_ray.synth.generate import generate

    data = work / "images_data"
    if not (data / "labels.csv").exists():
        generate(data, size.images, seed=0, cfg=SynthConfig(size=size.image_size))
    return data


def _segment_config(work: Path, size: Size, crop: int):
    from hpa_ray.segment.config import SegmentConfig
    from hpa_ray.segment.sections import HpaConfig

    nuclei, cell, encoder = _standins(work, size.encoder)
    hpa = HpaConfig(nuclei_model=nuclei, cell_model=cell, device="auto")
    return SegmentConfig(backend="hpa", hpa=hpa, batch_size=size.seg_batch, crop_size=crop), encoder


def _bare_infer_rate(cfg, inputs: list) -> float:
    from hpa_ray.segment.backends import build_backend

    backend = build_backend(cfg)
    backend.infer(inputs[: cfg.batch_size])  # warm-up: CUDA context, kernels
    _sync()
    start = time.perf_counter()
    for i in range(0, len(inputs), cfg.batch_size):
        backend.infer(inputs[i : i + cfg.batch_size])
    _sync()
    return len(inputs) / (time.perf_counter() - start)


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _cpu_steps(cfg, paths: list[list[str]]) -> tuple[dict, list]:
    """Seconds per image of the CPU steps, one core: decode, prepare, post-process, cut."""
    import cv2

    from hpa_ray.core.cells import cut_cells, upsample_labels
    from hpa_ray.core.images import read_image
    from hpa_ray.segment.backends import build_backend, build_postprocess, build_preprocess

    cv2.setNumThreads(1)
    prep, post, backend = build_preprocess(cfg), build_postprocess(cfg), build_backend(cfg)
    t = dict.fromkeys(("decode", "prepare", "infer_one", "postprocess", "cut"), 0.0)
    inputs = []
    for image_paths in paths:
        a = time.perf_counter()
        image = read_image(image_paths)
        b = time.perf_counter()
        inputs.append(prep(image))
        c = time.perf_counter()
        raw = backend.infer([inputs[-1]])[0]
        d = time.perf_counter()
        labels = post(raw)
        e = time.perf_counter()
        cut_cells(image, upsample_labels(labels, *image.shape[1:]), cfg.crop_size)
        f = time.perf_counter()
        for key, seconds in zip(t, (b - a, c - b, d - c, e - d, f - e)):
            t[key] += seconds
        note(cpu_steps_images_done=len(inputs))
    per_image = {k: v / len(paths) for k, v in t.items()}
    return per_image, inputs


def step_segment(size: Size, work: Path) -> dict:
    from hpa_ray.core.images import list_images
    from hpa_ray.runtime import session
    from hpa_ray.segment.stage import run_segment

    data = _images(work, size)
    cfg, encoder = _segment_config(work, size, crop=260 if size.image_size >= 1024 else 64)
    note(encoder=encoder, image_size=size.image_size, data_ready_s=time.perf_counter() - _T0)
    start = time.perf_counter()
    session.init_ray()
    cpus = session.cluster_resources().get("CPU", 1)
    note(ray_start_s=time.perf_counter() - start, cpus=cpus)
    stage = run_segment(data / "images", work / "segment", cfg, data / "labels.csv")
    rate = stage.processed / stage.seconds
    note(images=stage.processed, cells=stage.cells, failed=int(len(stage.failed)), stage_s=stage.seconds,
         stage_images_per_s=rate)  # fmt: skip
    jobs = list_images(data / "images").jobs
    per_image, inputs = _cpu_steps(cfg, [j["paths"] for j in jobs[: min(8, len(jobs))]])
    cpu_seconds = sum(v for k, v in per_image.items() if k != "infer_one")
    cpu_bound = cpus / cpu_seconds
    note(cpu_steps_s_per_image_one_core=per_image, cpu_bound_images_per_s=cpu_bound)
    inputs = (inputs * -(-len(jobs) // len(inputs)))[: len(jobs)]
    infer = _bare_infer_rate(cfg, inputs)
    note(bare_infer_images_per_s=infer, batch=cfg.batch_size,
         cpu_share_of_stage_time=min(1.0, rate / cpu_bound),
         limited_by="gpu inference" if infer < cpu_bound else "cpu steps (decode, post-process, cut)",
         stage_vs_bound=rate / min(infer, cpu_bound))  # fmt: skip
    return dict(_PARTIAL)


def _train_rates(size: Size, work: Path, compile_model: bool, method: str = "cell") -> dict:
    import gpu_train
    import pandas as pd
    import torch

    from hpa_ray.runtime import session
    from hpa_ray.train.config import TrainConfig
    from hpa_ray.train.fit import fit_fold

    gpu = _cuda()
    device = torch.device("cuda" if gpu else "cpu")
    note(model=size.model, method=method, batch=size.batch, crop=size.crop, cells=size.cells, compile=compile_model,
         precision="bf16 + channels-last" if gpu else "fp32 + channels-last")  # fmt: skip
    cfg = TrainConfig(model=size.model, batch_size=size.batch, epochs=size.epochs, patience=size.epochs, method=method,
                      use_gpu=gpu, cpus_per_worker=4.0 if gpu else 0.5, compile=compile_model)  # fmt: skip
    start = time.perf_counter()
    # The bare step of the backbone on single cells: what a bag's cells cost too.
    bare = gpu_train.bare_step_rate(cfg.model_copy(update={"method": "cell"}), size.crop, device)
    note(bare_step_images_per_s=bare, bare_measure_s=time.perf_counter() - start)
    cells_root = work / ("cells_train" if not compile_model else "cells_compile")
    if not (cells_root / "folds.csv").exists():
        gpu_train.write_cells(cells_root, size.cells, size.crop)
    run = work / f"run_{method}{'_compile' if compile_model else ''}"
    shutil.rmtree(run, ignore_errors=True)
    note(cells_written_s=time.perf_counter() - _T0)
    session.init_ray()
    start = time.perf_counter()
    watcher = _EpochWatcher(run / "fold-0" / "metrics.jsonl", bare)
    watcher.start()
    fit_fold(cells_root / "cells", cells_root / "folds.csv", 0, run, cfg)
    watcher.stop.set()
    reports = pd.read_csv(run / "fold-0" / "metrics.csv").to_dict("records")
    note(**_rates_summary(reports, bare), fit_fold_s=time.perf_counter() - start, goal=0.9)
    return dict(_PARTIAL)


_EPOCH_PARTS = ("train_pass_s", "input_wait_s", "first_batch_s", "first_step_s")


def _rates_summary(reports: list[dict], bare: float) -> dict:
    """reports: fit_fold's per-epoch metrics. The end-to-end rate leaves out the first epoch
    (kernel selection, readers starting); each epoch's time is split as the loop measured it."""
    rates = [r["train_images_per_s"] for r in reports]
    end_to_end = max(rates[1:]) if len(rates) > 1 else rates[0]
    ratio = end_to_end / bare
    parts = [{k: r.get(k) for k in _EPOCH_PARTS} for r in reports]
    steady = parts[1:] or parts
    waiting = max((q["input_wait_s"] or 0) / max(q["train_pass_s"] or 1e-9, 1e-9) for q in steady)
    # On CUDA the waits are an upper bound (a batch's copy to the device can queue behind the
    # steps before it): "input pipeline" there says where to look first, not a verdict.
    limit = "gpu (model step)" if ratio >= 0.9 else ("input pipeline" if waiting > 0.1 else "per-step overhead")
    return {"end_to_end_images_per_s_per_epoch": rates, "end_to_end_images_per_s": end_to_end, "ratio": ratio,
            "epoch_parts": parts, "input_wait_share": waiting, "limited_by": limit}  # fmt: skip


class _EpochWatcher(threading.Thread):
    """Notes each epoch's rate as fit_fold reports it (a stopped step keeps the epochs it ran)."""

    def __init__(self, path: Path, bare: float):
        super().__init__(daemon=True)
        self.path, self.bare, self.seen = path, bare, 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            lines = self.path.read_text().splitlines() if self.path.exists() else []
            if len(lines) > self.seen:
                self.seen = len(lines)
                note(**_rates_summary([json.loads(x) for x in lines], self.bare))


def step_train(size: Size, work: Path) -> dict:
    return _train_rates(size, work, compile_model=False)


def step_train_compile(size: Size, work: Path) -> dict:
    return _train_rates(size, work, compile_model=True)


def step_train_bag(size: Size, work: Path) -> dict:
    """The bag method (16 cells per image, bags of 16): cells/s, beside the same bare step."""
    return _train_rates(size, work, compile_model=False, method="bag")


def _make_run(work: Path, size: Size, seg_cfg) -> Path:
    import torch

    from hpa_ray.core.config import write_resolved
    from hpa_ray.train.config import TrainConfig
    from hpa_ray.train.model import build_model

    run = work / "predict_run"
    for k in range(size.folds):
        cfg = TrainConfig(model=size.model, seed=k)
        (run / f"fold-{k}" / "best").mkdir(parents=True, exist_ok=True)
        torch.save(build_model(cfg).state_dict(), run / f"fold-{k}" / "best" / "model.pt")
        write_resolved(cfg, run / f"fold-{k}" / "config.yaml")
    write_resolved(seg_cfg, run / "segment_config.yaml")
    return run


def step_predict(size: Size, work: Path) -> dict:
    from hpa_ray.predict.config import PredictConfig
    from hpa_ray.predict.run import run_predict
    from hpa_ray.runtime import session

    data = _images(work, size)
    seg_cfg, encoder = _segment_config(work, size, crop=260 if size.image_size >= 1024 else 32)
    run = _make_run(work, size, seg_cfg)
    cfg = PredictConfig(images_per_batch=8, batch_size=256)
    note(encoder=encoder, model=size.model, folds=size.folds, tta=cfg.tta, image_size=size.image_size)
    session.init_ray()
    note(gpu_classifier=session.cluster_resources().get("GPU", 0) > 0)
    # One run: actors (and their models) start anew with every run, so a second is no warmer.
    result = run_predict(data / "images", run, work / "submission.csv", cfg)
    n = len(result.images)
    note(images=n, cells=int(result.images.n_cells.sum()), failed=int(len(result.failed)), seconds=result.seconds,
         images_per_s=n / result.seconds)  # fmt: skip
    return dict(_PARTIAL)


def step_demo(size: Size, work: Path) -> dict:
    from hpa_ray.core.config import load_config
    from hpa_ray.demo import run_demo
    from hpa_ray.train.config import TrainConfig

    quick = size.image_size < 1024
    # On a GPU the full demo chooses its model itself (the card's B2): the choice is checked too.
    model = None if _cuda() and not quick else "tiny"
    start = time.perf_counter()
    outputs = run_demo(work / "demo", seed=0, quick=quick, model=model)
    seconds = time.perf_counter() - start
    scores = json.loads(Path(outputs["evaluation"]).read_text())
    per_class = scores.get("per_class_ap", {})
    chosen = load_config(TrainConfig, Path(outputs["models"]) / "fold-0" / "config.yaml").model
    return {"model": chosen, "model_chosen_by_demo": model is None, "quick": quick, "wall_s": seconds,
            "mAP": scores["mAP"],
            "prior_mAP": scores["prior_mAP"], "per_class_ap": per_class}  # fmt: skip


def run_step(name: str, size_name: str, work: Path, result_path: Path) -> int:
    """In the child process: run one step and write its result (or its error) as JSON."""
    global _RESULT_PATH
    _RESULT_PATH = result_path
    sys.path.insert(0, str(BENCH))
    try:
        if os.environ.get("GPU_CHECK_FAIL_STEP") == name:  # the CPU test of a failing step
            raise RuntimeError(f"failed on purpose (GPU_CHECK_FAIL_STEP={name})")
        result = {"status": "ok", "result": globals()[f"step_{name}"](SIZES[size_name], work)}
    except Exception as exc:  # noqa: BLE001 - recorded, and the next step runs
        traceback.print_exc()
        result = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:2000], "result": _PARTIAL}
    result_path.write_text(json.dumps(result, indent=2, default=str))
    return 0


# ---------------------------------------------------------------- the driver


class Sampler(threading.Thread):
    """GPU utilisation and memory (nvidia-smi) and CPU utilisation (psutil), every 0.5 s."""

    def __init__(self):
        super().__init__(daemon=True)
        self.gpu, self.mem, self.cpu = [], [], []
        self.stop = threading.Event()
        self.smi = shutil.which("nvidia-smi")

    def run(self) -> None:
        import psutil

        psutil.cpu_percent()
        while not self.stop.wait(0.5):
            self.cpu.append(psutil.cpu_percent())
            if self.smi:
                try:
                    line = subprocess.run([self.smi, "--query-gpu=utilization.gpu,memory.used",
                                           "--format=csv,noheader,nounits"], capture_output=True, text=True,
                                          timeout=5).stdout.splitlines()[0]  # fmt: skip
                    util, mem = (float(v) for v in line.split(","))
                    self.gpu.append(util)
                    self.mem.append(mem)
                except (subprocess.SubprocessError, ValueError, IndexError):
                    pass

    def summary(self) -> dict:
        def mean(xs):
            return round(sum(xs) / len(xs), 1) if xs else None

        return {"gpu_util_mean": mean(self.gpu), "gpu_util_max": max(self.gpu, default=None),
                "gpu_mem_max_mib": max(self.mem, default=None), "cpu_util_mean": mean(self.cpu)}  # fmt: skip


def machine() -> dict:
    import torch

    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "cuda": torch.cuda.is_available()}  # fmt: skip
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    try:
        import ray

        info["ray"] = ray.__version__
    except ImportError:
        info["ray"] = None
    return info


def _child(name: str, args, work: Path, log) -> dict:
    result_path = work / f"{name}.result.json"
    result_path.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--run-step", name, "--size", args.size, "--work", str(work),
           "--result", str(result_path)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0"}  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        proc.wait(timeout=args.limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()
        partial = json.loads(result_path.read_text()).get("result", {}) if result_path.exists() else {}
        return {"status": "timeout", "error": f"stopped after {args.limit:.0f} s", "result": partial}
    if result_path.exists():
        return json.loads(result_path.read_text())
    return {"status": "error", "error": f"the step's process ended with status {proc.returncode} and no result"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", help="directory for gpu_check.json and gpu_check.log")
    parser.add_argument("--size", choices=SIZES, default="full")
    parser.add_argument("--budget", type=float, default=540, help="seconds for all steps together")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, of {','.join(STEPS)}")
    parser.add_argument("--work", help="scratch directory (default OUT/work, removed at the end)")
    parser.add_argument("--limit", action="append", default=[], metavar="STEP=SECONDS", dest="step_limits",
                        help="a step's time limit for this call (e.g. demo=420); repeatable")  # fmt: skip
    parser.add_argument("--run-step", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_step:
        return run_step(args.run_step, args.size, Path(args.work), Path(args.result))
    if not args.out:
        parser.error("OUT directory is required")
    size = SIZES[args.size]  # the arguments checked before anything is written
    try:
        limits = {**size.limits, **{k: float(v) for k, v in (item.split("=", 1) for item in args.step_limits)}}
    except ValueError:
        parser.error(f"--limit wants STEP=SECONDS, got {args.step_limits}")
    wanted = [w for w in args.steps.split(",") if w]
    unknown = (set(wanted) | set(limits)) - set(STEPS)
    if unknown:
        parser.error(f"unknown steps {sorted(unknown)} in --steps or --limit; the steps are {','.join(STEPS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else out / "work"
    work.mkdir(parents=True, exist_ok=True)
    report = {"size": args.size, "machine": machine(), "size_config": size.__dict__, "steps": {}}
    deadline = time.monotonic() + args.budget
    with open(out / "gpu_check.log", "w") as log:
        for name in wanted + [s for s in STEPS if s not in wanted]:  # in the order asked for
            left = deadline - time.monotonic()
            if name not in wanted or left < 15:
                why = "not asked for" if name not in wanted else "no time left in the budget"
                report["steps"][name] = {"status": "skipped", "error": why}
                continue
            args.limit = min(limits[name], left)
            print(f"== {name} (at most {args.limit:.0f} s)", flush=True)
            log.write(f"\n\n===== {name}\n")
            log.flush()
            sampler = Sampler()
            sampler.start()
            start = time.perf_counter()
            entry = _child(name, args, work, log)
            sampler.stop.set()
            sampler.join()
            entry.update(seconds=round(time.perf_counter() - start, 1), limit_s=args.limit, **sampler.summary())
            report["steps"][name] = entry
            print(f"   {entry['status']} in {entry['seconds']} s {entry.get('error', '')}", flush=True)
            (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    print(f"results: {out / 'gpu_check.json'}, log: {out / 'gpu_check.log'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
