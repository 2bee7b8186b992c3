"""Paths that are local or in object storage (`s3://…`, `gs://…`), through pyarrow's filesystems.

Every stage reads and writes through these helpers, so a path argument may be a local path or
a URI: on a cluster, nodes share data through a bucket instead of one node's disk. Paths stay
plain strings (a URI, or a local path as given) so that they pickle into Ray tasks unchanged.
Credentials and endpoints come from the usual environment (AWS_* / AWS_ENDPOINT_URL,
GOOGLE_APPLICATION_CREDENTIALS), as for Ray Data and Ray Train, which use the same filesystems.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import io
import os
import posixpath
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from hpa_ray.core.errors import HpaRayError

StrPath = str | os.PathLike


def is_uri(path: StrPath) -> bool:
    """True for `scheme://…` (object storage, hdfs, …); `file://` counts as local."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


@functools.lru_cache(maxsize=16)
def _filesystem(scheme_and_bucket: str) -> pafs.FileSystem:
    # One filesystem per bucket and process: from_uri may look up the bucket's region.
    return pafs.FileSystem.from_uri(scheme_and_bucket)[0]


def resolve(path: StrPath) -> tuple[pafs.FileSystem, str]:
    """path → (pyarrow filesystem, the path within it)."""
    text = str(path)
    if not is_uri(text):
        return pafs.LocalFileSystem(), str(Path(text.removeprefix("file://")).absolute())
    scheme, rest = text.split("://", 1)
    bucket = rest.split("/", 1)[0]
    return _filesystem(f"{scheme}://{bucket}"), rest.rstrip("/")


def join(base: StrPath, *names: str) -> str:
    """`base/name/…` for a URI or a local path."""
    if is_uri(base):
        return posixpath.join(str(base).rstrip("/"), *names)
    return str(Path(base, *names))


def name(path: StrPath) -> str:
    return posixpath.basename(str(path).rstrip("/"))


def parent(path: StrPath) -> str:
    if is_uri(path):
        return posixpath.dirname(str(path).rstrip("/"))
    return str(Path(path).parent)


def absolute(path: StrPath) -> str:
    """A URI as is; a local path made absolute (what a Ray task on another process needs)."""
    return str(path) if is_uri(path) else str(Path(path).resolve())


def _type(path: StrPath) -> pafs.FileType:
    fs, inner = resolve(path)
    return fs.get_file_info(inner).type


def exists(path: StrPath) -> bool:
    return _type(path) != pafs.FileType.NotFound


def is_file(path: StrPath) -> bool:
    return _type(path) == pafs.FileType.File


def is_dir(path: StrPath) -> bool:
    """A directory, or a prefix with objects under it in object storage."""
    return _type(path) == pafs.FileType.Directory


def makedirs(path: StrPath) -> None:
    """Create a local directory (and parents); object storage needs none."""
    if not is_uri(path):
        Path(path).mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class Entry:
    path: str  # as join(directory, relative) gives it
    relative: str  # below the listed directory, "/"-separated
    size: int  # bytes
    mtime: float  # seconds since the epoch (object storage: 1 s resolution)


def list_files(directory: StrPath, pattern: str = "*", recursive: bool = False) -> list[Entry]:
    """Files under `directory` whose relative path matches the glob `pattern`, sorted by it.
    A directory that does not exist lists as empty."""
    fs, inner = resolve(directory)
    try:
        infos = fs.get_file_info(pafs.FileSelector(inner, recursive=recursive))
    except FileNotFoundError:
        return []
    out = []
    for info in infos:
        relative = info.path[len(inner) :].lstrip("/")
        if info.type == pafs.FileType.File and fnmatch.fnmatchcase(relative, pattern):
            mtime = info.mtime.timestamp() if info.mtime is not None else 0.0
            out.append(Entry(join(directory, *relative.split("/")), relative, info.size or 0, mtime))
    return sorted(out, key=lambda e: e.relative)


def read_bytes(path: StrPath) -> bytes:
    """The whole file; FileNotFoundError when it is not there."""
    fs, inner = resolve(path)
    with fs.open_input_stream(inner) as f:
        return f.read()


def read_text(path: StrPath) -> str:
    return read_bytes(path).decode("utf-8")


def write_bytes(path: StrPath, data: bytes) -> str:
    """Write the file whole or not at all: a local file through a temp file and a rename; an
    object-store upload is atomic by itself. Parent directories are created."""
    fs, inner = resolve(path)
    if is_uri(path):
        with fs.open_output_stream(inner) as f:
            f.write(data)
        return str(path)
    target = Path(inner)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")  # unique per writer
    tmp.write_bytes(data)
    tmp.replace(target)
    return str(path)


def write_text(path: StrPath, text: str) -> str:
    return write_bytes(path, text.encode("utf-8"))


def append_text(path: StrPath, text: str) -> None:
    """Append to a small file (object storage has no append: the file is rewritten)."""
    if not is_uri(path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(text)
        return
    old = read_text(path) if exists(path) else ""
    write_text(path, old + text)


@contextlib.contextmanager
def open_input(path: StrPath) -> Iterator[io.BufferedIOBase]:
    """A readable binary file object (for pandas, csv and torch readers)."""
    fs, inner = resolve(path)
    with fs.open_input_file(inner) as f:
        yield f


class CsvError(HpaRayError, ValueError):
    """A file that is not UTF-8 CSV: another encoding, a row with more fields than the header, a
    quote never closed."""


def read_csv(path: StrPath, **kwargs) -> pd.DataFrame:
    """pandas.read_csv of a local or object-storage file; FileNotFoundError when it is not there,
    CsvError (naming the file, and the line where pandas could tell) when it is not UTF-8 CSV."""
    try:
        with open_input(path) as f:
            return pd.read_csv(f, **kwargs)
    except UnicodeDecodeError:
        raise CsvError(f"{path} is not UTF-8 text{encoding_hint(path)}; save it as a UTF-8 CSV") from None
    except pd.errors.ParserError as exc:
        raise CsvError(f"{path} {csv_problem(exc)}") from None


def csv_problem(exc: pd.errors.ParserError) -> str:
    """pandas' reason a CSV cannot be parsed, in a sentence that follows a file's name."""
    reason = str(exc).strip().removeprefix("Error tokenizing data. C error: ")
    return f"cannot be read as a CSV: {reason}"


def encoding_hint(path: StrPath) -> str:
    """What a file that is not UTF-8 text is, when its first bytes tell: ' (it is …)', else ''."""
    with open_input(path) as f:
        start = f.read(4)
    if start[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return " (it is UTF-16: a byte-order mark starts it)"
    if start == b"PAR1":  # Parquet's magic number: a cells or truth file given where a CSV goes
        return " (it is a Parquet file)"
    return ""


def read_parquet(path: StrPath, **kwargs) -> pd.DataFrame:
    """One Parquet file as a DataFrame; FileNotFoundError when it is not there."""
    return pd.read_parquet(io.BytesIO(read_bytes(path)), **kwargs)


def write_parquet(path: StrPath, table: pa.Table) -> str:
    """Write a zstd Parquet file whole or not at all (see write_bytes)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return write_bytes(path, sink.getvalue().to_pybytes())


def parquet_dataset(path: StrPath):
    """A pyarrow Dataset over a Parquet file, or over the *.parquet files under a directory as
    Ray Data reads it (not an interrupted write's `.tmp` beside them); nothing is read yet."""
    import pyarrow.dataset as pads

    fs, inner = resolve(path)
    if is_dir(path):
        inner = [resolve(entry.path)[1] for entry in list_files(path, "*.parquet", recursive=True)]
    return pads.dataset(inner, format="parquet", filesystem=fs)


def delete_file(path: StrPath) -> None:
    """Delete a file; nothing when it is not there."""
    fs, inner = resolve(path)
    with contextlib.suppress(FileNotFoundError):
        fs.delete_file(inner)


def delete_dir(path: StrPath) -> None:
    """Delete a directory and everything under it; nothing when it is not there."""
    fs, inner = resolve(path)
    with contextlib.suppress(FileNotFoundError):
        fs.delete_dir(inner)


def move_file(src: StrPath, dst: StrPath) -> str:
    """Rename src to dst on the same filesystem (atomic on a local disk; copy + delete on object storage)."""
    fs, inner_src = resolve(src)
    _, inner_dst = resolve(dst)
    fs.move(inner_src, inner_dst)
    return str(dst)


def copy_file(src: StrPath, dst: StrPath) -> str:
    return write_bytes(dst, read_bytes(src))


def upload_dir(local_dir: StrPath, dst: StrPath) -> None:
    """Copy a local directory's files to dst (any filesystem), replacing files of the same name."""
    fs, inner = resolve(dst)
    if not is_uri(dst):
        Path(inner).mkdir(parents=True, exist_ok=True)
    pafs.copy_files(str(Path(local_dir).absolute()), inner, source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=fs)  # fmt: skip
