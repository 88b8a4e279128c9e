"""The dtype contract (dnnlib/ops/__init__.py) on CPU: under bf16 autocast the reference ops behave as the CUDA
kernels do, and a full training step (G, path length, D, R1) of every preset runs with the promised dtypes.

R1 *values* under CPU bf16 are not checked: oneDNN's bf16 convolution gives wrong second-order weight gradients
(a torch bug); bench/gpu_check.py compares bf16 with fp32 on CUDA instead.
"""
from __future__ import annotations

import tempfile
from collections import defaultdict

import pytest
import torch

from dnnlib.ops import bias_act as ba
from dnnlib.ops import upfirdn2d as fir
from training.distributed import Dist
from training.networks import Discriminator, Generator
from training.networks.presets import build
from training.training_loop import Trainer, TrainOptions

BF16, FP32 = torch.bfloat16, torch.float32
PRESETS = ["GANformer", "StyleGAN2", "GAN", "kGAN", "SAGAN"]


def tiny_nets(preset: str, res: int = 16, d_arch: str = "resnet") -> tuple[Generator, Discriminator]:
    kw = {"latent_size": 32, "components_num": 4} if preset in ("GANformer", "kGAN") else {"latent_size": 32}
    if preset == "kGAN":
        kw["merge_layer"] = 3
    if preset == "SAGAN":
        kw["g_img2img"] = 3
    G_cfg, D_cfg = build(preset, res, channel_base=256, channel_max=16, d_arch=d_arch, **kw)
    torch.manual_seed(0)
    return Generator(G_cfg), Discriminator(D_cfg)


def kernel_like_bias_act(orig):
    """What the CUDA path of bias_act does with dtypes: the bias cast to x's dtype, the output in x's dtype."""
    def f(x, b=None, *args, **kwargs):
        return orig(x, b.to(x.dtype) if b is not None else None, *args, **kwargs).to(x.dtype)
    return f


def test_bf16_mapping_with_kernel_dtypes_does_not_crash(monkeypatch) -> None:
    """Defect 1: with the kernel's dtype rule the mapping's w was bf16 and the fp32 w_avg update raised."""
    monkeypatch.setattr(ba, "bias_act", kernel_like_bias_act(ba.bias_act))
    G, _ = tiny_nets("GANformer")
    G.train()
    z = torch.randn(4, G.k, G.z_dim)
    with torch.autocast("cpu", dtype=BF16):
        ws = G.map(z, None)
        trunc = G.map(z, None, truncation_psi=0.5, update_w_avg=False)
    assert ws.dtype == FP32 and trunc.dtype == FP32 and G.mapping.w_avg.dtype == FP32
    assert torch.isfinite(G.mapping.w_avg).all() and G.mapping.w_avg.abs().sum() > 0


# -- ops ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("x_dtype", [BF16, FP32])
def test_bias_act_reference_has_the_kernel_dtype_rule(x_dtype) -> None:
    x = torch.randn(2, 8, 3, 3).to(x_dtype).requires_grad_(True)
    b = torch.randn(8, requires_grad=True)
    with torch.autocast("cpu", dtype=BF16):
        y = ba.bias_act(x, b, act="lrelu", gain=1.7, clamp=2.0, impl="ref")
    assert y.dtype == x_dtype
    # One rounding, at the end, of float32 math on the bias rounded to x's dtype (as bias_act.cu computes).
    z = x.detach().float() + b.detach().to(x_dtype).float().reshape(1, -1, 1, 1)
    expect = (torch.nn.functional.leaky_relu(z, 0.2) * 1.7).clamp(-2, 2).to(x_dtype)
    assert torch.equal(y.detach(), expect)
    y.float().square().sum().backward()
    assert x.grad.dtype == x_dtype and b.grad.dtype == FP32


@pytest.mark.parametrize("x_dtype", [BF16, FP32])
def test_upfirdn2d_reference_ignores_autocast(x_dtype) -> None:
    f = fir.setup_filter([1, 3, 3, 1])
    x = torch.randn(2, 4, 8, 8).to(x_dtype).requires_grad_(True)
    with torch.autocast("cpu", dtype=BF16):
        y = fir.upsample2d(x, f, impl="ref")
        d = fir.downsample2d(x, f, impl="ref")
    assert y.dtype == x_dtype and d.dtype == x_dtype
    expect = fir.upsample2d(x.detach().float(), f, impl="ref").to(x_dtype)   # float32 math, rounded once
    assert torch.equal(y.detach(), expect)
    (y.float().sum() + d.float().sum()).backward()
    assert x.grad.dtype == x_dtype


def test_demodulation_stays_float32_under_autocast() -> None:
    """The demodulation coefficients are float32 math under bf16 autocast, equal to the per-sample-weight definition."""
    from training.networks.layers import demodulation
    g = torch.Generator().manual_seed(0)
    weight, styles = torch.randn([6, 5, 3, 3], generator=g), torch.randn([4, 5], generator=g)
    with torch.autocast("cpu", dtype=BF16):
        d = demodulation(weight, styles.to(BF16))
    w = weight.double()[None] * styles.to(BF16).double()[:, None, :, None, None]       # [B, O, I, k, k]
    expect = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
    assert d.dtype == FP32 and torch.allclose(d.double(), expect, rtol=1e-6, atol=0)


# -- a full training step of every preset -----------------------------------------------------------------

# Output dtype per module class under bf16 autocast: a dtype, or "in" = the dtype of the first input tensor.
CONTRACT = {
    "MappingNetwork": FP32, "SynthesisNetwork": FP32, "ToRGB": FP32, "Generator": FP32,
    "SynthesisLayer": BF16, "SynthesisBlock": BF16, "Conv2dLayer": BF16, "FullyConnected": BF16,
    "DiscriminatorBlock": BF16, "DiscriminatorEpilogue": BF16, "Discriminator": BF16,
    "BipartiteAttention": "in", "MinibatchStd": "in", "ResidualUnit": "in", "MLP": BF16,
}


def _first_tensor(v):
    if isinstance(v, torch.Tensor):
        return v
    if isinstance(v, (tuple, list)):
        return next((t for t in v if isinstance(t, torch.Tensor)), None)
    return None


def record_dtypes(nets) -> tuple[dict, list]:
    seen, handles = defaultdict(set), []

    def hook(mod, args, out):
        name = type(mod).__name__
        x_in, y = _first_tensor(args), _first_tensor(out)
        if name in CONTRACT and y is not None:
            seen[name].add((x_in.dtype if x_in is not None else None, y.dtype))
    for net in nets:
        for m in net.modules():
            handles.append(m.register_forward_hook(hook))
    return seen, handles


@pytest.mark.parametrize("preset", PRESETS)
def test_bf16_training_step_keeps_the_contract(preset, one_thread) -> None:
    G, D = tiny_nets(preset, d_arch="skip" if preset == "GAN" else "resnet")
    with tempfile.TemporaryDirectory() as tmp:
        opts = TrainOptions(run_dir=tmp, resolution=16, batch_size=4, batch_gpu=2, bf16_on_cpu=True)
        opts.loss.pl_weight = 2.0 if preset in ("GANformer", "StyleGAN2") else 0.0
        tr = Trainer(opts, G, D, Dist(), torch.device("cpu"), log=lambda *_: None)
        assert tr.amp_dtype == BF16
        losses = []
        for phase in ("g_main", "g_pl", "d_main", "d_reg"):
            fn = getattr(tr.loss, phase)
            setattr(tr.loss, phase, lambda *a, _fn=fn: losses.append(_fn(*a)) or losses[-1])
        seen, handles = record_dtypes([tr.G, tr.D])
        reals = torch.randint(0, 256, [4, 3, 16, 16], dtype=torch.uint8)
        tr.train_step(reals, torch.zeros(4, dtype=torch.int64), lambda lab: torch.zeros(lab.shape[0], 0))
        for h in handles:
            h.remove()
    # Step 0 runs every phase: G, path length (when on), D and R1.
    assert len(losses) == 2 * (4 if opts.loss.pl_weight else 3)
    for loss, stats in losses:
        assert loss.dtype == FP32 and torch.isfinite(loss)
        assert all(v.dtype == FP32 for v in stats.values())
    for name, pairs in seen.items():
        want = CONTRACT[name]
        for x_dtype, y_dtype in pairs:
            assert y_dtype == (x_dtype if want == "in" else want), f"{preset}: {name} {x_dtype} -> {y_dtype}"
    assert {"MappingNetwork", "SynthesisLayer", "Conv2dLayer", "Discriminator"} <= set(seen)
    if preset == "GANformer":
        assert (BF16, BF16) in seen["BipartiteAttention"]
    for net in (tr.G, tr.D, tr.G_ema):
        for n, p in net.named_parameters():
            assert p.dtype == FP32 and torch.isfinite(p).all(), n
            assert p.grad is None or p.grad.dtype == FP32, n
    for opt in (tr.opt_G, tr.opt_D):
        assert all(t.dtype == FP32 for st in opt.state.values() for t in st.values() if t.is_floating_point())
    assert tr.G.mapping.w_avg.dtype == FP32 and tr.loss.pl_mean.dtype == FP32


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [BF16, FP32])
def test_cuda_and_reference_dtypes_agree(dtype) -> None:
    """Both paths under CUDA autocast give the same output and gradient dtypes (values: tests/test_ops_cuda.py)."""
    f = fir.setup_filter([1, 3, 3, 1], device="cuda")
    out = {}
    for impl in ("ref", "cuda"):
        x = torch.randn(2, 8, 8, 8, device="cuda").to(dtype).requires_grad_(True)
        b = torch.randn(8, device="cuda", requires_grad=True)
        with torch.autocast("cuda", dtype=BF16):
            y = fir.upsample2d(ba.bias_act(x, b, act="lrelu", impl=impl), f, impl=impl)
        y.float().sum().backward()
        out[impl] = (y.dtype, x.grad.dtype, b.grad.dtype)
    assert out["ref"] == out["cuda"] == (dtype, dtype, FP32)
