"""The kernel builder: CPU use never compiles, build keys track sources, failures are explained."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from dnnlib.ops import bias_act, conv2d_resample, custom_ops, upfirdn2d

REPO = Path(__file__).resolve().parent.parent


def _run_every_op_on_cpu() -> None:
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    w = torch.randn(4, 3, 3, 3)
    y = bias_act.bias_act(x, torch.zeros(3), act="lrelu", clamp=10)
    y = upfirdn2d.upsample2d(y, f).mean() + upfirdn2d.downsample2d(x, f).mean() + upfirdn2d.filter2d(x, f).mean()
    y = y + conv2d_resample.conv2d_resample(x, w, f, up=2, padding=1).mean()
    y = y + conv2d_resample.conv2d_resample(x, w, f, down=2, padding=1).mean()
    (g,) = torch.autograd.grad(y, x, create_graph=True)
    g.square().sum().backward()


def test_cpu_use_never_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError("the CUDA builder was invoked for CPU tensors")

    monkeypatch.setattr(custom_ops, "get_plugin", forbidden)
    from torch.utils import cpp_extension

    monkeypatch.setattr(cpp_extension, "load", forbidden)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning for CPU tensors either
        _run_every_op_on_cpu()


def test_import_and_cpu_use_do_not_load_the_extension_builder() -> None:
    # A fresh interpreter: importing the package and running every op on CPU must not even import
    # torch.utils.cpp_extension (the module that drives the compiler).
    code = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, sys.argv[1])
        sys.path.insert(0, sys.argv[2])
        import test_ops_build as t
        t._run_every_op_on_cpu()
        assert "torch.utils.cpp_extension" not in sys.modules, "cpp_extension was imported"
        print("ok")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(REPO), str(REPO / "tests")], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_build_key_tracks_source_content(tmp_path: Path) -> None:
    a = tmp_path / "k.cu"
    a.write_text("// v1\n")
    k1 = custom_ops._build_key("plugin", [a], ["--use_fast_math"])
    assert k1 == custom_ops._build_key("plugin", [a], ["--use_fast_math"])  # stable
    assert k1.startswith("plugin-")
    a.write_text("// v2\n")
    assert custom_ops._build_key("plugin", [a], ["--use_fast_math"]) != k1  # edited source
    a.write_text("// v1\n")
    assert custom_ops._build_key("plugin", [a], []) != k1  # different flags


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error path")
def test_get_plugin_explains_why_it_cannot_build() -> None:
    with pytest.raises(RuntimeError, match="cannot build CUDA kernel 'bias_act_plugin'"):
        custom_ops.get_plugin("bias_act_plugin", ["bias_act.cpp", "bias_act.cu"])


def test_fallback_warning_is_issued_once() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            custom_ops.warn_fallback_once("test-op-only-here", RuntimeError("no nvcc"))
    assert len(caught) == 1
    assert "reference implementation" in str(caught[0].message) and "no nvcc" in str(caught[0].message)


def test_use_kernel_dispatch() -> None:
    calls = []

    def ok() -> None:
        calls.append("ok")

    def broken() -> None:
        calls.append("broken")
        raise RuntimeError("nvcc missing")

    cpu = torch.zeros(1)
    # A stand-in for a CUDA tensor: use_kernel only looks at .device, so no GPU is needed.
    gpu = SimpleNamespace(device=torch.device("cuda"))
    assert not custom_ops.use_kernel("t", cpu, "ref", ok)
    assert not custom_ops.use_kernel("t", cpu, "auto", broken)
    assert not custom_ops.use_kernel("t", gpu, "ref", broken)
    assert calls == []  # no build attempted for CPU tensors or impl='ref'
    with pytest.raises(RuntimeError, match="needs a CUDA tensor"):
        custom_ops.use_kernel("t", cpu, "cuda", ok)
    assert custom_ops.use_kernel("t", gpu, "auto", ok) and custom_ops.use_kernel("t", gpu, "cuda", ok)
    with pytest.raises(RuntimeError, match="nvcc missing"):
        custom_ops.use_kernel("t", gpu, "cuda", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not custom_ops.use_kernel("test-auto-fallback", gpu, "auto", broken)
        assert not custom_ops.use_kernel("test-auto-fallback", gpu, "auto", broken)
    assert len(caught) == 1 and "nvcc missing" in str(caught[0].message)


def test_sources_exist() -> None:
    ops = REPO / "dnnlib" / "ops"
    for name in ("bias_act.cpp", "bias_act.cu", "upfirdn2d.cpp", "upfirdn2d.cu"):
        assert (ops / name).is_file(), name
    assert (REPO / "test_nvcc.cu").is_file()


def test_compiled_graphs_take_the_reference_ops(monkeypatch) -> None:
    """Under torch.compile, impl='auto' traces the reference ops (inductor fuses them) rather than calling the
    extension, which would break the graph at every layer; an explicit impl='cuda' is still honoured."""
    gpu = SimpleNamespace(device=torch.device("cuda"))
    calls = []
    ok = lambda: calls.append("ok")
    monkeypatch.setattr(custom_ops, "_compiling", lambda: True)
    assert not custom_ops.use_kernel("t", gpu, "auto", ok) and calls == []
    assert custom_ops.use_kernel("t", gpu, "cuda", ok) and calls == ["ok"]
    monkeypatch.setattr(custom_ops, "_compiling", lambda: False)
    assert custom_ops.use_kernel("t", gpu, "auto", ok)


def test_is_compiling_is_seen_inside_a_compiled_function() -> None:
    """The check use_kernel relies on answers True while dynamo traces (the eager backend: no C++ compiler)."""
    seen = []

    def f(t):
        seen.append(custom_ops._compiling())
        return t + 1

    torch.compile(f, backend="eager")(torch.zeros(2))
    assert seen and seen[0] is True and custom_ops._compiling() is False
