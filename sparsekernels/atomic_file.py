"""``atomic_write``: replace a file so that a crash leaves either the old
file or the new one, never a torn one. Checkpoints, saved models, the
training log and benchmark results all write through it.

The temporary file sits next to the target (same file system, so the rename
is atomic) and is named ``.<name>.<host>.<pid>.<random>.tmp``. A process
killed mid-write cannot remove its own; the next write to the same path
removes those whose writer is gone: same host, pid no longer alive. Files of
live processes (other DDP ranks, a concurrent writer) and of other hosts
sharing the folder are left alone.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import socket
import stat
from pathlib import Path
from typing import IO, Iterator

_TEMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Yield a temporary file in ``path``'s folder; on success fsync it, give
    it the final mode, ``os.replace`` it over ``path`` and fsync the folder
    entry; on an error remove it and re-raise."""
    if mode not in ("w", "wb"):
        raise ValueError(f"mode: expected 'w' or 'wb', got {mode!r}")
    path = Path(path)
    if path.is_dir():  # os.replace would fail only after the whole write
        raise IsADirectoryError(errno.EISDIR, "is a folder, expected a file path", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _keep_mode_of_existing(path, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _host_tag() -> str:
    # Dots separate the name's fields; a host name is reduced to safe characters.
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{_host_tag()}."


def _create_temp(path: Path) -> tuple[int, Path]:
    """Open a new temp file with mode 0o666 so that the umask (and a default
    ACL) shape it exactly as a plain ``open()`` would shape the final file."""
    prefix = _temp_prefix(path)
    while True:
        tmp = path.with_name(f"{prefix}{os.getpid()}.{secrets.token_hex(4)}{_TEMP_SUFFIX}")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:  # 32 random bits collided: draw again
            continue


def _keep_mode_of_existing(path: Path, tmp: Path) -> None:
    try:
        os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
    except FileNotFoundError:
        pass  # a new file keeps the mode it was created with


def remove_stale_temp_files(path: str | os.PathLike) -> list[Path]:
    """Remove the temp files of earlier writes to ``path`` whose process is
    gone (killed mid-write); returns what was removed."""
    path = Path(path)
    prefix = _temp_prefix(path)
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.[0-9a-f]+" + re.escape(_TEMP_SUFFIX) + "$")
    removed = []
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return removed
    for name in names:
        match = pattern.match(name)
        if match and not _pid_alive(int(match.group(1))):
            (path.parent / name).unlink(missing_ok=True)
            removed.append(path.parent / name)
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # ours: possibly another thread's write in progress
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    except OverflowError:
        return False  # no such pid can exist
    return True
