"""The synthesis network w -> image (spec §4): modulated convs, bipartite attention, noise, ToRGB."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from dnnlib.ops import bias_act, conv2d_resample
from training.networks.attention import BipartiteAttention, GridEncoding
from training.networks.config import AttentionConfig, SynthesisConfig, channels_at
from training.networks.layers import (SQRT2, Conv2dLayer, FullyConnected, ToRGB, modulated_conv2d, resample_filter_buffer,
                     upsample_image)


class SynthesisLayer(nn.Module):
    """conv (modulated by the global latent) -> attention to the local latents -> noise -> bias + lrelu."""

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 w_dim: int,
                 resolution: int,               # Output resolution.
                 cfg: SynthesisConfig,
                 components_num: int = 0,       # Local latents K attended to (0 = no attention).
                 up: int = 1,
                 gain: float = 1.0,             # Output gain on top of lrelu's sqrt(2).
                 bias: bool = True,             # False: no bias and no activation (the last block's extra conv).
                 noise: bool = True,
                 attention: bool = False,
                 img2img: bool = False):        # SAGAN: self-attention among image positions.
        super().__init__()
        self.resolution, self.up, self.style = resolution, up, cfg.style
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 3, 3]))
        self.weight_gain = 1 / math.sqrt(in_channels * 9)
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None
        self.out_gain = SQRT2 * gain
        self.register_buffer("resample_filter", resample_filter_buffer(), persistent=False)
        self.register_buffer("noise_const", torch.randn([resolution, resolution]) if noise else None)
        self.noise_strength = nn.Parameter(torch.zeros([])) if noise else None
        att: AttentionConfig = cfg.attention
        self.attn = self.grid = self.self_attn = self.ltnt_update = None
        if attention or img2img:
            pos_dim = att.pos_dim or w_dim
            self.grid = GridEncoding(resolution, pos_dim, att.pos_type, att.pos_init, att.pos_directions_num)
        if attention:
            self.use_pos = att.use_pos
            self.attn = BipartiteAttention(dim=out_channels, from_dim=out_channels, to_dim=w_dim,
                                           from_len=resolution ** 2, to_len=components_num, pos_dim=pos_dim, cfg=att)
            if att.img2ltnt:
                # True duplex (paper §3.1.2): latents gather from the image (a residual update) before they
                # act as the keys and values of the image's attention.
                up_cfg = AttentionConfig(num_heads=1, norm=None, integration="add",
                                         attention_dropout=att.attention_dropout)
                self.ltnt_update = BipartiteAttention(dim=w_dim, from_dim=w_dim, to_dim=out_channels,
                                                      from_len=components_num, to_len=resolution ** 2,
                                                      pos_dim=pos_dim, cfg=up_cfg)
        if img2img:
            sa_cfg = AttentionConfig(num_heads=att.num_heads, attention_dropout=att.attention_dropout)
            self.self_attn = BipartiteAttention(dim=out_channels, from_dim=out_channels, to_dim=out_channels,
                                                from_len=resolution ** 2, to_len=resolution ** 2, pos_dim=pos_dim,
                                                cfg=sa_cfg)

    def forward(self,
                x: torch.Tensor,                            # [B, C_in, r/up, r/up]
                w: torch.Tensor,                            # [B, K+1, d]: this layer's w slot
                pos: Optional[torch.Tensor] = None,         # [K, d] latent position embeddings
                mask: Optional[torch.Tensor] = None,        # [B, K]
                assignments: Optional[torch.Tensor] = None,
                noise_mode: str = "random",
                fused_modconv: bool = True) -> tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        B, r = x.shape[0], self.resolution
        noise = None
        if self.noise_strength is not None and noise_mode != "none":
            # Drawn before the conv, in layer order, so seeded runs match the official order.
            noise = torch.randn([B, 1, r, r], device=x.device) if noise_mode == "random" else self.noise_const
            noise = noise * self.noise_strength

        weight = self.weight * self.weight_gain
        if self.style:
            x = modulated_conv2d(x, weight, self.affine(w[:, -1]), up=self.up, padding=1,
                                 resample_filter=self.resample_filter, flip_weight=(self.up == 1), fused=fused_modconv)
        else:
            x = conv2d_resample.conv2d_resample(x, weight.to(x.dtype), f=self.resample_filter, up=self.up, padding=1,
                                                flip_weight=(self.up == 1))

        probs = None
        if self.attn is not None or self.self_attn is not None:
            shape = x.shape
            grid = self.grid().reshape(r * r, -1)
            feats = x.reshape(B, shape[1], r * r).permute(0, 2, 1)           # [B, F, C], f = y*r + x
            if self.attn is not None:
                latents = w[:, :-1]                                          # [B, K, d]
                lpos = pos if self.use_pos else None
                if self.ltnt_update is not None:
                    latents = self.ltnt_update(latents, feats, x_pos=lpos, y_pos=grid)[0]
                feats, probs, assignments = self.attn(feats, latents, x_pos=grid, y_pos=lpos, mask=mask,
                                                      assignments=assignments)
                probs = probs.reshape(B, self.attn.num_heads, r, r, -1).permute(0, 1, 4, 2, 3)   # [B, N, K, r, r]
            if self.self_attn is not None:
                feats = self.self_attn(feats, feats, x_pos=grid, y_pos=grid)[0]
            x = feats.permute(0, 2, 1).reshape(shape)

        if noise is not None:
            x = x + noise.to(x.dtype)
        if self.bias is not None:
            x = bias_act.bias_act(x, self.bias.to(x.dtype), act="lrelu", gain=self.out_gain)
        return x, probs, assignments


class SynthesisBlock(nn.Module):
    """One resolution: [stem | conv0 (up)] -> conv1 [-> conv_last] [-> ToRGB], orig/skip/resnet wiring."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 is_last: bool, cfg: SynthesisConfig, components_num: int, attention: bool):
        super().__init__()
        self.resolution, self.is_last, self.arch = resolution, is_last, cfg.architecture
        self.is_stem = in_channels == 0
        self.latent_stem = cfg.latent_stem and self.is_stem
        self.num_conv = self.num_torgb = 0
        img2img = cfg.img2img_res > 0 and resolution == 2 ** cfg.img2img_res
        layer = dict(w_dim=w_dim, resolution=resolution, cfg=cfg, components_num=components_num,
                     noise=cfg.local_noise, attention=attention)
        resnet_gain = math.sqrt(0.5) if cfg.architecture == "resnet" else 1.0
        self.stem = self.const = self.conv0 = self.conv_last = self.torgb = self.skip = None
        if self.is_stem:
            if self.latent_stem:
                self.stem = FullyConnected(w_dim, out_channels * resolution ** 2, act="lrelu", gain=SQRT2 / 4)
                self.num_conv += 1
            else:
                self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, up=2, **layer)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, gain=1.0 if self.is_stem else resnet_gain,
                                    img2img=img2img, **layer)
        self.num_conv += 1
        if is_last and cfg.conv_last:
            self.conv_last = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution, cfg=cfg,
                                            bias=False, noise=False)
            self.num_conv += 1
        if is_last or cfg.architecture == "skip":
            self.torgb = ToRGB(out_channels, img_channels, w_dim, style=cfg.style)
            self.num_torgb += 1
        if not self.is_stem and cfg.architecture == "resnet":
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2, gain=resnet_gain)
        self.register_buffer("resample_filter", resample_filter_buffer(), persistent=False)

    def forward(self, x: Optional[torch.Tensor], img: Optional[torch.Tensor], ws: torch.Tensor,
                assignments: Optional[torch.Tensor], **layer_kwargs):
        """ws: [B, K+1, num_conv + num_torgb, d]. Returns x, img, attention maps, assignments."""
        slots = iter(ws.unbind(dim=2))
        maps = []
        if self.is_stem:
            B = ws.shape[0]
            if self.latent_stem:
                x = self.stem(next(slots)[:, -1]).reshape(B, -1, self.resolution, self.resolution)
            else:
                x = self.const.unsqueeze(0).repeat([B, 1, 1, 1])
            x, att, assignments = self.conv1(x, next(slots), assignments=assignments, **layer_kwargs)
            maps.append(att)
        else:
            y = self.skip(x) if self.skip is not None else None
            for conv in (self.conv0, self.conv1):
                x, att, assignments = conv(x, next(slots), assignments=assignments, **layer_kwargs)
                maps.append(att)
            if y is not None:
                x = y + x
        if img is not None:
            img = upsample_image(img, self.resample_filter)
        if self.conv_last is not None:
            x = self.conv_last(x, next(slots), **layer_kwargs)[0]
        if self.torgb is not None:
            rgb = self.torgb(x, next(slots)[:, -1], fused=layer_kwargs.get("fused_modconv", True))
            img = img + rgb if img is not None else rgb
        return x, img, [m for m in maps if m is not None], assignments


class SynthesisNetwork(nn.Module):
    """Blocks b4 ... bR. Attention in blocks with start_res <= log2(r) < end_res (spec §4)."""

    def __init__(self, w_dim: int, components_num: int, img_resolution: int, img_channels: int, cfg: SynthesisConfig):
        super().__init__()
        self.w_dim, self.K, self.img_resolution, self.cfg = w_dim, components_num, img_resolution, cfg
        self.block_resolutions = [2 ** i for i in range(2, int(math.log2(img_resolution)) + 1)]
        self.num_ws = 0
        for res in self.block_resolutions:
            attention = cfg.transformer and cfg.start_res <= math.log2(res) < cfg.end_res
            is_last = res == img_resolution
            block = SynthesisBlock(channels_at(res // 2, cfg.channel_base, cfg.channel_max) if res > 4 else 0,
                                   channels_at(res, cfg.channel_base, cfg.channel_max), w_dim, res, img_channels,
                                   is_last, cfg, components_num, attention)
            self.num_ws += block.num_conv + (block.num_torgb if is_last else 0)
            setattr(self, f"b{res}", block)
        if cfg.kgan:
            if components_num < 2 or cfg.transformer:
                raise ValueError("k-GAN needs components_num >= 2 and no transformer")
            self.merge_res = min(2 ** cfg.merge_res, img_resolution)
            if cfg.merge_type != "sum":
                self.merge_score = Conv2dLayer(channels_at(self.merge_res, cfg.channel_base, cfg.channel_max), 1,
                                               kernel_size=1)

    def forward(self,
                ws: torch.Tensor,                       # [B, K+1, num_ws, d]
                pos: Optional[torch.Tensor] = None,
                mask: Optional[torch.Tensor] = None,
                noise_mode: str = "random",
                fused_modconv: Optional[bool] = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Returns the image [B, C, R, R] (float32) and the attention maps, one [B, N, K, r, r] per layer."""
        if noise_mode not in ("random", "const", "none"):
            raise ValueError(f"noise_mode must be random, const or none; got {noise_mode!r}")
        assert ws.ndim == 4 and ws.shape[1:] == (self.K + 1, self.num_ws, self.w_dim), \
            f"ws must be [B, {self.K + 1}, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}"
        if fused_modconv is None:
            fused_modconv = not self.training
        ws = ws.float()
        x = img = assignments = None
        maps: list[torch.Tensor] = []
        w_idx = 0
        B, K = ws.shape[0], self.K
        kgan = self.cfg.kgan
        if kgan:
            # k-GAN: each local latent renders its own features (as the style of a batch row) until the merge.
            per_component = ws[:, :K].reshape(B * K, 1, *ws.shape[2:]).expand(-1, K + 1, -1, -1)
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            source = per_component if kgan and res <= self.merge_res else ws
            block_ws = source.narrow(2, w_idx, block.num_conv + block.num_torgb)   # the ToRGB reads the next slot
            w_idx += block.num_conv
            x, img, block_maps, assignments = block(x, img, block_ws, assignments if self.cfg.attention.iterative else None,
                                                    pos=pos, mask=mask, noise_mode=noise_mode, fused_modconv=fused_modconv)
            maps += block_maps
            if kgan and res == self.merge_res:
                x, img = self._merge(x, img, B)
        if self.cfg.tanh:
            img = torch.tanh(img)
        return img, maps


    def _merge(self, x: torch.Tensor, img: Optional[torch.Tensor], B: int):
        """Merge the K per-component feature maps [B*K, C, r, r] (and images) into one (k-GAN)."""
        K, kind = self.K, self.cfg.merge_type
        split = lambda t: t.reshape(B, K, *t.shape[1:])
        if kind == "sum":
            weights = torch.ones([B, K, 1, 1, 1], device=x.device)
        else:
            scores = split(self.merge_score(x))                                  # [B, K, 1, r, r]
            if kind == "softmax":
                weights = torch.softmax(scores.float(), dim=1)
            elif kind == "max":   # hard one-hot choice, straight-through gradient
                soft = torch.softmax(scores.float(), dim=1)
                hard = torch.nn.functional.one_hot(soft.argmax(dim=1), K).movedim(-1, 1).to(soft.dtype)
                weights = hard + soft - soft.detach()
            else:                 # "leaves": alpha-composite component i over the ones before it
                alpha = torch.sigmoid(scores)
                weights = torch.empty_like(alpha)
                remaining = torch.ones_like(alpha[:, 0])
                for i in range(K - 1, -1, -1):
                    a = alpha[:, i] if i > 0 else torch.ones_like(alpha[:, 0])
                    weights[:, i] = a * remaining
                    remaining = remaining * (1 - a)
        x = (split(x) * weights).sum(dim=1).to(x.dtype)
        if img is not None:
            img = (split(img) * weights).sum(dim=1)
        return x, img


def stack_attention_maps(maps: list[torch.Tensor], resolution: int) -> torch.Tensor:
    """Per-layer maps [B, N, K, r, r] -> one tensor [B, K, L, N, R, R] (nearest up-sampling)."""
    full = []
    for m in maps:
        f = resolution // m.shape[-1]
        full.append(m.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1))
    return torch.stack(full, dim=1).permute(0, 3, 1, 2, 4, 5)
