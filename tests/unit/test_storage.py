"""Local and object-storage paths (hpa_ray.core.storage), on local disk and on s3:// through a local S3.

The S3 server is moto's (a real HTTP S3 API on 127.0.0.1; tests/conftest.py's s3_env); pyarrow
reaches it through AWS_ENDPOINT_URL, the same way it reaches AWS.
"""

from __future__ import annotations

import os

import pyarrow.fs as pafs
import pytest

from hpa_ray.core import storage
from tests.conftest import BUCKET


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "root")
    request.getfixturevalue("s3_env")
    return f"s3://{BUCKET}/{request.node.name.replace('[', '-').rstrip(']')}"


def test_paths_and_uris():
    assert storage.is_uri("s3://b/k") and storage.is_uri("gs://b/k") and not storage.is_uri("/tmp/x")
    assert not storage.is_uri("file:///tmp/x") and storage.resolve("file:///tmp/x")[1] == "/tmp/x"
    assert storage.join("s3://b/a/", "c", "d.csv") == "s3://b/a/c/d.csv"
    assert storage.parent("s3://b/a/c.csv") == "s3://b/a" and storage.name("s3://b/a/c.csv") == "c.csv"
    assert storage.absolute("s3://b/a") == "s3://b/a" and os.path.isabs(storage.absolute("rel/x"))
    fs, inner = storage.resolve("relative/file.txt")
    assert isinstance(fs, pafs.LocalFileSystem) and inner == os.path.abspath("relative/file.txt")


def test_gs_uris_resolve_to_the_gcs_filesystem():
    fs, inner = storage.resolve("gs://some-bucket/runs/b2/fold-0")
    assert type(fs).__name__ == "GcsFileSystem" and inner == "some-bucket/runs/b2/fold-0"


def test_files_round_trip(root, tmp_path):
    assert not storage.exists(root) and storage.list_files(root) == []
    storage.write_text(storage.join(root, "a.txt"), "alpha")
    storage.write_bytes(storage.join(root, "sub", "b.bin"), b"\x00\x01")
    storage.write_text(storage.join(root, "sub", "deep", "c.txt"), "gamma")
    assert storage.read_text(storage.join(root, "a.txt")) == "alpha"
    assert storage.read_bytes(storage.join(root, "sub", "b.bin")) == b"\x00\x01"
    assert storage.is_file(storage.join(root, "a.txt")) and storage.is_dir(storage.join(root, "sub"))
    assert [e.relative for e in storage.list_files(root)] == ["a.txt"]  # not recursive: files only
    found = storage.list_files(root, "sub/*", recursive=True)
    assert [e.relative for e in found] == ["sub/b.bin", "sub/deep/c.txt"]  # fnmatch's * crosses "/"
    assert found[0].path == storage.join(root, "sub", "b.bin") and found[0].size == 2 and found[0].mtime > 0
    storage.append_text(storage.join(root, "log.jsonl"), "1\n")
    storage.append_text(storage.join(root, "log.jsonl"), "2\n")
    assert storage.read_text(storage.join(root, "log.jsonl")) == "1\n2\n"
    storage.copy_file(storage.join(root, "a.txt"), storage.join(root, "copy", "a.txt"))
    assert storage.read_text(storage.join(root, "copy", "a.txt")) == "alpha"
    (tmp_path / "up" / "x").mkdir(parents=True)
    (tmp_path / "up" / "x" / "f.txt").write_text("up")
    storage.upload_dir(tmp_path / "up", storage.join(root, "uploaded"))
    assert storage.read_text(storage.join(root, "uploaded", "x", "f.txt")) == "up"
    with storage.open_input(storage.join(root, "a.txt")) as f:
        assert f.read() == b"alpha"
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(storage.join(root, "missing.txt"))
    storage.delete_file(storage.join(root, "a.txt"))
    storage.delete_file(storage.join(root, "a.txt"))  # gone already: no error
    storage.delete_dir(storage.join(root, "sub"))
    assert not storage.exists(storage.join(root, "a.txt")) and not storage.exists(storage.join(root, "sub", "b.bin"))
    assert not any(storage.list_files(root, "*.tmp", recursive=True)), "no temp files left behind"
