"""Reading data files that may be malformed: the error every loader raises for
one, an open that refuses anything but a regular file (never blocking on a
FIFO or a device), and a read that allocates only what the file really holds.
"""
from __future__ import annotations

import os
import stat
from typing import BinaryIO, Optional

_CHUNK_BYTES = 16 << 20


class DataFileError(ValueError):
    """A data file on disk is malformed or unreadable: ``DataFileError(path,
    problem)`` says "path: problem". A single argument is taken as the whole
    message, as pickle and DataLoader workers re-create an exception from it."""

    def __init__(self, path: str, problem: Optional[str] = None):
        super().__init__(path if problem is None else f"{path}: {problem}")


def _kind(mode: int) -> str:
    kinds = [(stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device")]
    return next((name for is_kind, name in kinds if is_kind(mode)), "not a regular file")


def open_regular_file(path: str, max_bytes: Optional[int] = None) -> BinaryIO:
    """``path`` opened for binary reading once it is known to be a regular file
    of at most ``max_bytes`` bytes. O_NONBLOCK makes opening a FIFO return at
    once (instead of waiting for a writer) so that fstat can refuse it."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise DataFileError(path, f"cannot open it ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DataFileError(path, f"expected a regular file, found {_kind(info.st_mode)}")
        if max_bytes is not None and info.st_size > max_bytes:
            raise DataFileError(path, f"{info.st_size} bytes, more than the {max_bytes} "
                                      "such a file can hold")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_at_most(stream: BinaryIO, limit: int) -> bytes:
    """Up to ``limit`` bytes of ``stream``, fewer at its end. Read in chunks so
    that a header claiming a huge size allocates only what is really there."""
    chunks, remaining = [], limit
    while remaining > 0:
        chunk = stream.read(min(remaining, _CHUNK_BYTES))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_regular_file(path: str, max_bytes: int) -> bytes:
    """The whole of regular file ``path``, refused if larger than ``max_bytes``.
    The read asks for the size fstat gave (plus one byte to notice growth), so
    it allocates no more than the file holds."""
    with open_regular_file(path, max_bytes) as f:
        size = os.fstat(f.fileno()).st_size
        raw = f.read(size + 1)
    if len(raw) != size:
        raise DataFileError(path, f"changed size while being read ({size} bytes, then {len(raw)})")
    return raw
