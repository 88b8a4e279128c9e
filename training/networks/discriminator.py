"""The discriminator (spec §6): residual/skip/orig blocks, minibatch-stddev epilogue, projection labels."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from training.networks.config import DiscriminatorConfig, channels_at
from training.networks.layers import Conv2dLayer, FullyConnected, MinibatchStd, downsample_image, resample_filter_buffer


class DiscriminatorBlock(nn.Module):
    """[fromrgb] -> conv0 -> conv1 (down 2), with a 1x1 down-sampled residual for 'resnet'."""

    def __init__(self, in_channels: int, out_channels: int, img_channels: int, first: bool, architecture: str):
        super().__init__()
        self.arch, self.first = architecture, first
        gain = math.sqrt(0.5) if architecture == "resnet" else 1.0
        self.fromrgb = self.skip = None
        if first or architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, act="lrelu")
        self.conv0 = Conv2dLayer(in_channels, in_channels, kernel_size=3, act="lrelu")
        self.conv1 = Conv2dLayer(in_channels, out_channels, kernel_size=3, act="lrelu", down=2, gain=gain)
        if architecture == "resnet":
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, down=2, gain=gain)
        self.register_buffer("resample_filter", resample_filter_buffer(), persistent=False)

    def forward(self, x: Optional[torch.Tensor], img: Optional[torch.Tensor]):
        if self.fromrgb is not None:
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            img = downsample_image(img, self.resample_filter) if self.arch == "skip" else None
        if self.arch == "resnet":
            y = self.skip(x)
            x = y + self.conv1(self.conv0(x))
        else:
            x = self.conv1(self.conv0(x))
        return x, img


class DiscriminatorEpilogue(nn.Module):
    """4x4: [fromrgb] -> minibatch-stddev -> conv -> fc -> out (one logit, or a projection on labels)."""

    def __init__(self, channels: int, c_dim: int, img_channels: int, cfg: DiscriminatorConfig):
        super().__init__()
        self.c_dim = c_dim
        self.fromrgb = None
        if cfg.architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, channels, kernel_size=1, act="lrelu")
        self.mbstd = MinibatchStd(cfg.mbstd_group_size, cfg.mbstd_num_channels) if cfg.mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(channels + cfg.mbstd_num_channels, channels, kernel_size=3, act="lrelu")
        self.fc = FullyConnected(channels * 16, channels, act="lrelu")
        self.out = FullyConnected(channels, max(c_dim, 1))

    def forward(self, x: torch.Tensor, img: Optional[torch.Tensor], c: Optional[torch.Tensor]) -> torch.Tensor:
        if self.fromrgb is not None:
            x = x + self.fromrgb(img)
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.out(self.fc(self.conv(x).flatten(1)))
        if self.c_dim > 0:
            x = (x * c).sum(dim=1, keepdim=True)
        return x


class Discriminator(nn.Module):
    """img [B, C, R, R] (+ labels [B, c_dim]) -> logits [B, 1]."""

    def __init__(self, cfg: DiscriminatorConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        R = cfg.img_resolution
        self.block_resolutions = [2 ** i for i in range(int(math.log2(R)), 2, -1)]
        ch = lambda r: channels_at(r, cfg.channel_base, cfg.channel_max)
        for res in self.block_resolutions:
            setattr(self, f"b{res}", DiscriminatorBlock(ch(res), ch(res // 2), cfg.img_channels, res == R, cfg.architecture))
        self.b4 = DiscriminatorEpilogue(ch(4), cfg.c_dim, cfg.img_channels, cfg)

    def forward(self, img: torch.Tensor, c: Optional[torch.Tensor] = None) -> torch.Tensor:
        cfg = self.cfg
        assert img.ndim == 4 and img.shape[1] == cfg.img_channels, f"expected [B, {cfg.img_channels}, H, W] images"
        if cfg.c_dim > 0 and (c is None or c.shape[1:] != (cfg.c_dim,)):
            raise ValueError(f"the discriminator needs labels of shape [B, {cfg.c_dim}]")
        x = None
        img = img.float()
        for res in self.block_resolutions:
            x, img = getattr(self, f"b{res}")(x, img)
        return self.b4(x, img, c)
