"""Small utilities: user-facing errors, atomic file writes, folder locks, cache folders."""
from __future__ import annotations

import contextlib
import functools
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator


class UserError(Exception):
    """An error caused by the user's input (bad flag, missing file, ...).

    Command-line entry points catch it and print its message as one line, without a traceback.
    """


def check_number(name: str, value: Any, lo: float | None = None, hi: float | None = None, *,
                 lo_open: bool = False, hi_open: bool = False, optional: bool = False) -> None:
    """UserError unless `value` is a finite number in [lo, hi] (an open end excludes it; None passes if
    optional). `name` is what the user typed, e.g. '--g-lr'."""
    import math

    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{name} must be a finite number, got {value!r}")
    if (lo is not None and (value < lo or (lo_open and value == lo))) or \
            (hi is not None and (value > hi or (hi_open and value == hi))):
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        raise UserError(f"{name} must be in {lb}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{rb}, "
                        f"got {value}")


def cli_main(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a script's main(): a UserError becomes one line on stderr and exit code 2; an OS error
    (read-only or full disk, a file where a folder should be) one line and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except OSError as e:
            where = f": {e.filename}" if getattr(e, "filename", None) else ""
            print(f"error: {e.strerror or e}{where}", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper


TMP_SUFFIX = ".tmp"


def current_umask() -> int:
    """The process umask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_tmp(folder: str | os.PathLike) -> int:
    """Delete the temporary files that killed atomic writes left in `folder` (call it while holding the
    folder's lock, so no live writer owns them); returns how many were removed."""
    removed = 0
    for p in Path(folder).glob(f".*{TMP_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed += 1
    return removed


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "folder") -> Iterator[Path]:
    """Hold an exclusive lock on `folder` (a `.lock` file there, fcntl.flock) for the `with` block.

    A second process gets a one-line UserError naming the holder's pid. The kernel releases the lock
    when its holder dies, so a lock file left by a killed process is stale and simply taken over.
    """
    import fcntl

    path = Path(folder) / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise UserError(f"{what} {folder} is in use by another process (pid {holder}); "
                            f"wait for it to finish") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)          # releases the lock


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it onto `path`.

    A crash or exception leaves `path` untouched (old content or absent) and removes the temporary file.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=TMP_SUFFIX, dir=final.parent)
    os.fchmod(fd, 0o666 & ~current_umask())      # mkstemp makes 0600; the final file follows the umask
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Like atomic_path, but yields an open file object."""
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f


def cache_dir(*parts: str) -> Path:
    """The user cache folder for this project ($GANFORMER_CACHE or ~/.cache/ganformer), created on demand."""
    root = os.environ.get("GANFORMER_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "ganformer")
    p = Path(root, *parts)
    p.mkdir(parents=True, exist_ok=True)
    return p
