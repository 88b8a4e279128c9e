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

from dnnlib.util import TMP_SUFFIX, UserError, atomic_write, remove_stale_tmp
from training.checkpoint import FORMAT, KIMG_RE, STATE_FORMAT, read_checkpoint, save_checkpoint

STATE_RE = re.compile(rf"training-state-{KIMG_RE}\.safetensors$")
POINT_RE = re.compile(rf"(?:training-state|network-snapshot)-{KIMG_RE}\.safetensors$")
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
    """Create the next `<expname>-NNN` folder (a concurrent process taking a number is skipped over)."""
    while True:
        runs = find_runs(result_dir, expname)
        idx = int(RUN_RE.match(runs[-1].name).group(2)) + 1 if runs else 0
        path = Path(result_dir) / f"{expname}-{idx:03d}"
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            continue
        except OSError as e:
            raise UserError(f"cannot create the run folder {path}: {e.strerror or e}") from None


def unstarted_training_run(run_dir: str | os.PathLike) -> bool:
    """True for a training run folder killed before its first training state: the same command reuses it.

    That is a folder that is empty, or whose config.json records a --train command, with no state yet.
    """
    run = Path(run_dir)
    if latest_state(run) is not None or any(run.glob("network-snapshot-*.safetensors")):
        return False
    try:
        cfg = json.loads((run / "config.json").read_text())
        return (cfg.get("run") or {}).get("mode") == "train" or (cfg.get("args") or {}).get("train") is True
    except FileNotFoundError:
        return not any(p for p in run.iterdir() if p.name != ".lock" and not p.name.endswith(TMP_SUFFIX))
    except (OSError, ValueError, AttributeError):
        return False


def states(run_dir: str | os.PathLike) -> list[Path]:
    """The training states in a run folder, newest first."""
    found = [(float(m.group(1)), p) for p in Path(run_dir).glob("training-state-*.safetensors")
             if (m := STATE_RE.search(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def latest_state(run_dir: str | os.PathLike) -> Optional[Path]:
    found = states(run_dir)
    return found[0] if found else None


def newest_good_state(run_dir: str | os.PathLike, log=print) -> Optional[Path]:
    """The newest training state that reads back whole with finite numbers; None if there is no state.

    Newer states that fail are named in a note. If states exist but none verifies: a UserError.
    """
    found = states(run_dir)
    for path in found:
        try:
            nets, _, opts, _ = load_state(path)
            bad = first_nonfinite({**{f"{n}.{k}": v for n, sd in nets.items() for k, v in sd.items()},
                                   **{f"opt_{n}": t for n, o in opts.items() for st in o["state"].values()
                                      for t in st.values()}})
            if bad:
                raise UserError(f"{path}: {bad} holds NaN or Inf")
        except (UserError, KeyError, ValueError, TypeError) as e:
            log(f"note: skipping {path.name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            continue
        if path != found[0]:
            log(f"note: resuming from {path.name}, the newest training state that verifies")
        return path
    if found:
        raise UserError(f"no training state in {run_dir} is readable; start over with --restart")
    return None


def first_nonfinite(tensors: dict[str, torch.Tensor]) -> Optional[str]:
    """The name of the first floating-point tensor with a NaN or Inf, else None (one device sync)."""
    names = [k for k, t in tensors.items() if torch.is_tensor(t) and t.is_floating_point() and t.numel()]
    if not names:
        return None
    dev = tensors[names[0]].device
    ok = torch.stack([torch.isfinite(tensors[k]).all().to(dev) for k in names]).cpu()   # the only sync
    return None if bool(ok.all()) else names[int((~ok).nonzero()[0])]


def clean_run_dir(run_dir: str | os.PathLike, resumed_tick: int) -> None:
    """Before (re)starting in a run folder whose lock we hold: drop stale temporary files and the
    stats.jsonl rows after the resumed tick (they will be written again), plus any torn last line."""
    remove_stale_tmp(run_dir)
    path = Path(run_dir) / "stats.jsonl"
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("Progress/tick", 0) <= resumed_tick:
            keep.append(line + "\n")
    with atomic_write(path, "w") as f:
        f.writelines(keep)


def is_timed(release: Path) -> bool:
    """Whether a release snapshot was a save every --state-minutes (its header says so; reads no tensor)."""
    from safetensors import safe_open
    try:
        with safe_open(str(release), framework="pt") as f:
            return json.loads((f.metadata() or {}).get("extra", "{}")).get("timed") is True
    except Exception:                      # unreadable or not ours: not known to be timed, so kept
        return False


def prune(run_dir: str | os.PathLike, keep: int) -> None:
    """After a save, per point of training (a release snapshot and the training state beside it): a save
    every --state-minutes is a resume point only, removed once a newer save exists; of the saves every
    --snapshot-ticks the newest `keep` stay. The newest training state and its release (which resuming
    needs: load_state) always stay. keep <= 0 keeps everything."""
    if keep <= 0:
        return
    run = Path(run_dir)
    files: dict[str, list[Path]] = {}
    for p in run.glob("*.safetensors"):
        if m := POINT_RE.match(p.name):
            files.setdefault(m.group(1), []).append(p)
    newest = latest_state(run)
    protected = STATE_RE.search(newest.name).group(1) if newest else None
    tags = sorted(files, key=float)
    timed = [t for t in tags if is_timed(run / f"network-snapshot-{t}.safetensors")]
    ticks = [t for t in tags if t not in timed]
    for tag in timed + ticks[:-keep]:
        if tag != protected and tag != tags[-1]:
            for p in files[tag]:
                p.unlink(missing_ok=True)


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
