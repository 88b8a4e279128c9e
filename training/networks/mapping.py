"""The mapping network z -> w (spec §3): a global MLP and, for the GANformer, a shared local MLP."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as Fn
from torch import nn

from training.networks.attention import BipartiteAttention
from training.networks.config import AttentionConfig, MappingConfig
from training.networks.layers import FullyConnected, normalize_2nd_moment


class ResidualUnit(nn.Module):
    """h <- lrelu(fc1(fc0(h')) + h), with h' the (optionally attended) input and h the unit's input."""

    def __init__(self, dim: int, lrmul: float):
        super().__init__()
        self.fc0 = FullyConnected(dim, dim, act="lrelu", lrmul=lrmul)
        self.fc1 = FullyConnected(dim, dim, lrmul=lrmul)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return Fn.leaky_relu(self.fc1(self.fc0(x)) + skip, negative_slope=0.2)


class MLP(nn.Module):
    """`num_layers` FC layers (or num_layers // 2 residual units) and an output FC layer.

    Rows are processed independently ([..., in] -> [..., out]); with `self_attention` the `length`
    rows of each sample (the local latents) attend to each other before each layer.
    """

    def __init__(self, in_dim: int, dim: int, cfg: MappingConfig, self_attention: bool = False, length: int = 1):
        super().__init__()
        self.resnet, self.length = cfg.resnet, length
        self.num_units = (cfg.num_layers + 1) // 2 if cfg.resnet else cfg.num_layers
        self.in_proj = self.out_layer = None
        if cfg.resnet and in_dim != dim:
            # The official resnet MLP cannot take a wider input (labels); project it first.
            self.in_proj = FullyConnected(in_dim, dim, act="lrelu", lrmul=cfg.lrmul)
            in_dim = dim
        for i in range(self.num_units):
            if self_attention:
                att_cfg = AttentionConfig(num_heads=cfg.num_heads, attention_dropout=cfg.attention_dropout)
                setattr(self, f"sa{i}", BipartiteAttention(dim=in_dim, from_dim=in_dim, to_dim=in_dim,
                                                           from_len=length, to_len=length, pos_dim=in_dim, cfg=att_cfg))
            if cfg.resnet:
                setattr(self, f"l{i}", ResidualUnit(dim, cfg.lrmul))
            else:
                setattr(self, f"l{i}", FullyConnected(in_dim if i == 0 else dim, dim, act="lrelu", lrmul=cfg.lrmul))
        self.self_attention = self_attention
        if cfg.out_layer:
            self.out_layer = FullyConnected(dim, dim, act="lrelu", lrmul=cfg.lrmul)

    def forward(self, x: torch.Tensor, pos: Optional[torch.Tensor] = None,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])                                      # [B*L, in]
        if self.in_proj is not None:
            x = self.in_proj(x)
        for i in range(self.num_units):
            skip = x
            if self.self_attention:
                x = getattr(self, f"sa{i}")(x, x, x_pos=pos, y_pos=pos, mask=mask)[0]
            layer = getattr(self, f"l{i}")
            x = layer(x, skip) if self.resnet else layer(x)
        if self.out_layer is not None:
            x = self.out_layer(x)
        return x.reshape(*shape[:-1], -1)


class MappingNetwork(nn.Module):
    """z [B, K+1, d] (local components first, global last) -> w [B, K+1, num_ws, d]."""

    def __init__(self, z_dim: int, w_dim: int, components_num: int, c_dim: int, num_ws: int, cfg: MappingConfig):
        super().__init__()
        self.z_dim, self.w_dim, self.K, self.c_dim, self.num_ws, self.cfg = z_dim, w_dim, components_num, c_dim, num_ws, cfg
        layer_dim = cfg.layer_dim or w_dim
        if layer_dim != w_dim:
            raise ValueError("mapping layer_dim must equal w_dim")  # the output layer keeps the width
        if c_dim > 0:
            self.embed = FullyConnected(c_dim, z_dim)
        self.global_mlp = MLP(z_dim + (z_dim if c_dim > 0 else 0), w_dim, cfg)
        if components_num > 0:
            self.mlp = MLP(z_dim, w_dim, cfg, self_attention=cfg.ltnt2ltnt, length=components_num)
        if cfg.w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self,
                z: torch.Tensor,                        # [B, K+1, d]
                c: Optional[torch.Tensor] = None,       # [B, c_dim]
                pos: Optional[torch.Tensor] = None,     # [K, d] latent position embeddings
                mask: Optional[torch.Tensor] = None,    # [B, K] component-dropout mask
                truncation_psi: float = 1.0,
                truncation_cutoff: Optional[int] = None,
                update_w_avg: Optional[bool] = None) -> torch.Tensor:
        K = self.K
        assert z.ndim == 3 and z.shape[1:] == (K + 1, self.z_dim), f"z must be [B, {K + 1}, {self.z_dim}], got {list(z.shape)}"
        local, glob = z[:, :K], z[:, K:]
        if K > 0:
            # Official PyTorch port: one RMS over all local components; TF: per component.
            local = normalize_2nd_moment(local) if not self.cfg.per_component_norm else \
                normalize_2nd_moment(local.reshape(-1, 1, self.z_dim)).reshape(local.shape)
        if self.cfg.normalize_global or K == 0:
            glob = normalize_2nd_moment(glob)
        if self.c_dim > 0:
            assert c is not None and c.shape[1:] == (self.c_dim,), f"labels must be [B, {self.c_dim}]"
            emb = normalize_2nd_moment(self.embed(c.float()))
            glob = torch.cat([glob, emb.unsqueeze(1)], dim=-1)

        w = self.global_mlp(glob)                                           # [B, 1, d]
        if K > 0:
            use_pos = pos if self.cfg.use_pos else None
            w = torch.cat([self.mlp(local, pos=use_pos, mask=mask), w], dim=1)   # [B, K+1, d]
        w = w.float()                       # dtype contract (dnnlib/ops/__init__.py): w leaves in float32

        if update_w_avg is None:
            update_w_avg = self.training
        if update_w_avg and self.cfg.w_avg_beta is not None:
            self.w_avg.copy_(w.detach().mean(dim=(0, 1)).lerp(self.w_avg, self.cfg.w_avg_beta))

        w = w.unsqueeze(2).repeat([1, 1, self.num_ws, 1])                  # [B, K+1, num_ws, d]
        if truncation_psi != 1:
            assert self.cfg.w_avg_beta is not None, "truncation needs a tracked w_avg"
            if truncation_cutoff is None:
                w = self.w_avg.lerp(w, truncation_psi)
            else:
                w[:, :, :truncation_cutoff] = self.w_avg.lerp(w[:, :, :truncation_cutoff], truncation_psi)
        return w
