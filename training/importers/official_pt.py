"""Import networks of the official GANformer PyTorch port (dorarad/gansformer, pytorch_version/).

Two sources: a reference folder (`config.json` with the constructor kwargs + `G_state.pt`/`D_state.pt`)
and the port's own `network-snapshot-*.pkl` (read by `safe_pickle`, which never runs pickle code; the
unpickled snapshot arrives here through `pickles.load_pickle_networks`).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from dnnlib.util import UserError
from training.importers.safe_pickle import ModuleStub
from training.importers.state import load_exact
from training.networks.config import (AttentionConfig, DiscriminatorConfig, GeneratorConfig, MappingConfig, SynthesisConfig)
from training.networks import Discriminator, Generator

# Official constructor kwargs that select nothing we need to mirror (optimiser settings, unused knobs).
_IGNORED = {"reg_interval", "opt_args", "class_name", "crop_ratio", "act", "resample_kernel", "embed_dim",
            "num_broadcast", "shared_dim"}


def _take(kwargs: dict, key: str, default: Any) -> Any:
    return kwargs.pop(key) if key in kwargs else default


def _reject_leftovers(kwargs: dict, where: str) -> None:
    left = {k: v for k, v in kwargs.items() if k not in _IGNORED}
    # Keys at their harmless defaults are fine; anything else would silently change behaviour.
    harmless = {"shared": False, "ltnt_gate": False, "img_gate": False, "mapping_kwargs": {}, "block_kwargs": {},
                "crop_ratio": None}
    bad = [k for k, v in left.items() if harmless.get(k, object()) != v]
    if bad:
        raise UserError(f"official {where} kwargs not supported: {', '.join(sorted(bad))}")


def generator_config(G_kwargs: Mapping[str, Any]) -> GeneratorConfig:
    """Translate the official `Generator(**G_kwargs)` into our config (official defaults where absent)."""
    kw = json.loads(json.dumps(dict(G_kwargs)))   # deep copy
    mk, sk = dict(_take(kw, "mapping_kwargs", {})), dict(_take(kw, "synthesis_kwargs", {}))
    z_dim, w_dim, k = kw.pop("z_dim"), kw.pop("w_dim"), kw.pop("k")
    if z_dim != w_dim:
        raise UserError(f"z_dim ({z_dim}) != w_dim ({w_dim}) is not supported")
    heads = sk.get("num_heads", 1)
    attention = AttentionConfig(
        num_heads=heads, norm=_take(sk, "norm", None), integration=_take(sk, "integration", "add"),
        kmeans=_take(sk, "kmeans", False), kmeans_iters=_take(sk, "kmeans_iters", 1),
        iterative=_take(sk, "iterative", False), attention_dropout=_take(sk, "attention_dropout", 0.12),
        ltnt_gate=_take(sk, "ltnt_gate", False), img_gate=_take(sk, "img_gate", False),
        pos_type=_take(sk, "pos_type", "sinus"), pos_init=_take(sk, "pos_init", "uniform"),
        pos_dim=_take(sk, "pos_dim", None), pos_directions_num=_take(sk, "pos_directions_num", 2),
        use_pos=_take(sk, "use_pos", False))
    sk.pop("num_heads", None)
    synthesis = SynthesisConfig(
        architecture=_take(sk, "architecture", "skip"), channel_base=_take(sk, "channel_base", 32768),
        channel_max=_take(sk, "channel_max", 512), style=_take(sk, "style", True),
        latent_stem=_take(sk, "latent_stem", False), local_noise=_take(sk, "local_noise", True),
        transformer=_take(sk, "transformer", False), start_res=_take(sk, "start_res", 0),
        end_res=_take(sk, "end_res", 20), conv_last=True, attention=attention)
    mapping = MappingConfig(
        num_layers=_take(mk, "num_layers", 8), layer_dim=_take(mk, "layer_dim", None), lrmul=_take(mk, "lrmul", 0.01),
        w_avg_beta=_take(mk, "w_avg_beta", 0.995), resnet=_take(mk, "resnet", False),
        ltnt2ltnt=_take(mk, "ltnt2ltnt", False), use_pos=_take(mk, "use_pos", False),
        normalize_global=_take(mk, "normalize_global", True), num_heads=_take(mk, "num_heads", 1),
        attention_dropout=_take(mk, "attention_dropout", 0.12))
    transformer_mapping = _take(mk, "transformer", False)
    if transformer_mapping != (k > 1):
        raise UserError(f"official mapping transformer={transformer_mapping} with k={k} is not a valid generator")
    cfg = GeneratorConfig(img_resolution=kw.pop("img_resolution"), img_channels=kw.pop("img_channels", 3),
                          c_dim=kw.pop("c_dim", 0), z_dim=z_dim, components_num=k - 1,
                          component_dropout=kw.pop("component_dropout", 0.0), mapping=mapping, synthesis=synthesis)
    _reject_leftovers(kw, "G")
    _reject_leftovers(mk, "G mapping")
    _reject_leftovers(sk, "G synthesis")
    cfg.validate()
    return cfg


def discriminator_config(D_kwargs: Mapping[str, Any]) -> DiscriminatorConfig:
    kw = json.loads(json.dumps(dict(D_kwargs)))
    ek = dict(_take(kw, "epilogue_kwargs", {}))
    cfg = DiscriminatorConfig(
        img_resolution=kw.pop("img_resolution"), img_channels=kw.pop("img_channels", 3), c_dim=kw.pop("c_dim", 0),
        architecture=_take(kw, "architecture", "resnet"), channel_base=_take(kw, "channel_base", 32768),
        channel_max=_take(kw, "channel_max", 512), mbstd_group_size=_take(ek, "mbstd_group_size", 4),
        mbstd_num_channels=_take(ek, "mbstd_num_channels", 1))
    kw.pop("mapping_kwargs", None)    # accepted and ignored by the official constructor
    _reject_leftovers(kw, "D")
    _reject_leftovers(ek, "D epilogue")
    cfg.validate()
    return cfg


# Official parameter names -> ours. Buffers we recompute (filters, grid encodings) are dropped.
_RENAMES = [
    (re.compile(r"\.biasAct\.bias$"), ".bias"),
    (re.compile(r"\.transformer\."), ".attn."),
    (re.compile(r"^synthesis\.b(\d+)\.conv_stem\."), r"synthesis.b\1.stem."),
]
_DROPPED = re.compile(r"(^|\.)(resample_kernel|grid_pos)$")


def convert_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name, value in sd.items():
        if _DROPPED.search(name):
            continue
        for pattern, repl in _RENAMES:
            name = pattern.sub(repl, name)
        out[name] = value
    return out


def load_into(net: torch.nn.Module, official_sd: Mapping[str, torch.Tensor], what: str) -> None:
    """Copy an official state dict into our network; every tensor must be matched exactly once."""
    load_exact(net, convert_state_dict(official_sd), what)


def _read_tensor_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(f"reference folder is missing {path.name}: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's input problem
        raise UserError(f"cannot read {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise UserError(f"{path} is not a dict of tensors")
    return data


def load_reference_folder(folder: str | Path, overrides: bool = False) -> dict[str, Any]:
    """Build G and D from a reference folder; `overrides` applies the *_perturbed_overrides.pt files.

    Returns dict(G=..., D=..., G_cfg=..., D_cfg=..., config=<raw config.json>).
    """
    folder = Path(folder)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise UserError(f"reference folder is missing config.json: {folder}")
    try:
        raw = json.loads(cfg_path.read_text())
        G_kwargs, D_kwargs = raw["G_kwargs"], raw["D_kwargs"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{cfg_path} is not an official config (needs G_kwargs and D_kwargs): {e}") from None
    try:
        G_cfg, D_cfg = generator_config(G_kwargs), discriminator_config(D_kwargs)
    except KeyError as e:
        raise UserError(f"{cfg_path}: the official config lacks {e}") from None
    except (TypeError, ValueError, AttributeError) as e:
        raise UserError(f"{cfg_path}: malformed official config ({e})") from None
    G, D = Generator(G_cfg), Discriminator(D_cfg)
    for net, name in ((G, "G"), (D, "D")):
        sd = _read_tensor_file(folder / f"{name}_state.pt")
        if overrides:
            sd.update(_read_tensor_file(folder / f"{name}_perturbed_overrides.pt"))
        load_into(net, sd, f"{folder.name}/{name}_state.pt")
    return dict(G=G.eval().requires_grad_(False), D=D.eval().requires_grad_(False), G_cfg=G_cfg, D_cfg=D_cfg,
                config=raw)


def looks_like_reference_folder(path: str | Path) -> bool:
    """A folder meant as a reference model (possibly incomplete), not one of our run folders."""
    p = Path(path)
    if (p / "G_state.pt").exists() or (p / "D_state.pt").exists():
        return True
    try:
        return "G_kwargs" in json.loads((p / "config.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


def import_snapshot(data: Any, path: str | Path) -> dict[str, Any]:
    """G, D and G_ema from an unpickled official PyTorch snapshot (a dict of `ModuleStub`s) read from `path`."""
    name = Path(path).name
    if not (isinstance(data, dict) and all(isinstance(data.get(k), ModuleStub) for k in ("G", "D", "Gs"))):
        raise UserError(f"{path} is a pickle, but not a GANformer PyTorch snapshot (expected G, D and Gs networks)")
    out: dict[str, Any] = {"extra": {"source": "official-pytorch-pickle"}}
    for ours, theirs in (("G", "G"), ("G_ema", "Gs"), ("D", "D")):
        stub: ModuleStub = data[theirs]
        kwargs = stub.init_kwargs
        if not kwargs:
            raise UserError(f"{path}: network {theirs} carries no constructor arguments")
        net: torch.nn.Module = (Discriminator(discriminator_config(kwargs)) if ours == "D"
                                else Generator(generator_config(kwargs)))
        load_into(net, stub.tensors(), f"{name}:{theirs}")
        out[ours] = net.eval().requires_grad_(False)
    return out
