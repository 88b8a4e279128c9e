"""--last-snapshots (training/snapshots.py prune): saves every --state-minutes do not pile up, snapshots every
--snapshot-ticks keep the newest N, and what resuming needs always stays."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from training import snapshots


def save(run: Path, tag: str, timed: bool, state: bool = True) -> None:
    """A stand-in for one save: a release whose header says whether it was timed, and the state beside it."""
    from safetensors.torch import save_file
    extra = json.dumps({"kimg": float(tag), **({"timed": True} if timed else {})})
    save_file({"x": torch.zeros(1)}, str(run / f"network-snapshot-{tag}.safetensors"), metadata={"extra": extra})
    if state:
        (run / f"training-state-{tag}.safetensors").write_bytes(b"state")


def points(run: Path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for p in run.glob("*.safetensors"):
        kind, tag = p.name[:-len(".safetensors")].rsplit("-", 1)
        out.setdefault(tag, set()).add(kind)
    return out


def test_a_quickstart_keeps_its_tick_snapshots_and_only_the_newest_timed_save(tmp_path):
    # 15 ticks, a tick snapshot every 5, two timed saves inside each tick; prune after every save (as the loop)
    for tick in range(1, 16):
        for k in (1, 2):
            save(tmp_path, f"{tick - 1:06d}.{k * 300:03d}", timed=True)
            snapshots.prune(tmp_path, 10)
        if tick % 5 == 0:
            save(tmp_path, f"{tick:06d}", timed=False)
            snapshots.prune(tmp_path, 10)
    both = {"network-snapshot", "training-state"}
    assert points(tmp_path) == {"000005": both, "000010": both, "000015": both}
    save(tmp_path, "000015.300", timed=True)                 # a timed save newer than every snapshot stays
    snapshots.prune(tmp_path, 10)
    assert set(points(tmp_path)) == {"000005", "000010", "000015", "000015.300"}


def test_keep_counts_tick_snapshots_only(tmp_path):
    for tag, timed in (("000001", False), ("000002", True), ("000003", False), ("000004", True)):
        save(tmp_path, tag, timed)
    snapshots.prune(tmp_path, 1)
    assert set(points(tmp_path)) == {"000003", "000004"}     # the newest tick snapshot and the newest save


def test_the_newest_state_and_its_release_always_stay(tmp_path):
    save(tmp_path, "000001", timed=False)
    save(tmp_path, "000002", timed=True)
    save(tmp_path, "000003", timed=True, state=False)        # killed between the release and its state
    snapshots.prune(tmp_path, 1)
    p = points(tmp_path)
    assert p["000002"] == {"network-snapshot", "training-state"}     # load_state needs the release beside it
    assert snapshots.latest_state(tmp_path).name == "training-state-000002.safetensors"
    assert set(p) == {"000001", "000002", "000003"}


def test_keep_zero_keeps_every_save(tmp_path):
    for tag, timed in (("000001", True), ("000002", False), ("000003", True)):
        save(tmp_path, tag, timed)
    snapshots.prune(tmp_path, 0)
    assert len(list(tmp_path.iterdir())) == 6


def test_a_file_that_is_not_ours_counts_as_a_tick_snapshot(tmp_path):
    (tmp_path / "network-snapshot-000001.safetensors").write_bytes(b"garbage")
    assert not snapshots.is_timed(tmp_path / "network-snapshot-000001.safetensors")
    assert not snapshots.is_timed(tmp_path / "network-snapshot-000009.safetensors")     # missing
