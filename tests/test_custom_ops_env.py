"""Kernel builder environment: toolkit detection (find_cuda_home) on fake layouts, the reference_ops context."""
from __future__ import annotations

import os
from pathlib import Path

from dnnlib.ops.custom_ops import find_cuda_home


def toolkit(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "include").mkdir()
    (root / "bin" / "nvcc").write_bytes(b"\x7fELF\0fake")
    (root / "bin" / "nvcc").chmod(0o755)
    (root / "include" / "cuda_runtime.h").write_text("")
    return root


def wrapper(path: Path, target: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\nexec {target} \"$@\"\n")
    path.chmod(0o755)
    return path


def test_wrapper_script_leads_to_the_real_toolkit(tmp_path) -> None:
    tk = toolkit(tmp_path / "cuda-13.0")
    wrapper(tmp_path / "usrbin" / "nvcc", tk / "bin" / "nvcc")
    home, why = find_cuda_home({"PATH": str(tmp_path / "usrbin")}, known=())
    assert home == str(tk) and why == ""


def test_symlinked_nvcc(tmp_path) -> None:
    tk = toolkit(tmp_path / "cuda-12.4")
    (tmp_path / "bin").mkdir()
    os.symlink(tk / "bin" / "nvcc", tmp_path / "bin" / "nvcc")
    assert find_cuda_home({"PATH": str(tmp_path / "bin")}, known=())[0] == str(tk)


def test_environment_wins_and_a_bad_one_is_named(tmp_path) -> None:
    tk = toolkit(tmp_path / "mine")
    assert find_cuda_home({"CUDA_HOME": str(tk), "PATH": ""}, known=())[0] == str(tk)
    home, why = find_cuda_home({"CUDA_HOME": str(tmp_path / "nothing"), "PATH": ""}, known=())
    assert home is None and "CUDA_HOME" in why and "\n" not in why


def test_known_folders_newest_first(tmp_path) -> None:
    old, new = toolkit(tmp_path / "cuda-11.8"), toolkit(tmp_path / "cuda-12.6")
    home, _ = find_cuda_home({"PATH": ""}, known=(str(tmp_path / "cuda"), str(tmp_path / "cuda-*")))
    assert home == str(new) and old.exists()


def test_not_found_says_which_variable_to_set(tmp_path) -> None:
    wrapper(tmp_path / "bin" / "nvcc", tmp_path / "missing" / "bin" / "nvcc")
    home, why = find_cuda_home({"PATH": str(tmp_path / "bin")}, known=(str(tmp_path / "none*"),))
    assert home is None and "set CUDA_HOME" in why and str(tmp_path / "bin" / "nvcc") in why


def test_reference_ops_context_routes_auto_to_the_reference() -> None:
    from types import SimpleNamespace

    import pytest

    from dnnlib.ops import custom_ops
    gpu = SimpleNamespace(device=__import__("torch").device("cuda"))
    calls = []
    ok = lambda: calls.append(1)
    with custom_ops.reference_ops():
        assert not custom_ops.use_kernel("t", gpu, "auto", ok)
        assert custom_ops.use_kernel("t", gpu, "cuda", ok)      # an explicit 'cuda' still takes the kernel
    assert calls == [1]
    assert custom_ops.use_kernel("t", gpu, "auto", ok) and calls == [1, 1]
    with pytest.raises(RuntimeError):
        with custom_ops.reference_ops():
            raise RuntimeError("the context is left cleanly")
    assert custom_ops.use_kernel("t", gpu, "auto", ok)


def test_toolkit_of_another_cuda_major_is_named_in_one_line(tmp_path) -> None:
    """torch's extension builder refuses a toolkit whose major CUDA version differs from PyTorch's; we say so
    in one line (and fall back) instead of letting the build fail."""
    from dnnlib.ops.custom_ops import nvcc_version, toolkit_mismatch
    tk = tmp_path / "cuda-12.4"
    toolkit(tk)
    (tk / "bin" / "nvcc").write_text("#!/bin/sh\necho 'Cuda compilation tools, release 12.4, V12.4.131'\n")
    assert nvcc_version(str(tk)) == "12.4"
    why = toolkit_mismatch(str(tk), "13.0")
    assert why is not None and "12.4" in why and "13.0" in why and "CUDA_HOME" in why and "\n" not in why
    assert toolkit_mismatch(str(tk), "12.8") is None                 # same major version: fine
    broken = toolkit(tmp_path / "broken")                            # an nvcc that does not run: no verdict here
    assert nvcc_version(str(broken)) is None and toolkit_mismatch(str(broken), "13.0") is None
