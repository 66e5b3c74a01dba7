"""Where imported registers live: a narrow interface over the restricted ``raw`` bucket.

``RawStore`` is all the importer needs: put a file, copy an object, put and read small
JSON or text objects, list keys. ``MinioStore`` is the real one (MinIO's ``raw`` bucket,
root credentials, bureau services only); ``DirStore`` keeps the same keys as files under a
directory, for unit tests and the benchmark. Every put is all-or-nothing for a reader: one
S3 PUT (or a completed multipart upload) in MinIO, a rename in a directory.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Protocol

from minio import Minio
from minio.commonconfig import CopySource
from minio.error import S3Error


class RawStore(Protocol):
    def put_file(self, key: str, path: Path) -> None: ...
    def copy(self, source: str, target: str) -> None: ...
    def put_bytes(self, key: str, data: bytes) -> None: ...
    def get_bytes(self, key: str) -> bytes | None: ...
    def keys(self, prefix: str) -> list[str]: ...
    def names(self) -> list[str]: ...
    def remove(self, key: str) -> None: ...


def put_json(store: RawStore, key: str, value: dict[str, Any]) -> None:
    store.put_bytes(key, json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True).encode())


def get_json(store: RawStore, key: str) -> dict[str, Any] | None:
    data = store.get_bytes(key)
    return None if data is None else dict(json.loads(data))


class MinioStore:
    """The keys of one MinIO bucket."""

    def __init__(self, client: Minio, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def put_file(self, key: str, path: Path) -> None:
        self.client.fput_object(self.bucket, key, str(path))

    def copy(self, source: str, target: str) -> None:
        self.client.copy_object(self.bucket, target, CopySource(self.bucket, source))

    def put_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(self.bucket, key, io.BytesIO(data), len(data))

    def get_bytes(self, key: str) -> bytes | None:
        try:
            response = self.client.get_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchBucket"):
                return None
            raise
        try:
            return bytes(response.read())
        finally:
            response.close()
            response.release_conn()

    def keys(self, prefix: str) -> list[str]:
        items = self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
        return sorted(str(item.object_name) for item in items)

    def names(self) -> list[str]:
        items = self.client.list_objects(self.bucket, recursive=False)
        return sorted(str(i.object_name).rstrip("/") for i in items if str(i.object_name).endswith("/"))

    def remove(self, key: str) -> None:
        self.client.remove_object(self.bucket, key)


class DirStore:
    """The same keys as files below ``root`` (tests, benchmarks)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError("a key outside the store")
        return path

    def _replace(self, key: str, write: Any) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".put-")
        os.close(fd)
        try:
            write(tmp)
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def put_file(self, key: str, path: Path) -> None:
        self._replace(key, lambda tmp: shutil.copyfile(path, tmp))

    def copy(self, source: str, target: str) -> None:
        self.put_file(target, self._path(source))

    def put_bytes(self, key: str, data: bytes) -> None:
        self._replace(key, lambda tmp: Path(tmp).write_bytes(data))

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def keys(self, prefix: str) -> list[str]:
        if not self.root.is_dir():
            return []
        found = (p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())
        return sorted(k for k in found if k.startswith(prefix) and not Path(k).name.startswith(".put-"))

    def names(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []

    def remove(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
