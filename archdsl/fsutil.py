"""File utilities shared by every stage (a leaf module: it imports nothing of archdsl).

- :func:`atomic_write`: write through a temporary file and a rename (never a partial file); an existing
  destination that is not a regular file (a device, a FIFO, a socket) is refused before anything is written:
  replacing ``/dev/null`` with a regular file, as root, breaks the machine.
- :func:`read_regular`: read at most ``max_bytes`` of a *regular* file without ever blocking: a FIFO, device
  or socket put where a file is expected would otherwise hang the reader (issue 20).
- :func:`output_problem`: why a path cannot be an output file (for checks before any work is done).
"""
from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

__all__ = ["atomic_write", "read_regular", "open_regular", "output_problem", "file_kind", "NotRegularFile"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


class NotRegularFile(OSError):
    """The path exists but is a FIFO, device, socket, directory or (when not followed) a symbolic link."""

    def __init__(self, path: str | Path, kind: str) -> None:
        super().__init__(errno.EINVAL, f"it is {kind}, not a regular file", str(path))
        self.kind = kind


def file_kind(mode: int) -> str:
    """``mode`` (an ``st_mode``) in words: 'a regular file', 'a FIFO', 'a character device', ..."""
    for test, name in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str | Path, *, follow: bool = True) -> int:
    """A read-only descriptor of the regular file ``path``; never blocks.

    Opened with ``O_NONBLOCK`` (opening a FIFO for reading would otherwise wait for a writer forever) and,
    unless ``follow``, ``O_NOFOLLOW``; then ``fstat`` decides: anything but a regular file is closed again and
    :class:`NotRegularFile` raised. The descriptor is switched back to blocking reads (a regular file never
    blocks anyway). Other failures raise the usual :class:`OSError` (``FileNotFoundError``, ...).
    """
    flags = os.O_RDONLY | _NONBLOCK | (0 if follow else _NOFOLLOW) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP and not follow:   # O_NOFOLLOW on a symbolic link
            raise NotRegularFile(path, "a symbolic link") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(path, file_kind(st.st_mode))
        if _NONBLOCK:
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: str | Path, max_bytes: int, *, follow: bool = True) -> bytes:
    """At most ``max_bytes + 1`` bytes of the regular file ``path`` (one more than allowed tells the caller it
    is too long). Raises :class:`NotRegularFile` for anything else, :class:`OSError` when it cannot be read."""
    fd = open_regular(path, follow=follow)
    with os.fdopen(fd, "rb") as fh:
        return fh.read(max_bytes + 1)


def output_problem(path: "str | os.PathLike[str]") -> str | None:
    """Why ``path`` may not be written as an output file, or None: an existing path that is not a regular
    file (a directory, device, FIFO, socket; a symbolic link is judged by what it points to)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):   # dangling link, NUL in the name, ...: the write itself reports it
        return None
    if stat.S_ISREG(st.st_mode):
        return None
    return f"it is {file_kind(st.st_mode)}, not a regular file"


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write via a temporary file in the same directory and rename: never a partial file.

    An existing ``path`` that is not a regular file is refused (:class:`NotRegularFile`) before anything is
    written: the rename would replace a device or FIFO node with a regular file.
    """
    p = Path(path)
    problem = output_problem(p)
    if problem is not None:
        st = os.stat(p)
        raise NotRegularFile(p, file_kind(st.st_mode))
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + p.name + ".", dir=str(p.parent))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        # mkstemp creates 0600 files; give the result the mode a plain open() would (0666 minus umask)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
