"""Build-on-first-use loader for the CUDA kernels in this package.

Sources are compiled with `torch.utils.cpp_extension.load` (ninja) into a build folder whose name is a
hash of the source bytes, the torch/CUDA versions and the GPU's compute capability: an edited source,
a new torch or a different GPU gets a fresh folder, an unchanged setup re-loads the cached library.
Concurrent builders of the same folder are serialised by the file lock that `load` takes there.

Nothing here runs at import time; CPU-only callers never reach the compiler.
"""
from __future__ import annotations

import contextlib
import contextvars
import glob
import hashlib
import os
import re
import shutil
import subprocess
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from ..util import atomic_write, cache_dir

_SRC_DIR = Path(__file__).resolve().parent

# Loaded (or failed) extensions per request (name, sources, flags). A hit skips hashing the sources,
# so calling get_plugin on every op invocation is cheap; the flip side is that a source edited while a
# process runs is picked up by the next process. Failures are remembered so that impl='auto' does not
# retry a broken build on every call.
_Request = tuple[str, tuple[str, ...], tuple[str, ...]]
_loaded: dict[_Request, ModuleType] = {}
_failed: dict[_Request, RuntimeError] = {}
_warned: set[str] = set()
_lock = threading.Lock()

# No --use_fast_math: with it nvcc 13 compiles tanhf to the approximate tanh.approx.f32 and expf to a
# flush-to-zero ex2.approx (seen in the PTX for sm_90), short of the float32 math the dtype contract promises
# (dnnlib/ops/__init__.py); both kernels are bound by memory, so the exact functions cost nothing that matters.
_DEFAULT_CUDA_FLAGS: tuple[str, ...] = ()


def _cuda_problem() -> str | None:
    """Why CUDA kernels cannot be built here, or None when they can be tried."""
    if torch.version.cuda is None:
        return "this PyTorch build has no CUDA support"
    if not torch.cuda.is_available():
        return "no CUDA device is available"
    # Deferred import: the extension builder is only loaded when a kernel is really wanted.
    from torch.utils import cpp_extension

    home, problem = find_cuda_home()
    if home is None:
        return problem
    mismatch = toolkit_mismatch(home, torch.version.cuda)
    if mismatch:
        return mismatch
    if cpp_extension.CUDA_HOME != home:
        # torch guesses the toolkit as the folder above `which nvcc`, wrong for wrappers such as
        # /usr/local/bin/nvcc; the build reads its module variable and the environment.
        cpp_extension.CUDA_HOME = os.environ["CUDA_HOME"] = home
    if not cpp_extension.is_ninja_available():
        return "ninja is not installed (pip install ninja)"
    return None


_KNOWN_HOMES = ("/usr/local/cuda", "/usr/local/cuda-*", "/opt/cuda", "/usr/lib/cuda")


def _is_toolkit(path: str | None) -> bool:
    return bool(path) and os.path.isfile(os.path.join(path, "bin", "nvcc")) and \
        os.path.isfile(os.path.join(path, "include", "cuda_runtime.h"))


def _toolkit_of_nvcc(nvcc: str) -> str | None:
    """The toolkit an nvcc on PATH belongs to: through symlinks, or the nvcc a small wrapper script runs."""
    real = os.path.realpath(nvcc)
    home = os.path.dirname(os.path.dirname(real))
    if _is_toolkit(home):
        return home
    try:
        with open(real, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return None
    if b"\0" in head:  # a binary outside a toolkit layout
        return None
    for target in re.findall(r"(/[^\s'\"]*/bin/nvcc)\b", head.decode(errors="replace")):
        home = os.path.dirname(os.path.dirname(os.path.realpath(target)))
        if _is_toolkit(home):
            return home
    return None


def find_cuda_home(environ: dict | None = None, known: tuple[str, ...] = _KNOWN_HOMES) -> tuple[str | None, str]:
    """(toolkit folder, "") or (None, one line saying what to set): $CUDA_HOME/$CUDA_PATH, else the toolkit of
    the nvcc on PATH (symlinks and wrapper scripts followed), else the newest of the usual install folders."""
    env = os.environ if environ is None else environ
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if env.get(var):
            if _is_toolkit(env[var]):
                return env[var], ""
            return None, f"{var}={env[var]} is not a CUDA toolkit (no bin/nvcc and include/cuda_runtime.h); fix it"
    nvcc = shutil.which("nvcc", path=env.get("PATH"))
    if nvcc:
        home = _toolkit_of_nvcc(nvcc)
        if home:
            return home, ""
    found = [d for pattern in known for d in sorted(glob.glob(pattern), reverse=True) if _is_toolkit(d)]
    if found:
        return found[0], ""
    where = f"nvcc at {nvcc} is not inside a toolkit" if nvcc else "no nvcc on PATH"
    return None, f"the CUDA toolkit was not found ({where}); set CUDA_HOME to the folder with bin/nvcc"


def nvcc_version(home: str) -> str | None:
    """"13.0" from `<home>/bin/nvcc --version`, or None where it does not run or say."""
    try:
        out = subprocess.run([os.path.join(home, "bin", "nvcc"), "--version"], capture_output=True, text=True,
                             timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"release (\d+\.\d+)", out)
    return m.group(1) if m else None


def toolkit_mismatch(home: str, torch_cuda: str | None) -> str | None:
    """One line where the toolkit's major CUDA version differs from PyTorch's (its extension builder refuses
    such a build), else None (also when the version cannot be read: the build then says what is wrong)."""
    found = nvcc_version(home)
    if found is None or not torch_cuda or found.split(".")[0] == torch_cuda.split(".")[0]:
        return None
    return (f"the CUDA toolkit in {home} is {found}, this PyTorch was built with CUDA {torch_cuda}; "
            f"set CUDA_HOME to a CUDA {torch_cuda.split('.')[0]}.x toolkit")


def _build_key(name: str, sources: Sequence[Path], extra_cuda_cflags: Sequence[str]) -> str:
    """Folder name for one build configuration: changes whenever the compiled result could."""
    h = hashlib.sha256()
    for src in sources:
        h.update(src.name.encode())
        h.update(b"\0")
        h.update(src.read_bytes())
        h.update(b"\0")
    h.update(repr((torch.__version__, torch.version.cuda, tuple(extra_cuda_cflags))).encode())
    if torch.cuda.is_available():
        h.update(repr(torch.cuda.get_device_capability()).encode())
    return f"{name}-{h.hexdigest()[:16]}"


def build_dir_root() -> Path:
    """Where compiled kernels are kept ($GANFORMER_CACHE/torch_extensions, see dnnlib.util.cache_dir)."""
    return cache_dir("torch_extensions")


def get_plugin(
    name: str,
    sources: Sequence[str],
    extra_cuda_cflags: Sequence[str] = _DEFAULT_CUDA_FLAGS,
    verbose: bool = False,
) -> ModuleType:
    """Return the compiled extension `name` built from `sources` (paths relative to this package).

    Raises RuntimeError (with the reason) when CUDA, nvcc or ninja is missing or the build fails;
    the failure is cached for the life of the process.
    """
    request = (name, tuple(sources), tuple(extra_cuda_cflags))
    module = _loaded.get(request)
    if module is not None:
        return module
    with _lock:
        if request in _loaded:
            return _loaded[request]
        if request in _failed:
            raise _failed[request]
        try:
            problem = _cuda_problem()
            if problem is not None:
                raise RuntimeError(problem)
            srcs = [(_SRC_DIR / s).resolve() for s in sources]
            key = _build_key(name, srcs, extra_cuda_cflags)
            module = _build_and_load(key, srcs, list(extra_cuda_cflags), verbose)
        except Exception as e:  # compiler errors arrive as several exception types
            err = RuntimeError(f"cannot build CUDA kernel '{name}': {e}")
            _failed[request] = err
            raise err from e
        _loaded[request] = module
        return module


def _build_and_load(key: str, srcs: Sequence[Path], cuda_flags: list[str], verbose: bool) -> ModuleType:
    from torch.utils import cpp_extension

    build_dir = build_dir_root() / key
    src_dir = build_dir / "src"
    src_dir.mkdir(parents=True, exist_ok=True)
    # Compile private copies: the build then cannot see a source edited mid-build, and the folder
    # stays self-consistent with its hash. Copies are atomic, so racing processes write identical files.
    copies = []
    for src in srcs:
        dst = src_dir / src.name
        if not dst.exists():
            with atomic_write(dst) as fh:
                fh.write(src.read_bytes())
        copies.append(str(dst))
    # The module name must be unique per build so two versions can coexist in one process.
    module_name = key.replace("-", "_")
    return cpp_extension.load(
        name=module_name,
        sources=copies,
        build_directory=str(build_dir),
        extra_cflags=["-O3"],
        extra_cuda_cflags=cuda_flags,
        verbose=verbose,
    )


_force_reference: contextvars.ContextVar[bool] = contextvars.ContextVar("force_reference", default=False)


@contextlib.contextmanager
def reference_ops():
    """Within this context impl='auto' takes the reference path, also for CUDA tensors (kernel-vs-reference
    comparisons of whole networks; impl='cuda' still demands the kernel)."""
    token = _force_reference.set(True)
    try:
        yield
    finally:
        _force_reference.reset(token)


_compiling: Callable[[], bool] = getattr(torch.compiler, "is_compiling", lambda: False)


def use_kernel(op: str, x: torch.Tensor, impl: str, plugin: Callable[[], Any]) -> bool:
    """Whether `op` should run its CUDA kernel for `x` under `impl` ('auto' | 'cuda' | 'ref').

    CPU tensors never reach `plugin` (so never a compiler). 'cuda' raises RuntimeError when the kernel
    cannot run; 'auto' then warns once and answers False so the caller takes the reference path.
    """
    if impl == "ref":
        return False
    if impl == "auto" and _compiling():
        # Inside torch.compile the reference ops are traced (and fused by inductor); an extension call would
        # break the graph at every layer.
        return False
    if impl == "cuda":
        if x.device.type != "cuda":
            raise RuntimeError(f"{op}(impl='cuda') needs a CUDA tensor, got one on {x.device}")
        plugin()  # raises a RuntimeError that says why the kernel is unavailable
        return True
    if x.device.type != "cuda" or _force_reference.get():
        return False
    try:
        plugin()
        return True
    except RuntimeError as e:
        warn_fallback_once(op, e)
        return False


def kernel_dtype_scope(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """Autocast switched off for a reference op on `x`, as it never reaches a custom kernel.

    A kernel computes in x's dtype (float32 math inside) whatever autocast says; the reference path runs
    its torch ops in this scope so that both paths obey that one rule (see dnnlib/ops/__init__.py).
    """
    try:
        enabled = torch.is_autocast_enabled(x.device.type)
    except RuntimeError:  # a device type autocast does not know (meta): nothing to switch off
        return contextlib.nullcontext()
    return torch.autocast(x.device.type, enabled=False) if enabled else contextlib.nullcontext()


def warn_fallback_once(op: str, reason: Exception) -> None:
    """Warn (once per op and process) that a CUDA tensor is handled by the slow reference path."""
    with _lock:
        if op in _warned:
            return
        _warned.add(op)
    warnings.warn(
        f"{op}: CUDA kernel unavailable, using the slower reference implementation ({reason})",
        RuntimeWarning,
        stacklevel=4,  # point at the caller of the public op
    )


__all__ = ["build_dir_root", "find_cuda_home", "get_plugin", "kernel_dtype_scope", "reference_ops", "use_kernel", "warn_fallback_once"]
