"""Root-side file operations that never follow a name a sandbox could have planted.

The spawner runs as root and prepares directories that sandboxes later use. A sandbox can
write its home and its server-socket directory, so any name in them may be a symlink, a
hard link or a socket put there to make root write, chown or chmod a host file. The rules
every function here keeps:

- a directory is opened once, with ``O_DIRECTORY | O_NOFOLLOW``, and every later step is
  relative to that descriptor (``dir_fd=``), so a renamed or swapped path is never re-read;
- files are created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (an existing name of any kind,
  a dangling symlink included, makes the call fail instead of writing through it);
- owner and mode are set on the open descriptor (``fchown``, ``fchmod``), never on a path;
- files root rewrites (the access token) live only in directories owned by root and
  writable by nobody else, which ``root_dir`` checks before each write;
- removing a tree uses ``shutil.rmtree``, which on Linux works by descriptors and does not
  follow symlinks (``shutil.rmtree.avoids_symlink_attacks``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from lab.errors import ConfigError

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(ConfigError):
    reason = "unsafe-path"


@contextlib.contextmanager
def opened_dir(path: Path | str, *, dir_fd: int | None = None) -> Iterator[int]:
    """A descriptor of directory ``path`` (never through a symlink in its last component)."""
    try:
        fd = os.open(path, DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePath(
                f"{path} is not a plain directory (a symlink or a file is in its place); remove it "
                "and start the server again. / 该路径不是普通目录，请删除后重新启动服务器。",
                reason="unsafe-path",
            ) from None
        raise
    try:
        yield fd
    finally:
        os.close(fd)


def _require_root_owned(fd: int, path: Path | str) -> None:
    info = os.fstat(fd)
    if info.st_uid != 0 or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafePath(
            f"{path} must be owned by root and writable by nobody else (owner uid {info.st_uid}, "
            f"mode {stat.S_IMODE(info.st_mode):o}); the spawner does not write there. / "
            "该目录必须归 root 所有且他人不可写。",
            reason="unsafe-path",
        )


def root_dir(path: Path) -> Path:
    """``path`` (and missing parents) as a directory owned by root that only root writes."""
    path.mkdir(parents=True, exist_ok=True)
    with opened_dir(path) as fd:
        _require_root_owned(fd, path)
    return path


def _remove(parent_fd: int, name: str) -> None:
    """Remove ``name`` in ``parent_fd`` whatever it is (file, symlink, socket, tree)."""
    try:
        info = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode):
        shutil.rmtree(name, dir_fd=parent_fd)
    else:
        os.unlink(name, dir_fd=parent_fd)


def fresh_dir(parent: Path, name: str, *, uid: int, gid: int, mode: int) -> Path:
    """``parent/name`` emptied and recreated, owned by ``uid:gid`` with ``mode``.

    ``parent`` must be root's own directory (nothing else can race the name in it).
    """
    with opened_dir(parent) as parent_fd:
        _require_root_owned(parent_fd, parent)
        _remove(parent_fd, name)
        os.mkdir(name, 0o700, dir_fd=parent_fd)
        with opened_dir(name, dir_fd=parent_fd) as fd:
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
    return parent / name


def owned_dir(parent: Path, name: str, *, uid: int, gid: int, mode: int) -> Path:
    """``parent/name`` kept (with its contents) or made, owned by ``uid:gid`` with ``mode``."""
    with opened_dir(parent) as parent_fd:
        _require_root_owned(parent_fd, parent)
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=parent_fd)
        with opened_dir(name, dir_fd=parent_fd) as fd:
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
    return parent / name


def write_atomic(directory: Path, name: str, data: bytes, *, uid: int, gid: int, mode: int) -> None:
    """Replace ``directory/name`` with ``data`` in one rename, in a directory only root writes."""
    with opened_dir(directory) as dir_fd:
        _require_root_owned(dir_fd, directory)
        tmp = f".{name}.{secrets.token_hex(8)}"
        fd = os.open(tmp, NEW_FILE_FLAGS, 0o600, dir_fd=dir_fd)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fchown(fd, uid, gid)
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise


def copy_new(source: Path, directory: Path, name: str, *, uid: int, gid: int, mode: int) -> bool:
    """Copy ``source`` to a NEW file ``directory/name``; False if anything has that name.

    ``directory`` may be writable by the sandbox (a home): the name is created with
    ``O_EXCL | O_NOFOLLOW`` relative to the directory's descriptor, so a symlink (dangling or
    not), a hard link or a file already there is left alone and nothing outside is written.
    """
    data = source.read_bytes()
    with opened_dir(directory) as dir_fd:
        try:
            fd = os.open(name, NEW_FILE_FLAGS, 0o600, dir_fd=dir_fd)
        except FileExistsError:
            return False
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
    return True


def lock_dir(parent: Path, name: str, *, gid: int) -> None:
    """Make ``parent/name`` root's (``root:gid``, mode 0550): its entries can no longer change."""
    with opened_dir(parent) as parent_fd:
        _require_root_owned(parent_fd, parent)
        with opened_dir(name, dir_fd=parent_fd) as fd:
            os.fchown(fd, 0, gid)
            os.fchmod(fd, 0o550)


def is_socket(directory: Path, name: str) -> bool:
    """True if ``directory/name`` is a unix socket itself (not a symlink to one)."""
    try:
        info = os.stat(directory / name, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return stat.S_ISSOCK(info.st_mode)
