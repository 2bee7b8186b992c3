"""`python -m hpa_ray`: list the stages; `python -m hpa_ray demo`: run the demo."""

from __future__ import annotations

import sys

STAGES = {
    "synth": "generate synthetic HPA-like images with per-cell truth",
    "segment": "segment images into cells (Ray Data) → cells Parquet + images manifest",
    "folds": "image-level folds by iterative stratification → folds.csv + balance table",
    "train": "train a classifier per fold on Ray Train; all folds in parallel via Ray Tune",
    "tune": "hyperparameter search on Ray Tune (Optuna + ASHA) through the same training",
    "predict": "segment and classify test images with a run's fold models → submission.csv",
    "submission": "check a submission file (python -m hpa_ray.predict.submission validate FILE)",
    "evaluate": "score a submission against per-cell truth: the task's mAP",
    "report": "figures of labels, cells, segmentation, folds, training and scores + index.html",
    "demo": "run the whole pipeline on generated data on a local Ray (python -m hpa_ray demo)",
    "cluster": "a local autoscaling cluster from cluster.yaml (up, down, status, timeline); presets' resource check",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "demo":
        from hpa_ray.demo import main as demo_main

        return demo_main(argv[1:])
    if argv and argv[0] not in ("-h", "--help"):
        print(f"unknown command {argv[0]!r}; stages: {', '.join(STAGES)}", file=sys.stderr)
        return 2
    print("hpa_ray stages (each: python -m hpa_ray.<stage> --help):")
    for name, text in STAGES.items():
        print(f"  {name:8s} {text}")
    return 0


if __name__ == "__main__":
    from hpa_ray.runtime import session

    sys.exit(session.exit_code_after_shutdown(main()))
