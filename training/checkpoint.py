"""Our checkpoint format (its one writer and reader), and one entry point that loads a network from any
supported source.

A checkpoint is one `.safetensors` file: tensors named `<net>.<param>` for nets G, D, G_ema, and the
JSON description (format, version, each net's typed config, free-form extras) in the safetensors header's
metadata. A release snapshot (FORMAT) holds what sampling needs: G_ema and its config. A training state
(STATE_FORMAT, training/snapshots.py) is the same layout holding the rest: G, D, the optimisers' tensors
and the counters; no network is stored twice. Files are written to a temporary name and renamed, so a
crash never leaves a file that loads but is incomplete. Nothing in them is executable.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from dnnlib.util import UserError, atomic_path
from training.networks.config import DiscriminatorConfig, GeneratorConfig, from_dict, to_dict
from training.networks import Discriminator, Generator

FORMAT = "ganformer-pytorch"
STATE_FORMAT = "ganformer-training-state"
FORMAT_VERSION = 1
KIMG_RE = r"(\d+(?:\.\d+)?)"       # the kimg_tag of a file name
SNAPSHOT_RE = re.compile(rf"network-snapshot-{KIMG_RE}\.safetensors$")


def kimg_tag(nimg: int) -> str:
    """A point of training in file names: kimg in 6 digits ('000015'), with 3 decimals when not whole
    ('000000.512', runs with short ticks), so no two points share a name and whole-kimg names keep their form."""
    return f"{nimg // 1000:06d}" + (f".{nimg % 1000:03d}" if nimg % 1000 else "")


NETS = ("G", "D", "G_ema")


def save_checkpoint(path: str | os.PathLike, nets: Mapping[str, torch.nn.Module], extra: Optional[dict] = None, *,
                    fmt: str = FORMAT, tensors: Optional[dict[str, torch.Tensor]] = None,
                    meta: Optional[dict[str, str]] = None) -> None:
    """The one checkpoint writer: nets (some of G, D, G_ema) with their configs, plus any further
    `tensors` and header `meta` (a training state's optimisers and counters), atomically."""
    from safetensors.torch import save_file

    flat: dict[str, torch.Tensor] = {}
    configs = {}
    for name, net in nets.items():
        if name not in NETS:
            raise ValueError(f"unknown network name {name!r}")
        configs[name] = to_dict(net.cfg)
        for key, value in net.state_dict().items():
            flat[f"{name}.{key}"] = value.detach().to("cpu").clone().contiguous()   # G and G_ema may share
    for key, value in (tensors or {}).items():
        if key.partition(".")[0] in NETS:
            raise ValueError(f"tensor name {key!r} collides with a network")
        flat[key] = value.detach().to("cpu").clone().contiguous()
    header = {"format": fmt, "format_version": str(FORMAT_VERSION), "configs": json.dumps(configs),
              "extra": json.dumps(extra or {}), **(meta or {})}
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata=header)


def read_safetensors(path: str | os.PathLike, fmt: str, what: str) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(header metadata, tensors) of a safetensors file whose metadata names format `fmt`; else a UserError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        flat = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"cannot read {what} {path}: {e}") from None
    if meta.get("format") != fmt:
        raise UserError(f"{path} is a safetensors file but not a {what}")
    return meta, flat


def read_checkpoint(path: str | os.PathLike, fmt: str = FORMAT, rest: Optional[dict] = None
                    ) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any], dict]:
    """Read a checkpoint: ({net: state_dict}, {net: config dict}, extra). With `rest`, the header and the
    tensors of no network go there ({"meta": ..., "tensors": ...}); without, such tensors are an error."""
    path = Path(path)
    what = "GANformer checkpoint" if fmt == FORMAT else "training state"
    meta, flat = read_safetensors(path, fmt, what)
    try:
        version = int(meta.get("format_version", "0"))
        configs, extra = json.loads(meta["configs"]), json.loads(meta.get("extra", "{}"))
        if not isinstance(configs, dict) or not all(isinstance(c, dict) for c in configs.values()):
            raise ValueError("configs is not an object of objects")
    except (KeyError, ValueError) as e:
        raise UserError(f"{path}: damaged {what} metadata ({type(e).__name__}: {e})") from None
    if not 1 <= version <= FORMAT_VERSION:
        raise UserError(f"{path} has checkpoint format {version}; this code reads 1 to {FORMAT_VERSION}")
    states: dict[str, dict[str, torch.Tensor]] = {name: {} for name in configs}
    others: dict[str, torch.Tensor] = {}
    for key, value in flat.items():
        net, _, param = key.partition(".")
        if net in states:
            states[net][param] = value
        elif rest is not None:
            others[key] = value
        else:
            raise UserError(f"{path}: tensor {key} belongs to no network in the checkpoint")
    if rest is not None:
        rest.update(meta=meta, tensors=others)
    return states, configs, extra


def _build(name: str, cfg: dict, state: dict[str, torch.Tensor], where: str) -> torch.nn.Module:
    if name not in ("G", "D", "G_ema"):
        raise UserError(f"{where}: unknown network {name!r} in the checkpoint")
    config = from_dict(DiscriminatorConfig if name == "D" else GeneratorConfig, cfg, f" of {name}")
    config.validate()                              # bounds the size before anything is allocated
    net: torch.nn.Module = Discriminator(config) if name == "D" else Generator(config)
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as e:                       # shape mismatches
        raise UserError(f"{where}: {name} weights do not fit its config ({_first_line(e)})") from None
    if result.missing_keys or result.unexpected_keys:
        raise UserError(f"{where}: {name} weights do not fit its config (missing {result.missing_keys[:3]}, "
                        f"unexpected {result.unexpected_keys[:3]})")
    return net


def _first_line(e: BaseException) -> str:
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    return (lines[1] if len(lines) > 1 and lines[0].endswith(":") else lines[0]) if lines else type(e).__name__


def check_finite(nets: Mapping[str, Any], where: str) -> None:
    """UserError if any weight or buffer of these networks is NaN or Inf (such a model draws garbage)."""
    from training.snapshots import first_nonfinite
    bad = first_nonfinite({f"{n}.{k}": v for n, net in nets.items() if isinstance(net, torch.nn.Module)
                           for k, v in net.state_dict().items()})
    if bad:
        raise UserError(f"{where}: {bad} holds NaN or Inf; refusing a non-finite model")


def latest_snapshot(folder: str | os.PathLike) -> Optional[Path]:
    """The newest `network-snapshot-NNNNNN.safetensors` in a folder, or None."""
    found = [(float(m.group(1)), p) for p in Path(folder).glob("network-snapshot-*.safetensors")
             if (m := SNAPSHOT_RE.search(p.name))]
    return max(found)[1] if found else None


def _load_any(source: str | os.PathLike) -> dict[str, Any]:
    """Load networks from any supported source; returns a dict with some of G, D, G_ema and 'extra'.

    Sources: our checkpoint (.safetensors), a run folder (its latest snapshot), an official PyTorch
    reference folder (config.json + G_state.pt + D_state.pt), an official PyTorch or TensorFlow
    snapshot pickle, or a released checkpoint by its official name (gdrive:ffhq-snapshot.pkl, ...).
    """
    source = str(source)
    if source.startswith("gdrive:"):
        from training.importers import pickles, pretrained
        return pickles.load_pickle_networks(pretrained.fetch(source))
    path = Path(source)
    if not path.exists():
        raise UserError(f"model not found: {source}")
    from training.importers import official_pt

    if path.is_dir():
        if official_pt.looks_like_reference_folder(path):
            nets = official_pt.load_reference_folder(path)
            return {"G": nets["G"], "D": nets["D"], "G_ema": nets["G"], "extra": {"source": "official-pytorch-folder"}}
        snap = latest_snapshot(path)
        if snap is None:
            raise UserError(f"{source} is a folder with neither a reference model nor network snapshots")
        path = snap
    if path.suffix == ".pkl":
        from training.importers import pickles
        return pickles.load_pickle_networks(path)
    if path.suffix != ".safetensors":
        raise UserError(f"unrecognised model file {source} (expected .safetensors, .pkl or a folder)")
    states, configs, extra = read_checkpoint(path)
    state = state_beside(path)
    if state is not None and not {"G", "D"} <= set(configs):      # fine-tuning our own run: G and D from there
        more_states, more_configs, _ = read_checkpoint(state, STATE_FORMAT, rest={})
        for name in ("G", "D"):
            states.setdefault(name, more_states[name]), configs.setdefault(name, more_configs[name])
    out: dict[str, Any] = {name: _build(name, configs[name], states[name], str(path)) for name in configs}
    out["extra"] = extra
    return out


def state_beside(snapshot: Path) -> Optional[Path]:
    """The training state saved with a release snapshot (training-state-N beside network-snapshot-N)."""
    m = SNAPSHOT_RE.search(snapshot.name)
    state = snapshot.with_name(f"training-state-{m.group(1)}.safetensors") if m else None
    return state if state is not None and state.is_file() else None


def load_networks(source: str | os.PathLike) -> dict[str, Any]:
    """Load networks from any supported source (see _load_any); refuses weights with NaN or Inf."""
    nets = _load_any(source)
    check_finite(nets, str(source))
    return nets


def load_generator(source: str | os.PathLike, device: torch.device | str = "cpu") -> Generator:
    """The generator to sample from (the EMA one when present), in eval mode on `device`."""
    nets = load_networks(source)
    G = nets.get("G_ema") or nets.get("G")
    if G is None:
        raise UserError(f"{source} holds no generator")
    return G.eval().requires_grad_(False).to(device)
