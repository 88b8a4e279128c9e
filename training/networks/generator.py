"""The generator (mapping + synthesis) and the network constructors from typed configs."""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import nn

from training.networks.config import GeneratorConfig
from training.networks.discriminator import Discriminator
from training.networks.mapping import MappingNetwork
from training.networks.synthesis import SynthesisNetwork, stack_attention_maps

__all__ = ["Generator", "Discriminator"]


class Generator(nn.Module):
    """z [B, K+1, d] (local latents first, global last) -> image [B, C, R, R].

    `G(z)` returns the image; with `return_att` / `return_ws` it returns a tuple
    (img[, att][, ws]) like the official port, att being [B, K, L, N, R, R].
    """

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.z_dim = self.w_dim = cfg.z_dim
        self.K, self.k, self.c_dim = cfg.components_num, cfg.k, cfg.c_dim
        self.img_resolution, self.img_channels = cfg.img_resolution, cfg.img_channels
        # Learned latent position embeddings (used by the mapping self-attention and attention keys).
        has_pos = cfg.components_num > 0 and not cfg.synthesis.kgan
        self.pos = nn.Parameter(torch.rand([cfg.components_num, cfg.z_dim])) if has_pos else None
        self.synthesis = SynthesisNetwork(cfg.z_dim, cfg.components_num, cfg.img_resolution, cfg.img_channels, cfg.synthesis)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(cfg.z_dim, cfg.z_dim, cfg.components_num, cfg.c_dim, self.num_ws, cfg.mapping)

    @property
    def input_shape(self) -> list:
        return [None, self.k, self.z_dim]

    def component_mask(self, batch: int, device: torch.device) -> Optional[torch.Tensor]:
        """Component dropout [B, K] during training (None = keep every latent)."""
        p = self.cfg.component_dropout
        if not self.training or p == 0 or self.K == 0:
            return None
        return (torch.rand([batch, self.K], device=device) >= p).float()

    def forward(self,
                z: Optional[torch.Tensor] = None,           # [B, K+1, d]
                c: Optional[torch.Tensor] = None,           # [B, c_dim]
                ws: Optional[torch.Tensor] = None,          # [B, K+1, num_ws, d]: skip the mapping
                truncation_psi: float = 1.0,
                truncation_cutoff: Optional[int] = None,
                noise_mode: str = "random",
                fused_modconv: Optional[bool] = None,
                return_att: bool = False,
                return_ws: bool = False,
                update_w_avg: Optional[bool] = None) -> Union[torch.Tensor, tuple]:
        if ws is None:
            if z is None:
                raise ValueError("pass z or ws")
            mask = self.component_mask(z.shape[0], z.device)
            ws = self.mapping(z, c, pos=self.pos, mask=mask, truncation_psi=truncation_psi,
                              truncation_cutoff=truncation_cutoff, update_w_avg=update_w_avg)
        else:
            mask = self.component_mask(ws.shape[0], ws.device)
        img, maps = self.synthesis(ws, pos=self.pos, mask=mask, noise_mode=noise_mode, fused_modconv=fused_modconv)
        if not (return_att or return_ws):
            return img
        out: tuple = (img,)
        if return_att:
            out += (stack_attention_maps(maps, self.img_resolution) if maps else torch.zeros([1], device=img.device),)
        if return_ws:
            out += (ws,)
        return out
