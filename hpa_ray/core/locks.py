"""One run at a time per output: a lock file that names its owner (`owned_by_this_run`).

Two runs writing one output directory interleave their files (the resume logic of each sees
none of the other's parts yet). The lock is the file LOCK_NAME in the directory (or `FILE.lock`
beside an output file), holding the owner's host, PID, start time and command. A local disk
creates it atomically (O_EXCL). A lock left by a process that is gone (same host, PID not
running) is taken over with a warning. Object storage (`s3://`, `gs://`) has no atomic create
through pyarrow: there the lock is written, then read back, which catches a run that started
earlier but not two that start within the same second — the documented limit.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from hpa_ray.core import storage
from hpa_ray.core.errors import HpaRayError

LOCK_NAME = ".hpa_ray.lock"


class LockError(HpaRayError, RuntimeError):
    """Another run owns the output (exit status 2)."""


def _owner() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "command": " ".join(sys.argv)}  # fmt: skip


def _describe(owner: dict) -> str:
    return f"PID {owner.get('pid')} on {owner.get('host')}, started {owner.get('started')} ({owner.get('command')})"


def _gone(owner: dict) -> bool:
    """The owner ran on this host and its process no longer exists."""
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return False
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's process: alive
        return False
    return False


def _read(path: str) -> dict:
    try:
        return json.loads(storage.read_text(path))
    except (OSError, ValueError):
        return {}


def _create_local(path: str, owner: dict) -> bool:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(owner, f)
    return True


def _create(path: str, owner: dict) -> bool:
    if not storage.is_uri(path):
        return _create_local(path, owner)
    if storage.exists(path):
        return False
    storage.write_text(path, json.dumps(owner))
    return _read(path) == owner


def acquire(path: str, what: str) -> dict | None:
    """The lock at `path` for this process → its owner record; None when this process holds it
    already (a stage called inside another on the same output)."""
    owner = _owner()
    for _ in range(3):
        if _create(path, owner):
            return owner
        held = _read(path)
        if held.get("pid") == owner["pid"] and held.get("host") == owner["host"]:
            return None
        if held and not _gone(held):
            raise LockError(f"{what} is in use by another run: {_describe(held)}; wait for it, or remove "
                            f"{path} if that run is gone")  # fmt: skip
        print(f"warning: taking over {path}, left by a run that is gone ({_describe(held)})", file=sys.stderr)
        storage.delete_file(path)
    raise LockError(f"could not take the lock {path}")


def release(path: str, owner: dict | None) -> None:
    if owner is not None and _read(path) == owner:
        storage.delete_file(path)


@contextlib.contextmanager
def owned_by_this_run(output: str | Path, is_file: bool = False) -> Iterator[None]:
    """Hold the lock of an output directory (or, with is_file, of one output file) for the
    duration of the block; LockError at once when another live run holds it."""
    output = str(output)
    path = f"{output}.lock" if is_file else storage.join(output, LOCK_NAME)
    owner = acquire(path, output)
    try:
        yield
    finally:
        release(path, owner)
