"""The one rule for where archdsl keeps caches, and the check that makes a cache directory safe to read.

Every on-disk cache of archdsl (the parse cache ``ast``, the backend decision cache ``backends``) asks
:func:`cache_dir` for its directory and uses nothing else::

    from archdsl.cachedir import cache_dir
    d = cache_dir("backends")      # a Path, or None: then work without a disk cache
    if d is not None:
        ...read/write files under d...

The rule:

1. ``ARCHDSL_NO_CACHE`` set to anything but ``""``/``"0"``: no disk cache at all (``None``).
2. The base directory is ``$ARCHDSL_CACHE_DIR`` when set, else the platform's per-user cache directory
   for ``archdsl`` (``platformdirs.user_cache_dir``: ``$XDG_CACHE_HOME/archdsl`` or
   ``~/.cache/archdsl`` on Linux, ``~/Library/Caches/archdsl`` on macOS, ``%LOCALAPPDATA%`` on Windows).
3. Each cache gets its own sub-directory ``<base>/<kind>``, created with mode 0700.
4. That directory is used only if it is *private*: a real directory (not a symbolic link), owned by the
   current user, not writable by group or others, writable by us, and inside a base that nobody else can
   rename it out of (the base is not group/other-writable, or has the sticky bit like ``/tmp``).
   Otherwise :func:`cache_dir` returns ``None`` (never raises): a cache that another user could have
   written is never read, because reading it would trust their data.

Why so strict: a cache holds data that archdsl reads back instead of recomputing. A directory that
others can write lets them choose that data (issue 11: a planted parse-cache file ran code). The caches
are JSON decoded by strict readers, so the check is a second wall, not the only one.

A third wall (issue 20: a planted entry that decodes to a well-typed AST still changed the model): every
entry is authenticated. :func:`seal` prefixes a payload with an HMAC-SHA256 over the entry's name and
bytes, keyed by a random secret kept in the cache directory itself (``.secret``, 32 bytes, mode 0600, created
atomically: written to a private temporary file and hard-linked into place, so a reader never sees half a
key); :func:`unseal` returns the payload only when the MAC verifies. An entry written by anyone who cannot
read the secret, copied from another entry's name, or left by an older archdsl is a cache miss. Entries are
read with :func:`archdsl.fsutil.read_regular` (regular files only, never blocking on a FIFO).

On platforms without ``os.getuid`` (Windows) the ownership check is skipped; per-user cache
directories there are protected by their ACLs.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
import stat
import tempfile
from pathlib import Path

from .fsutil import NotRegularFile, open_regular

__all__ = ["cache_dir", "base_dir", "private_dir", "check_private_dir", "secret", "seal", "unseal",
           "CACHE_ENV", "NO_CACHE_ENV", "SECRET_NAME"]

CACHE_ENV = "ARCHDSL_CACHE_DIR"
NO_CACHE_ENV = "ARCHDSL_NO_CACHE"

_KIND = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def base_dir() -> Path | None:
    """The base cache directory (rule 1-2 above), not yet checked or created; None when caching is off."""
    if os.environ.get(NO_CACHE_ENV, "") not in ("", "0"):
        return None
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    try:
        import platformdirs
        return Path(platformdirs.user_cache_dir("archdsl", appauthor=False))
    except ImportError:  # pragma: no cover - platformdirs is a dependency; XDG by hand as a fallback
        xdg = os.environ.get("XDG_CACHE_HOME")
        return Path(xdg) / "archdsl" if xdg else Path.home() / ".cache" / "archdsl"


def cache_dir(kind: str) -> Path | None:
    """The private directory for the cache called ``kind`` (e.g. ``"ast"``, ``"backends"``), or None.

    Creates it (mode 0700) when missing. None means "do not use a disk cache": caching is turned off,
    the directory cannot be created, or it fails the privacy check (see the module docstring).
    Never raises for a bad directory.
    """
    if not _KIND.fullmatch(kind):
        raise ValueError(f"cache kind must be a short lower-case word, got {kind!r}")  # a programming error
    base = base_dir()
    if base is None:
        return None
    return private_dir(base / kind)


def private_dir(path: str | Path) -> Path | None:
    """``path`` created if missing (mode 0700) and returned if it passes :func:`check_private_dir`, else None."""
    p = Path(path)
    try:
        if not os.path.lexists(p):
            os.makedirs(p.parent, exist_ok=True)
            try:
                os.mkdir(p, 0o700)
            except FileExistsError:  # created concurrently: checked below like any existing directory
                pass
    except (OSError, ValueError):  # unwritable parent, NUL in the name, ...: no cache, no crash
        return None
    return p if check_private_dir(p) is None else None


def check_private_dir(path: str | Path) -> str | None:
    """Why ``path`` may not be used as a cache directory, or None when it may (rule 4 above)."""
    p = Path(path)
    try:
        st = os.lstat(p)
    except (OSError, ValueError) as e:
        return f"cannot inspect it: {getattr(e, 'strerror', None) or e}"
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a directory"
    getuid = getattr(os, "getuid", None)
    if getuid is not None and st.st_uid != getuid():
        return f"it is owned by uid {st.st_uid}, not by the current user (uid {getuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"it is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    if not os.access(p, os.W_OK | os.X_OK):
        return "it is not writable"
    try:
        pst = os.stat(p.parent if str(p.parent) else ".")
    except OSError as e:
        return f"cannot inspect its parent: {e.strerror or e}"
    if pst.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not pst.st_mode & stat.S_ISVTX:
        # others could rename our directory away and put theirs in its place
        return f"its parent is writable by group or others without the sticky bit (mode {stat.S_IMODE(pst.st_mode):o})"
    return None


# ---- authenticated entries ----------------------------------------------------------------------------
SECRET_NAME = ".secret"
_SECRET_BYTES = 32
_MAC_TAG = b"archdsl-mac-1 "
_MAC_HEAD = len(_MAC_TAG) + 64 + 1          # tag, 64 hex digits, newline


def _read_secret(p: Path) -> bytes | None:
    """The secret at ``p`` if it is a regular file of ours, mode 0600 or stricter, of the right size."""
    try:
        fd = open_regular(p, follow=False)
    except (NotRegularFile, OSError, ValueError):
        return None
    try:
        st = os.fstat(fd)
        getuid = getattr(os, "getuid", None)
        if getuid is not None and (st.st_uid != getuid() or st.st_mode & 0o077):
            return None   # another user's, or readable by others: not a secret
        data = os.read(fd, _SECRET_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data if len(data) == _SECRET_BYTES else None


def secret(directory: str | Path) -> bytes | None:
    """The MAC key of the cache ``directory``, created on first use; None when it cannot be had safely
    (then nothing there is trusted and nothing is written)."""
    d = Path(directory)   # read each time (microseconds): a secret replaced on disk is followed at once
    p = d / SECRET_NAME
    key = _read_secret(p)
    if key is None and not os.path.lexists(p):
        try:   # a private temporary file, then a hard link: the name appears complete or not at all
            fd, tmp = tempfile.mkstemp(prefix=".secret.", dir=str(d))
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(os.urandom(_SECRET_BYTES))
                try:
                    os.link(tmp, p)
                except FileExistsError:   # another process won the race: use its secret
                    pass
            finally:
                os.unlink(tmp)
        except (OSError, ValueError):
            return None
        key = _read_secret(p)
    return key


def _mac(key: bytes, name: str, payload: bytes) -> str:
    return hmac.new(key, name.encode("utf-8", "surrogateescape") + b"\0" + payload, hashlib.sha256).hexdigest()


def seal(directory: str | Path, name: str, payload: bytes) -> bytes | None:
    """``payload`` with its MAC line in front, for the entry ``name`` of ``directory`` (None: no secret)."""
    key = secret(directory)
    if key is None:
        return None
    return _MAC_TAG + _mac(key, name, payload).encode() + b"\n" + payload


def unseal(directory: str | Path, name: str, blob: bytes) -> bytes | None:
    """The payload of a sealed entry when its MAC verifies for ``name`` in ``directory``, else None."""
    if not blob.startswith(_MAC_TAG) or len(blob) < _MAC_HEAD or blob[_MAC_HEAD - 1:_MAC_HEAD] != b"\n":
        return None
    key = secret(directory)
    if key is None:
        return None
    payload = blob[_MAC_HEAD:]
    given = blob[len(_MAC_TAG):_MAC_HEAD - 1]
    return payload if hmac.compare_digest(given, _mac(key, name, payload).encode()) else None
