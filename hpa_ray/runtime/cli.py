"""One CLI shape for every stage: the same flag for the same idea, the same error handling.

    --images DIR     input images, {ID}_{red,green,blue,yellow}.png|tif|jpg    segment, predict, report
    --labels CSV     ID,Label                                                   segment, folds, report
    --cells DIR      segment's OUT/cells                                        train, tune
    --folds CSV      image_id,fold                                              train, tune, report
    --run-dir DIR    a training run (RUN/fold-K/…), read by a later stage       predict, report
    --out PATH       what the stage writes: a directory (segment, train, tune, synth, report,
                     demo) or a file (folds, predict, evaluate)
    --config YAML    the stage's config (conf/STAGE.yaml); repeated, each file overlays the ones
                     before (a file may also name its own `base:`); then KEY=VALUE overrides
    --verbose        the frameworks' own output on the console instead of the log file

The spellings before 2026-11-28 (`--input-dir`, `--output-dir`, `--output`, predict's
`--models`, train's and tune's `--run-dir` for what they write) still work for one release,
with a warning. Every stage exits 2 on unusable inputs or config, with one `error:` line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from hpa_ray.core.errors import HpaRayError
from hpa_ray.core.schema import IMAGE_FILES

HELP = {
    "--images": f"directory of {IMAGE_FILES} (local, s3://… or gs://…)",
    "--labels": "CSV with ID,Label",
    "--cells": "cells Parquet directory (segment's OUT/cells)",
    "--folds": "folds CSV (image_id,fold)",
    "--run-dir": "a training run directory (RUN/fold-K/best/model.pt)",
}


def output_problem(path: str, kind: str) -> str | None:
    """What is wrong with a local output `path` for a `kind` ("dir" or "file") output before
    anything runs (a stage would otherwise fail at its first write, or after its work), or None.
    URIs are not checked here (a lookup in object storage)."""
    from hpa_ray.core import storage

    if storage.is_uri(path):
        return None
    p = Path(path)
    if kind == "dir" and p.exists() and not p.is_dir():
        return "is a file; it takes a directory"
    if kind == "file" and p.is_dir():
        return "is a directory; it takes a file's path"
    above = next((q for q in p.parents if q.exists()), None)
    if above is not None and not above.is_dir():
        return f"cannot be made: {above} is a file"
    return None


class _Deprecated(argparse.Action):
    """An old spelling: stores into the new flag's dest and says which flag replaces it."""

    def __init__(self, option_strings, dest, new: str, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"warning: {option_string} is deprecated, use {self.new} (the old spelling goes in the next release)",
              file=sys.stderr)  # fmt: skip
        setattr(namespace, self.dest, values)


class StageParser(argparse.ArgumentParser):
    """argparse with the stages' shared flags; `required` holds for a flag given by its old spelling."""

    def __init__(self, module: str, doc: str | None, epilog: str | None = None):
        super().__init__(prog=f"python -m {module}", description=(doc or "").splitlines()[0], epilog=epilog)
        self._required: list[tuple[str, str]] = []
        self._outputs: list[tuple[str, str, str]] = []  # (flag, dest, "dir" or "file")

    def flag(self, name: str, *, required: bool = False, old: tuple[str, ...] = (), help: str | None = None,
             output: str | None = None, **kw):  # fmt: skip
        """--name (help from HELP unless given); `old`: deprecated spellings of the same flag;
        `output`: "dir" or "file", what the stage writes there (checked by `parse`)."""
        dest = name.lstrip("-").replace("-", "_")
        self.add_argument(name, dest=dest, help=help or HELP[name], **kw)
        for spelling in old:
            self.add_argument(spelling, dest=dest, action=_Deprecated, new=name, help=argparse.SUPPRESS, **kw)
        if required:
            self._required.append((name, dest))
        if output:
            self._outputs.append((name, dest, output))

    def out(self, kind: str, help: str, *, old: tuple[str, ...] = (), required: bool = True) -> None:
        """--out, every stage's one output flag: `kind` "dir" or "file", checked by `parse`."""
        self.flag("--out", required=required, output=kind, old=old, help=help)

    def config(self, conf: str, example: str) -> None:
        """--config YAML, KEY=VALUE overrides and --verbose."""
        from hpa_ray.runtime import console

        self.add_argument("--config", action="append",
                          help=f"YAML config ({conf}); given again, each file overrides the ones before; a file "
                          "may also name the file it overrides (base: PATH)")  # fmt: skip
        self.add_argument("overrides", nargs="*", help=f"KEY=VALUE config overrides, e.g. {example}")
        console.add_verbose_flag(self)

    def parse(self, argv: list[str] | None) -> argparse.Namespace:
        args = self.parse_args(argv)
        missing = [name for name, dest in self._required if getattr(args, dest) is None]
        if missing:
            self.error(f"the following arguments are required: {', '.join(missing)}")
        for name, dest, kind in self._outputs:
            path = getattr(args, dest)
            if path and (problem := output_problem(path, kind)):
                self.error(f"{name} {path} {problem}")
        return args


def guarded(body: Callable[[], int], also: tuple[type[Exception], ...] = ()) -> int:
    """Run a stage's body; an HpaRayError (unusable input), or one of `also`, is one `error:` line
    on stderr and exit status 2."""
    try:
        return body()
    except (HpaRayError, *also) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return HpaRayError.EXIT_CODE
