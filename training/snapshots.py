"""Run folders and snapshots: at each snapshot, a release file and a training state, written atomically
by the one checkpoint writer (training/checkpoint.py), no network stored twice.

network-snapshot-N.safetensors = G_ema + its config: what sampling, metrics and visualisation need.
training-state-N.safetensors = the rest for resuming: G, D, both optimisers (tensors, with their
hyper-parameters as JSON in the header) and the counters. Resuming reads both. Files written before this
split (G_ema in the state, G and D in the release) still load. Neither is a pickle.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Optional

import torch

from dnnlib.util import UserError
from training.checkpoint import FORMAT, KIMG_RE, STATE_FORMAT, read_checkpoint, save_checkpoint

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
    """A training state: the networks still training (G, D), their optimisers and the counters."""
    tensors: dict[str, torch.Tensor] = {}
    opt_meta = {name: _flatten_optimizer(f"opt_{name}", opt, tensors) for name, opt in opts.items()}
    save_checkpoint(path, nets, fmt=STATE_FORMAT, tensors=tensors,
                    meta={"optimizers": json.dumps(opt_meta), "counters": json.dumps(counters)})


def load_state(path: str | os.PathLike) -> tuple[dict, dict, dict, dict]:
    """-> (net state dicts, net configs, optimizer state dicts, counters); G_ema comes from the release
    snapshot of the same step (older states hold it themselves)."""
    rest: dict = {}
    nets, configs, _ = read_checkpoint(path, STATE_FORMAT, rest=rest)
    m = STATE_RE.search(Path(path).name)
    if "G_ema" not in nets and m and "G" in nets:
        release = Path(path).with_name(f"network-snapshot-{m.group(1)}.safetensors")
        if not release.is_file():
            raise UserError(f"{path} needs {release.name} beside it (the moving-average generator) to resume")
        more, more_configs, _ = read_checkpoint(release, FORMAT)
        nets["G_ema"], configs["G_ema"] = more["G_ema"], more_configs["G_ema"]
    meta = rest["meta"]
    opt_meta = json.loads(meta["optimizers"])
    opts = {name: _unflatten_optimizer(f"opt_{name}", m, rest["tensors"]) for name, m in opt_meta.items()}
    return nets, configs, opts, json.loads(meta["counters"])


def save_snapshot(run_dir: str | os.PathLike, tag: str, G: torch.nn.Module, D: torch.nn.Module,
                  G_ema: torch.nn.Module, opts: dict[str, torch.optim.Optimizer], counters: dict[str, Any],
                  extra: dict) -> None:
    """The release file first, then the training state that needs it: a crash between them leaves the
    previous state, whose release is complete, as the one to resume from."""
    run = Path(run_dir)
    save_checkpoint(run / f"network-snapshot-{tag}.safetensors", {"G_ema": G_ema}, extra=extra)
    save_state(run / f"training-state-{tag}.safetensors", {"G": G, "D": D}, opts, counters)
