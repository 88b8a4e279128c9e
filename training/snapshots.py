"""Run folders, the full training state (for resume) and release snapshots, all written atomically.

Training state = G, D, G_ema, both optimisers, counters: one safetensors file whose header holds the
JSON (configs, optimiser hyper-parameters, counters). Release snapshot = our checkpoint format with
G_ema only (plus G and D for fine-tuning). Neither is a pickle.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Optional

import torch

from dnnlib.util import atomic_path
from training.checkpoint import KIMG_RE, read_safetensors, save_checkpoint
from training.networks.config import to_dict

STATE_RE = re.compile(rf"training-state-{KIMG_RE}\.safetensors$")
RUN_RE = re.compile(r"^(.*)-(\d{3,})$")


# -- run folders -------------------------------------------------------------------------------------

def find_runs(result_dir: str | os.PathLike, expname: str) -> list[Path]:
    root = Path(result_dir)
    if not root.is_dir():
        return []
    runs = [(int(m.group(2)), p) for p in root.iterdir() if p.is_dir() and (m := RUN_RE.match(p.name))
            and m.group(1) == expname]
    return [p for _, p in sorted(runs)]


def new_run_dir(result_dir: str | os.PathLike, expname: str) -> Path:
    runs = find_runs(result_dir, expname)
    idx = int(RUN_RE.match(runs[-1].name).group(2)) + 1 if runs else 0
    path = Path(result_dir) / f"{expname}-{idx:03d}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def latest_state(run_dir: str | os.PathLike) -> Optional[Path]:
    found = [(float(m.group(1)), p) for p in Path(run_dir).glob("training-state-*.safetensors")
             if (m := STATE_RE.search(p.name))]
    return max(found)[1] if found else None


def prune(run_dir: str | os.PathLike, keep: int) -> None:
    """Keep the newest `keep` training states and release snapshots (0 = keep all)."""
    if keep <= 0:
        return
    for pattern in ("training-state-*.safetensors", "network-snapshot-*.safetensors"):
        files = sorted(Path(run_dir).glob(pattern), key=lambda p: float((re.findall(KIMG_RE, p.name) or ["-1"])[0]))
        for old in files[:-keep]:
            old.unlink(missing_ok=True)


# -- training state ----------------------------------------------------------------------------------

def _flatten_optimizer(prefix: str, opt: torch.optim.Optimizer, tensors: dict) -> dict:
    sd = opt.state_dict()
    for idx, state in sd["state"].items():
        for key, value in state.items():
            tensors[f"{prefix}.state.{idx}.{key}"] = torch.as_tensor(value).detach().cpu().clone()
    return {"param_groups": sd["param_groups"]}


def _unflatten_optimizer(prefix: str, meta: dict, tensors: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith(prefix + ".state."):
            idx, key = name[len(prefix) + 7:].split(".", 1)
            state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_state(path: str | os.PathLike, nets: dict[str, torch.nn.Module], opts: dict[str, torch.optim.Optimizer],
               counters: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    configs = {}
    for name, net in nets.items():
        configs[name] = to_dict(net.cfg)
        for key, value in net.state_dict().items():
            tensors[f"{name}.{key}"] = value.detach().cpu().clone()
    opt_meta = {name: _flatten_optimizer(f"opt_{name}", opt, tensors) for name, opt in opts.items()}
    meta = {"format": "ganformer-training-state", "format_version": "1", "configs": json.dumps(configs),
            "optimizers": json.dumps(opt_meta), "counters": json.dumps(counters)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_state(path: str | os.PathLike) -> tuple[dict, dict, dict, dict]:
    """-> (net state dicts, net configs, optimizer state dicts, counters)."""
    meta, flat = read_safetensors(path, "ganformer-training-state", "training state")
    configs = json.loads(meta["configs"])
    nets = {name: {} for name in configs}
    for key, value in flat.items():
        head, _, rest = key.partition(".")
        if head in nets:
            nets[head][rest] = value
    opt_meta = json.loads(meta["optimizers"])
    opts = {name: _unflatten_optimizer(f"opt_{name}", m, flat) for name, m in opt_meta.items()}
    return nets, configs, opts, json.loads(meta["counters"])


def save_release(path: str | os.PathLike, G_ema: torch.nn.Module, G: torch.nn.Module, D: torch.nn.Module,
                 extra: dict) -> None:
    save_checkpoint(path, {"G_ema": G_ema, "G": G, "D": D}, extra=extra)
