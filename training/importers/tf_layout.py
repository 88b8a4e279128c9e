"""Where each tensor of our networks lives in a TF GANformer snapshot, and how its layout differs.

A plan lists, for one of our networks, every tensor with the TF variable(s) it comes from and the
layout change between them (a `Layout`: both directions). Importing reads the plan one way, exporting
(used by the tests to build TF snapshots from our own networks) the other. The TF generator also
numbers its w slots differently from ours; `tf_w_slots` translates, so our synthesis network has no
TF-specific branch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

import numpy as np
import torch

from dnnlib.util import UserError
from training.networks import Discriminator, Generator
from training.networks.attention import BipartiteAttention


@dataclass(frozen=True)
class Layout:
    """A TF array <-> our tensor, as NumPy functions inverse to each other."""

    to_ours: Callable[[np.ndarray], np.ndarray]
    to_tf: Callable[[np.ndarray], np.ndarray]


SAME = Layout(lambda a: a, lambda a: a)
DENSE = Layout(lambda a: a.T, lambda a: a.T)                                          # [in, out] <-> [out, in]
CONV = Layout(lambda a: a.transpose(3, 2, 0, 1), lambda a: a.transpose(2, 3, 1, 0))   # [kh, kw, in, out] <-> [out, in, kh, kw]
# TF's upsample_conv_2d flips the kernel before its transposed conv; our up-sampling conv does not.
UPCONV = Layout(lambda a: CONV.to_ours(a[::-1, ::-1]), lambda a: CONV.to_tf(a)[::-1, ::-1])
STYLE_BIAS = Layout(lambda a: a + 1, lambda a: a - 1)     # TF adds 1 to the style at run time; our bias holds it
BATCH_OF_ONE = Layout(lambda a: a[0], lambda a: a[None])  # the constant input [1, C, 4, 4]
NOISE = Layout(lambda a: a[0, 0], lambda a: a[None, None])  # [1, 1, r, r]

# Our attention projection -> TF dense-layer suffix (`weight_<s>` / `bias_<s>`).
ATT_PROJECTIONS = (("to_queries", "query"), ("to_keys", "key"), ("to_values", "value"),
                   ("from_pos_map", "from_pos"), ("to_pos_map", "to_pos"), ("modulation", "out"))


@dataclass(frozen=True)
class _Entry:
    ours: str
    tf: tuple[str, ...]         # one variable, or one per k-means iteration (stacked on a new axis 0)
    layout: Layout = SAME


@dataclass
class Plan:
    """Every tensor of one network with its TF source, plus the TF variables created but never read."""

    entries: list[_Entry] = field(default_factory=list)
    unread: dict[str, tuple[int, ...]] = field(default_factory=dict)   # TF name -> shape (exported as zeros)
    optional: set[str] = field(default_factory=set)                    # unread TF names that may be absent

    def add(self, ours: str, tf: str, layout: Layout = SAME) -> None:
        self.entries.append(_Entry(ours, (tf,), layout))

    def dense(self, ours: str, scope: str, weight: str = "weight", bias: str = "bias", style: bool = False) -> None:
        self.add(f"{ours}.weight", f"{scope}/{weight}", DENSE)
        self.add(f"{ours}.bias", f"{scope}/{bias}", STYLE_BIAS if style else SAME)

    def attention(self, ours: str, scope: str, att: BipartiteAttention) -> None:
        for mine, theirs in ATT_PROJECTIONS:
            self.dense(f"{ours}.{mine}", scope, f"weight_{theirs}", f"bias_{theirs}")
        if att.kmeans:
            self.add(f"{ours}.centroids", f"{scope}/toasgn_init")
            # TF creates st_weights under iter_<i>/ in every k-means iteration.
            names = tuple(f"{scope}/iter_{i}/st_weights" for i in range(att.kmeans_iters if att.weights_per_iter else 1))
            self.entries.append(_Entry(f"{ours}.att_weight", names))


# ---------------------------------------------------------------------------------------------------
# Plans.

def _mapping_plan(plan: Plan, G: Generator) -> None:
    mlps = [("mapping.global_mlp", "mapping/global/", G.mapping.global_mlp)]
    if G.K > 0:
        mlps.insert(0, ("mapping.mlp", "mapping/", G.mapping.mlp))
    for ours, scope, mlp in mlps:
        for i in range(mlp.num_units):
            if mlp.self_attention:
                plan.attention(f"{ours}.sa{i}", f"{scope}AttLayer_{i}", getattr(mlp, f"sa{i}"))
            if mlp.resnet:
                for j in range(2):
                    plan.dense(f"{ours}.l{i}.fc{j}", f"{scope}Dense{i}_{j}")
            else:
                plan.dense(f"{ours}.l{i}", f"{scope}Dense{i}")
        if mlp.out_layer is not None:
            # TF names the extra layer after the last residual unit's index.
            plan.dense(f"{ours}.out_layer", f"{scope}Dense{mlp.num_units - 1}")


def _synthesis_layer_plan(plan: Plan, ours: str, scope: str, layer, noise_idx: Optional[int], up: bool) -> None:
    plan.add(f"{ours}.weight", f"{scope}/weight", UPCONV if up else CONV)
    plan.dense(f"{ours}.affine", scope, "mod_weight", "mod_bias", style=True)
    if layer.bias is not None:
        plan.add(f"{ours}.bias", f"{scope}/bias")
    if layer.noise_strength is not None:
        plan.add(f"{ours}.noise_strength", f"{scope}/noise_strength")
        plan.add(f"{ours}.noise_const", f"synthesis/noise{noise_idx}", NOISE)
    if layer.attn is not None:
        plan.attention(f"{ours}.attn", f"{scope}/AttLayer_l2n", layer.attn)


def generator_plan(G: Generator) -> Plan:
    plan = Plan()
    plan.add("pos", "ltnt_emb/emb")
    plan.add("mapping.w_avg", "dlatent_avg")
    _mapping_plan(plan, G)
    syn = G.synthesis
    for res in syn.block_resolutions:
        r, block = int(math.log2(res)), getattr(syn, f"b{res}")
        ours, scope = f"synthesis.b{res}", f"synthesis/{res}x{res}"
        if block.is_stem:
            plan.add(f"{ours}.const", f"{scope}/Const/const", BATCH_OF_ONE)
            _synthesis_layer_plan(plan, f"{ours}.conv1", f"{scope}/Conv", block.conv1, 0, False)
        else:
            # TF layer index (and noise variable) of conv0 / conv1 at resolution 2**r: 2r-5 / 2r-4.
            _synthesis_layer_plan(plan, f"{ours}.conv0", f"{scope}/Conv0_up", block.conv0, 2 * r - 5, True)
            _synthesis_layer_plan(plan, f"{ours}.conv1", f"{scope}/Conv1", block.conv1, 2 * r - 4, False)
        if block.conv_last is not None:
            _synthesis_layer_plan(plan, f"{ours}.conv_last", f"{scope}/ToRGB/extraLayer", block.conv_last, None, False)
        if block.torgb is not None:
            plan.add(f"{ours}.torgb.weight", f"{scope}/ToRGB/weight", CONV)
            plan.dense(f"{ours}.torgb.affine", f"{scope}/ToRGB", "mod_weight", "mod_bias", style=True)
            plan.add(f"{ours}.torgb.bias", f"{scope}/ToRGB/bias")
        if block.skip is not None:
            plan.add(f"{ours}.skip.weight", f"{scope}/Skip/weight", UPCONV)
    # TF creates one noise variable more than it has noisy layers (2R x 2R); it is never read.
    log2_res = int(math.log2(G.img_resolution))
    plan.unread[f"synthesis/noise{2 * log2_res - 3}"] = (1, 1, 2 * G.img_resolution, 2 * G.img_resolution)
    return plan


def discriminator_plan(D: Discriminator) -> Plan:
    plan = Plan()
    for res in D.block_resolutions:
        block, scope = getattr(D, f"b{res}"), f"{res}x{res}"
        if block.fromrgb is not None:
            plan.add(f"b{res}.fromrgb.weight", f"{scope}/FromRGB/weight", CONV)
            plan.add(f"b{res}.fromrgb.bias", f"{scope}/FromRGB/bias")
        for ours, theirs in (("conv0", "Conv0"), ("conv1", "Conv1_down")):
            plan.add(f"b{res}.{ours}.weight", f"{scope}/{theirs}/weight", CONV)   # no flip: a plain conv
            plan.add(f"b{res}.{ours}.bias", f"{scope}/{theirs}/bias")
        if block.skip is not None:
            plan.add(f"b{res}.skip.weight", f"{scope}/Skip/weight", CONV)
    if D.b4.fromrgb is not None:
        plan.add("b4.fromrgb.weight", "4x4/FromRGB/weight", CONV)
        plan.add("b4.fromrgb.bias", "4x4/FromRGB/bias")
    plan.add("b4.conv.weight", "4x4/Conv/weight", CONV)
    plan.add("b4.conv.bias", "4x4/Conv/bias")
    plan.dense("b4.fc", "4x4/Dense0")
    plan.dense("b4.out", "Output")
    plan.optional.add("ltnt_emb/emb")   # created when use_pos is passed to D, read only by D attention (off)
    return plan


# ---------------------------------------------------------------------------------------------------
# Both directions.

def import_state(plan: Plan, variables: Mapping[str, np.ndarray], where: str) -> dict[str, torch.Tensor]:
    """Our state dict from TF variables; every variable must be used, read-but-unused or optional."""
    out: dict[str, torch.Tensor] = {}
    for e in plan.entries:
        missing = [n for n in e.tf if n not in variables]
        if missing:
            raise UserError(f"{where}: TensorFlow variable {missing[0]} is missing "
                            f"(the pickle does not match its own configuration)")
        arrays = [e.layout.to_ours(variables[n]) for n in e.tf]
        value = arrays[0] if len(e.tf) == 1 else np.stack(arrays)
        # np.array copies into a fresh contiguous array and, unlike ascontiguousarray, keeps 0-d scalars.
        out[e.ours] = torch.from_numpy(np.array(value, dtype=np.float32))
    missing = sorted(set(plan.unread) - set(variables))
    if missing:
        raise UserError(f"{where}: TensorFlow variable {missing[0]} is missing (the pickle does not match its "
                        f"own configuration)")
    left = sorted(set(variables) - {n for e in plan.entries for n in e.tf} - set(plan.unread) - plan.optional)
    if left:
        more = f" and {len(left) - 3} more" if len(left) > 3 else ""
        raise UserError(f"{where}: TensorFlow variable(s) {', '.join(left[:3])}{more} have no counterpart "
                        f"in the imported network (an unsupported TF option?)")
    return out


def export_state(plan: Plan, state: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """TF variables from our state dict (the inverse of import_state; unread variables are zeros)."""
    out: dict[str, np.ndarray] = {}
    for e in plan.entries:
        value = state[e.ours].detach().cpu().numpy()
        for name, part in zip(e.tf, [value] if len(e.tf) == 1 else list(value)):
            out[name] = np.array(e.layout.to_tf(part), dtype=np.float32)
    out.update({name: np.zeros(shape, np.float32) for name, shape in plan.unread.items()})
    return out


# ---------------------------------------------------------------------------------------------------
# w slots.

def tf_w_slots(G: Generator) -> list[int]:
    """For each of our w slots, the TF slot holding the same layer's w.

    Ours are consecutive in layer order (a ToRGB reads the slot after its block's convs). TF keeps one
    slot per layer index, 2 log2(R) - 1 in all: slot 0 feeds a latent stem (unused with the constant
    input), the 4x4 conv reads 1, conv0 / conv1 at 2**r read 2r-4 / 2r-3, the extra last conv shares
    conv1's slot and a ToRGB reads 2r-2, the slot of the next block's conv0.
    """
    slots: list[int] = []
    for res in G.synthesis.block_resolutions:
        r, block = int(math.log2(res)), getattr(G.synthesis, f"b{res}")
        if block.latent_stem:
            raise UserError("the TF importer does not support a latent stem")
        slots += [1] if block.is_stem else [2 * r - 4, 2 * r - 3]
        if block.conv_last is not None:
            slots.append(2 * r - 3)
    slots.append(2 * int(math.log2(G.img_resolution)) - 2)   # the last ToRGB
    assert len(slots) == G.num_ws, (len(slots), G.num_ws)
    return slots


def ws_from_tf(ws: torch.Tensor, G: Generator) -> torch.Tensor:
    """TF ws [B, K+1, 2 log2(R) - 1, d] -> ours [B, K+1, num_ws, d]."""
    return ws[:, :, tf_w_slots(G)]


def cutoff_from_tf(cutoff: Optional[int], G: Generator) -> Optional[int]:
    """A TF truncation cutoff (TF slots below it are truncated) as a count of our slots."""
    return None if cutoff is None else sum(s < cutoff for s in tf_w_slots(G))
