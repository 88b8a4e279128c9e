"""The bipartite transformer layer (spec §5; paper §3.1) and grid positional encodings.

Notation: B batch, F `from` elements (image positions), T `to` elements (latents), N heads,
H head width, C layer width (= N * H).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from training.networks.config import AttentionConfig
from training.networks.layers import FullyConnected


# ---------------------------------------------------------------------------------------------------
# Grid positional encodings [r, r, p].

def sinusoidal_grid(res: int, dim: int, directions: int = 2) -> torch.Tensor:
    """Transformer-style sinusoids over the grid. Two directions: [sin x, cos x, sin y, cos y] blocks."""
    coords = torch.linspace(-1.0, 1.0, res)
    if directions == 2:
        i = torch.arange(dim // 4).float()
        c = coords.unsqueeze(-1)                                   # [r, 1]
        freq = torch.pow(10000.0, 4 * i / dim)
        sin, cos = torch.sin(c / freq), torch.cos(c / freq)        # [r, dim/4]; index = x or y coordinate
        along_x = lambda t: t.unsqueeze(0).tile([res, 1, 1])       # varies with the column index
        along_y = lambda t: t.unsqueeze(1).tile([1, res, 1])       # varies with the row index
        return torch.cat([along_x(sin), along_x(cos), along_y(sin), along_y(cos)], dim=-1)
    proj = _direction_projections(res, directions)                 # [r, r, n, 1]
    i = torch.arange(dim // (2 * directions)).float()
    freq = torch.pow(10000.0, 2 * directions * i / dim)
    return torch.cat([torch.sin(proj / freq), torch.cos(proj / freq)], dim=-1).reshape(res, res, dim)


def _direction_projections(res: int, directions: int) -> torch.Tensor:
    """Each grid point's coordinate along `directions` evenly spaced angles in [0, pi): [r, r, n, 1]."""
    theta = torch.arange(0, math.pi, step=math.pi / directions)
    dirs = torch.stack([torch.cos(theta), torch.sin(theta)], dim=-1)   # [n, 2]
    c = torch.linspace(-1.0, 1.0, res)
    xy = torch.stack([c.unsqueeze(0).tile([res, 1]), c.unsqueeze(1).tile([1, res])], dim=-1)
    return (xy.unsqueeze(2) * dirs).sum(dim=-1, keepdim=True)


class GridEncoding(nn.Module):
    """Positional encoding of an r x r grid. 'sinus' is a fixed buffer; the other types are trained."""

    def __init__(self, res: int, dim: int, pos_type: str = "sinus", init: str = "uniform", directions: int = 2):
        super().__init__()
        self.res, self.dim, self.pos_type = res, dim, pos_type
        rand = torch.rand if init == "uniform" else torch.randn
        if pos_type == "sinus":
            self.register_buffer("grid_pos", sinusoidal_grid(res, dim, directions), persistent=False)
        elif pos_type == "linear":
            self.register_buffer("proj", _direction_projections(res, directions), persistent=False)
            self.dir_emb = nn.Parameter(torch.rand([directions, dim // directions]))
        elif pos_type == "trainable":
            self.x_emb = nn.Parameter(rand([res, dim // 2]))
            self.y_emb = nn.Parameter(rand([res, dim // 2]))
        else:  # trainable2d
            self.emb = nn.Parameter(rand([res, res, dim]))

    def forward(self) -> torch.Tensor:
        r = self.res
        if self.pos_type == "sinus":
            return self.grid_pos
        if self.pos_type == "linear":
            return (self.proj * self.dir_emb).reshape(r, r, self.dim)
        if self.pos_type == "trainable":
            return torch.cat([self.x_emb.unsqueeze(0).tile([r, 1, 1]), self.y_emb.unsqueeze(1).tile([1, r, 1])], -1)
        return self.emb


# ---------------------------------------------------------------------------------------------------
# The bipartite attention layer.

def _heads(x: torch.Tensor, n: int, length: int, width: int) -> torch.Tensor:
    """[B*L, n*width] -> [B, n, L, width]: heads are contiguous chunks of the feature vector."""
    return x.reshape(-1, length, n, width).permute(0, 2, 1, 3)


def _pool(weights: torch.Tensor, elements: tuple[torch.Tensor, Optional[torch.Tensor]]) -> torch.Tensor:
    """Centroids [B, N, T, 2H] as sums of the elements weighted by [B, N, T, F]; elements are one tensor
    [B, N, F, 2H] or its two halves along the last axis (the second broadcast over the batch)."""
    first, second = elements
    if second is None:
        return weights.matmul(first)
    return torch.cat([weights.matmul(first), weights.matmul(second)], dim=-1)


def _against(elements: tuple[torch.Tensor, Optional[torch.Tensor]], centroids_t: torch.Tensor) -> torch.Tensor:
    """Logits [B, N, F, T]: the elements (as in `_pool`) times the transposed centroids [B, N, 2H, T]."""
    first, second = elements
    if second is None:
        return first.matmul(centroids_t)
    w = first.shape[-1]
    return first.matmul(centroids_t[:, :, :w]) + second.matmul(centroids_t[:, :, w:])


def _feature_norm(x: torch.Tensor, length: int, integration: str, norm: Optional[str]) -> torch.Tensor:
    """Normalise features without a learned affine; the integration re-modulates them (spec §5)."""
    if norm is None:
        return x
    shape = x.shape
    x = x.reshape(-1, length, shape[-1]).float()                 # [B, F, C]
    axis = 1 if norm == "instance" else 2                        # instance: over positions; layer/batch: channels
    if integration in ("add", "both"):
        x = x - x.mean(dim=axis, keepdim=True)
    if integration in ("mul", "both"):
        x = x * torch.rsqrt(x.square().mean(dim=axis, keepdim=True) + 1e-8)
    return x.reshape(shape)


class BipartiteAttention(nn.Module):
    """`from` elements attend to `to` elements; the attended values modulate the `from` features.

    With from = image features and to = latents this is the GANformer's top-down (simplex) attention;
    with `kmeans` the logits compare positions to learned (or refined) centroids ("duplex" in the
    official code). With from = to it is self-attention (latents in the mapping network, SAGAN).
    """

    def __init__(self,
                 dim: int,                      # Layer width C (queries, keys, values).
                 from_dim: int,                 # Width of the `from` elements (must equal dim: they are modulated).
                 to_dim: int,                   # Width of the `to` elements.
                 from_len: int,                 # F
                 to_len: int,                   # T
                 pos_dim: int,                  # Width of the positional encodings of both sides.
                 cfg: AttentionConfig):
        super().__init__()
        if dim % cfg.num_heads:
            raise ValueError(f"attention width {dim} is not divisible by {cfg.num_heads} heads")
        assert from_dim == dim, "the modulated `from` features must have the layer width"
        self.dim, self.from_len, self.to_len, self.pos_dim = dim, from_len, to_len, pos_dim
        self.num_heads = cfg.num_heads
        self.head_dim = dim // cfg.num_heads
        self.norm, self.integration = cfg.norm, cfg.integration
        self.kmeans, self.kmeans_iters, self.iterative = cfg.kmeans, cfg.kmeans_iters, cfg.iterative
        self.dropout = cfg.attention_dropout

        self.to_queries = FullyConnected(from_dim, dim)
        self.to_keys = FullyConnected(to_dim, dim)      # unused by k-means attention (kept: official layout)
        self.to_values = FullyConnected(to_dim, dim)
        self.from_pos_map = FullyConnected(pos_dim, dim)
        self.to_pos_map = FullyConnected(pos_dim, dim)
        self.modulation = FullyConnected(dim, 2 * dim if cfg.integration == "both" else dim)
        self.to_gate = self.to_gate_pos = self.from_gate = self.from_gate_pos = None
        if cfg.ltnt_gate:
            self.to_gate = FullyConnected(to_dim, cfg.num_heads)
            self.to_gate_pos = FullyConnected(pos_dim, cfg.num_heads)
        if cfg.img_gate:
            self.from_gate = FullyConnected(from_dim, cfg.num_heads)
            self.from_gate_pos = FullyConnected(pos_dim, cfg.num_heads)
        self.weights_per_iter = cfg.kmeans and cfg.kmeans_weights_per_iter
        if cfg.kmeans:
            centroid_dim = 2 * self.head_dim               # [content ; position] halves of a query
            # Logit weights over the centroid dimensions: one set, or one per k-means iteration.
            per_iter = [cfg.kmeans_iters] if self.weights_per_iter else []
            self.att_weight = nn.Parameter(torch.ones(*per_iter, cfg.num_heads, 1, centroid_dim))
            self.centroids = nn.Parameter(torch.randn([1, cfg.num_heads, to_len, centroid_dim]))

    # -- pieces --------------------------------------------------------------------------------------

    def _softmax(self, logits: torch.Tensor) -> torch.Tensor:
        """Softmax over latents, then dropout of cells and of whole latents (rate dropout/2 each)."""
        probs = torch.softmax(logits.float(), dim=-1)                           # [B, N, F, T], float32
        if self.training and self.dropout > 0:
            rate = self.dropout / 2
            keep_cells = torch.rand_like(probs) >= rate
            keep_latents = torch.rand([*probs.shape[:2], 1, probs.shape[3]], device=probs.device) >= rate
            # both dropouts and their 1 / (1 - rate) rescalings as one mask: one product to differentiate
            probs = probs * ((keep_cells & keep_latents).to(probs.dtype) * (1 / (1 - rate)) ** 2)
        return probs

    def _gate(self, probs: torch.Tensor, gate_fc: nn.Module, pos_fc: nn.Module, x2d: torch.Tensor,
              pos2d: Optional[torch.Tensor], on_from: bool, length: int) -> torch.Tensor:
        """Scale the probabilities by a sigmoid gate per `from` (image) or per `to` (latent) element."""
        gate = gate_fc(x2d).reshape(-1, length, self.num_heads)                 # [B, L, N]
        if pos2d is not None:
            gate = gate + pos_fc(pos2d)                                         # [L, N], the same for every sample
        gate = torch.sigmoid(gate + (1 if on_from else 0)).permute(0, 2, 1)     # [B, N, L]
        return probs * (gate.unsqueeze(-1) if on_from else gate.unsqueeze(-2))

    def _carried_centroids(self, assignments: torch.Tensor,
                           elements: tuple[torch.Tensor, Optional[torch.Tensor]]) -> torch.Tensor:
        """Centroids from the previous layer's assignments [B, N, T, F'], up-sampled to F positions."""
        F_prev, F = assignments.shape[-1], self.from_len
        if F_prev != F:
            s_prev, s = math.isqrt(F_prev), math.isqrt(F)
            a = assignments.reshape(-1, 1, s_prev, s_prev)
            a = a.repeat_interleave(s // s_prev, -2).repeat_interleave(s // s_prev, -1)
            assignments = a.reshape(*assignments.shape[:3], F) / (F // F_prev)
        return _pool(assignments, elements)

    def _integrate(self, x2d: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
        x2d = _feature_norm(x2d, self.from_len, self.integration, self.norm)
        control = self.modulation(control)
        if self.integration == "mul":
            return x2d * (control + 1)
        if self.integration == "add":
            return x2d + control
        gain, bias = control.chunk(2, dim=-1)                                    # "both": halves
        return x2d * (gain + 1) + bias

    # -- forward -------------------------------------------------------------------------------------

    def forward(self,
                x: torch.Tensor,                            # [B, F, from_dim] (or [B*F, from_dim])
                y: torch.Tensor,                            # [B, T, to_dim] (or [B*T, to_dim])
                x_pos: Optional[torch.Tensor] = None,       # [F, pos_dim]
                y_pos: Optional[torch.Tensor] = None,       # [T, pos_dim]
                mask: Optional[torch.Tensor] = None,        # [B, T], 0 = latent dropped
                assignments: Optional[torch.Tensor] = None  # [B, N, T, F'] carried (iterative k-means)
                ) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """Returns the modulated `from` features (shape of x), probabilities [B, N, F, T], and the assignments
        the next layer starts from (iterative k-means; None otherwise)."""
        x_shape = x.shape
        F, T, N, H = self.from_len, self.to_len, self.num_heads, self.head_dim
        x2d, y2d = x.reshape(-1, x_shape[-1]), y.reshape(-1, y.shape[-1])
        B = x2d.shape[0] // F
        # Position maps are computed once per position and broadcast over the batch: the same rows as
        # mapping the positions tiled B times, in 1/B of the work.
        x_pos2d = x_pos.reshape(F, -1) if x_pos is not None else None
        y_pos2d = y_pos.reshape(T, -1) if y_pos is not None else None

        queries = self.to_queries(x2d)                                          # [B*F, C], the content part
        values = _heads(self.to_values(y2d), N, T, H)                           # [B, N, T, H]
        pos_queries = self.from_pos_map(x_pos2d) if x_pos2d is not None else None   # [F, C]

        if self.kmeans:
            # An element is [content ; position] queries (2C wide), split into heads of 2H (the official layout:
            # with several heads, a head holds consecutive features of that concatenation). With one head it is
            # kept as two halves, content [B, 1, F, C] and position [1, 1, F, C] shared by the batch, and logits
            # and centroid updates take one product per half; with more, the concatenation is formed.
            if pos_queries is None:
                pos_queries = queries.new_zeros([F, self.dim])
            if N == 1:
                elements = (queries.reshape(B, 1, F, -1), pos_queries.reshape(1, 1, F, -1))
            else:
                both = torch.cat([queries, pos_queries.repeat(B, 1)], dim=-1)
                elements = (_heads(both, N, F, 2 * H), None)
            if self.iterative and assignments is not None:
                centroids = self._carried_centroids(assignments, elements)
            else:
                centroids = self.centroids.tile([B, 1, 1, 1])                   # [B, N, T, 2H]
            probs = None
            for i in range(self.kmeans_iters):
                if i > 0:
                    centroids = _pool(self._assignments(probs), elements)
                weight = self.att_weight[i] if self.weights_per_iter else self.att_weight
                # (e * w) . c / sqrt(H) as e . (c * w / sqrt(H)): the scaling on the T centroids, not the F elements
                scaled = (centroids * (weight / math.sqrt(H))).transpose(2, 3)   # [B, N, 2H, T]
                logits = _against(elements, scaled)
                probs = self._softmax(self._mask(logits, mask))
        else:
            if pos_queries is not None:
                queries = (queries.reshape(-1, F, self.dim) + pos_queries).reshape(-1, self.dim)
            keys = self.to_keys(y2d)
            if y_pos2d is not None:
                keys = (keys.reshape(-1, T, self.dim) + self.to_pos_map(y_pos2d)).reshape(-1, self.dim)
            logits = _heads(queries, N, F, H).matmul(_heads(keys, N, T, H).transpose(2, 3)) / math.sqrt(H)
            probs = self._softmax(self._mask(logits, mask))                     # [B, N, F, T]

        if self.to_gate is not None:
            probs = self._gate(probs, self.to_gate, self.to_gate_pos, y2d, y_pos2d, False, T)
        if self.from_gate is not None:
            probs = self._gate(probs, self.from_gate, self.from_gate_pos, x2d, x_pos2d, True, F)
        new_assignments = self._assignments(probs) if self.kmeans and self.iterative else None   # for the next layer

        control = probs.matmul(values).permute(0, 2, 1, 3).reshape(-1, self.dim)   # [B*F, N*H]
        out = self._integrate(x2d, control).reshape(x_shape).to(x.dtype)        # float32 norm, x's dtype out
        return out, probs, new_assignments

    @staticmethod
    def _assignments(probs: torch.Tensor) -> torch.Tensor:
        """Attention normalised over positions: each latent's weights over the image [B, N, T, F]."""
        return (probs / (probs.sum(dim=-2, keepdim=True) + 1e-8)).permute(0, 1, 3, 2)

    @staticmethod
    def _mask(logits: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        if mask is None:
            return logits
        return logits + (1 - mask.to(torch.int32)).to(logits.dtype).reshape(mask.shape[0], 1, 1, -1) * -10000.0
