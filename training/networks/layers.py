"""Primitive layers with equalised learning rate (spec §2): FC, conv, modulated conv, ToRGB, mbstd."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from dnnlib.ops import bias_act, conv2d_resample, upfirdn2d

SQRT2 = math.sqrt(2)
RESAMPLE_FILTER = (1, 3, 3, 1)


def default_gain(act: str) -> float:
    """The gain bias_act applies by default after `act` (sqrt 2 for the ReLU family)."""
    return SQRT2 if act in ("relu", "lrelu") else 1.0


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pixel norm: divide by the RMS over every non-batch axis, in fp32."""
    x = x.float()
    dims = list(range(1, x.ndim))
    return x * (x.square().mean(dim=dims, keepdim=True) + eps).rsqrt()


def resample_filter_buffer() -> torch.Tensor:
    return upfirdn2d.setup_filter(list(RESAMPLE_FILTER))


class FullyConnected(nn.Module):
    """y = act(x W^T + b), with W = theta * gain * lrmul / sqrt(in) and b = beta * lrmul at run time."""

    def __init__(self,
                 in_features: int,          # Input width (trailing axes are flattened).
                 out_features: int,         # Output width.
                 bias: bool = True,         # Learned additive bias.
                 act: str = "linear",       # Activation applied by bias_act.
                 gain: float = 1.0,         # Extra weight gain.
                 lrmul: float = 1.0,        # Learning-rate multiplier (init std 1/lrmul).
                 bias_init: float = 0.0):   # Initial effective bias.
        super().__init__()
        self.in_features, self.out_features, self.act = in_features, out_features, act
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lrmul)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = gain / math.sqrt(in_features) * lrmul   # this rounding order matches the official code
        self.bias_gain = lrmul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if x.ndim > 2:
            x = x.flatten(1)
        if self.act == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act.bias_act(x.matmul(w.t()), b, act=self.act)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, act={self.act}"


class Conv2dLayer(nn.Module):
    """Equalised-lr convolution with optional FIR up/down-sampling, bias and activation."""

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: int,
                 bias: bool = True,
                 act: str = "linear",
                 up: int = 1,               # Up-sampling factor (transposed conv + FIR).
                 down: int = 1,             # Down-sampling factor (FIR + strided conv).
                 gain: float = 1.0):        # Output gain, on top of the activation's default gain.
        super().__init__()
        self.up, self.down, self.act, self.kernel_size = up, down, act, kernel_size
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.out_gain = default_gain(act) * gain
        self.register_buffer("resample_filter", resample_filter_buffer(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        x = conv2d_resample.conv2d_resample(x, w, f=self.resample_filter, up=self.up, down=self.down,
                                            padding=self.kernel_size // 2, flip_weight=(self.up == 1))
        b = self.bias.to(x.dtype) if self.bias is not None else None
        return bias_act.bias_act(x, b, act=self.act, gain=self.out_gain)


def demodulation(weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """1 / |weight[o] * styles[b]| over (i, kh, kw), [B, O], in float32 without forming the per-sample weights
    (a multiply and a sum, not a matmul: autocast would run a matmul in half precision)."""
    energy = weight.float().square().sum(dim=[2, 3])                               # [O, I]
    return ((styles.float().square()[:, None, :] * energy).sum(dim=2) + 1e-8).rsqrt()


def modulated_conv2d(x: torch.Tensor,               # [B, I, H, W]
                     weight: torch.Tensor,          # [O, I, kh, kw], gain already applied
                     styles: torch.Tensor,          # [B, I]
                     up: int = 1,
                     padding: int = 0,
                     resample_filter: Optional[torch.Tensor] = None,
                     demodulate: bool = True,
                     flip_weight: bool = True,
                     fused: bool = True) -> torch.Tensor:
    """StyleGAN2 weight (de)modulation. Fused: one grouped conv with per-sample weights; else scale x."""
    B = x.shape[0]
    O, I, kh, kw = weight.shape
    assert x.shape[1] == I and styles.shape == (B, I), (x.shape, styles.shape, weight.shape)
    styles = styles.float()                 # (de)modulation in float32 (dtype contract, dnnlib/ops/__init__.py)
    if demodulate:
        dcoefs = demodulation(weight, styles)                             # [B, O]
    if fused:
        w = weight.unsqueeze(0) * styles.reshape(B, 1, I, 1, 1)          # [B, O, I, kh, kw]
        if demodulate:
            w = w * dcoefs.reshape(B, O, 1, 1, 1)
        x = x.reshape(1, B * I, *x.shape[2:])
        x = conv2d_resample.conv2d_resample(x, w.reshape(B * O, I, kh, kw).to(x.dtype), f=resample_filter,
                                            up=up, padding=padding, groups=B, flip_weight=flip_weight)
        return x.reshape(B, O, *x.shape[2:])
    x = x * styles.reshape(B, I, 1, 1).to(x.dtype)
    x = conv2d_resample.conv2d_resample(x, weight.to(x.dtype), f=resample_filter, up=up, padding=padding,
                                        flip_weight=flip_weight)
    if demodulate:
        x = x * dcoefs.reshape(B, O, 1, 1).to(x.dtype)
    return x


class ToRGB(nn.Module):
    """1x1 modulated conv without demodulation, plus bias; plain 1x1 conv when style is off."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, style: bool = True):
        super().__init__()
        self.style = style
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w_global: torch.Tensor, fused: bool = True) -> torch.Tensor:
        if self.style:
            # The gain goes on the styles (not the weight), which is the order the official code uses.
            styles = self.affine(w_global) * self.weight_gain
            x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=fused)
        else:
            x = conv2d_resample.conv2d_resample(x, (self.weight * self.weight_gain).to(x.dtype))
        return bias_act.bias_act(x, self.bias.to(x.dtype)).float()


class MinibatchStd(nn.Module):
    """Append the stddev over groups of samples as extra feature channels (spec §6)."""

    def __init__(self, group_size: Optional[int], num_channels: int = 1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, C, H, W = x.shape
        G = min(self.group_size, N) if self.group_size is not None else N
        if N % G:
            raise ValueError(f"minibatch-stddev: batch {N} is not divisible by group size {G}")
        F = self.num_channels
        y = x.float().reshape(G, -1, F, C // F, H, W)    # sample i falls in group i % (N // G); stats in fp32
        y = (y - y.mean(dim=0)).square().mean(dim=0)     # [n, F, c, H, W] variance over the group
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])        # [n, F]
        y = y.reshape(-1, F, 1, 1).repeat(G, 1, H, W)    # [N, F, H, W]
        return torch.cat([x, y.to(x.dtype)], dim=1)


def upsample_image(img: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return upfirdn2d.upsample2d(img, f)


def downsample_image(img: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return upfirdn2d.downsample2d(img, f)
