"""Small utilities: user-facing errors, atomic file writes, cache folders."""
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


def cli_main(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a script's main(): a UserError becomes one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it onto `path`.

    A crash or exception leaves `path` untouched (old content or absent) and removes the temporary file.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
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
