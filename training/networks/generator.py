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

    Generation goes through the generator's own methods, which own the latent position embeddings,
    the component-dropout mask, style/component mixing and truncation:
      `map(z, c)` -> ws [B, K+1, num_ws, d];  `synthesize(ws)` -> (img, maps);
      `generate(z, c)` -> (img, ws, maps), both halves with one dropout mask (training).
    `G(z)` returns the image; with `return_att` / `return_ws` it returns a tuple (img[, att][, ws]) like the
    official port, att being [B, K, L, N, R, R].
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

    def map(self,
            z: torch.Tensor,                                # [B, K+1, d]
            c: Optional[torch.Tensor] = None,               # [B, c_dim]
            truncation_psi: float = 1.0,
            truncation_cutoff: Optional[int] = None,
            update_w_avg: Optional[bool] = None,            # None = in training mode
            mask: Optional[torch.Tensor] = None,            # [B, K] component dropout
            style_mixing: float = 0.0,                      # probability of mixing a second z from a random slot on
            component_mixing: float = 0.0) -> torch.Tensor:  # probability of swapping components [cut:K]
        """z -> ws [B, K+1, num_ws, d]. The mixing latents (spec §8) never update the tracked w average."""
        kw = dict(pos=self.pos, mask=mask, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        ws = self.mapping(z, c, update_w_avg=update_w_avg, **kw)
        if self.num_ws > 1 and style_mixing > 0 and torch.rand([]).item() < style_mixing:
            cut = int(torch.randint(1, self.num_ws, []).item())
            ws2 = self.mapping(torch.randn_like(z), c, update_w_avg=False, **kw)
            ws = torch.cat([ws[:, :, :cut], ws2[:, :, cut:]], dim=2)
        if self.K > 1 and component_mixing > 0 and torch.rand([]).item() < component_mixing:
            cut = int(torch.randint(1, self.K, []).item())
            ws2 = self.mapping(torch.randn_like(z), c, update_w_avg=False, **kw)
            ws = torch.cat([ws[:, :cut], ws2[:, cut:self.K], ws[:, self.K:]], dim=1)
        return ws

    def synthesize(self,
                   ws: torch.Tensor,                        # [B, K+1, num_ws, d]
                   mask: Optional[torch.Tensor] = None,     # [B, K] component dropout
                   noise_mode: str = "random",
                   fused_modconv: Optional[bool] = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """ws -> image [B, C, R, R] and the attention maps, one [B, N, K, r, r] per layer."""
        return self.synthesis(ws, pos=self.pos, mask=mask, noise_mode=noise_mode, fused_modconv=fused_modconv)

    def generate(self,
                 z: Optional[torch.Tensor] = None,          # [B, K+1, d]
                 c: Optional[torch.Tensor] = None,
                 ws: Optional[torch.Tensor] = None,         # [B, K+1, num_ws, d]: skip the mapping
                 noise_mode: str = "random",
                 fused_modconv: Optional[bool] = None,
                 **map_kwargs) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """(image, ws, attention maps); in training one component-dropout mask serves mapping and synthesis."""
        if ws is None:
            if z is None:
                raise ValueError("pass z or ws")
            mask = self.component_mask(z.shape[0], z.device)
            ws = self.map(z, c, mask=mask, **map_kwargs)
        else:
            mask = self.component_mask(ws.shape[0], ws.device)
        img, maps = self.synthesize(ws, mask=mask, noise_mode=noise_mode, fused_modconv=fused_modconv)
        return img, ws, maps

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
        img, ws, maps = self.generate(z, c, ws, noise_mode=noise_mode, fused_modconv=fused_modconv,
                                      truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                                      update_w_avg=update_w_avg)
        if not (return_att or return_ws):
            return img
        out: tuple = (img,)
        if return_att:
            out += (stack_attention_maps(maps, self.img_resolution) if maps else torch.zeros([1], device=img.device),)
        if return_ws:
            out += (ws,)
        return out
