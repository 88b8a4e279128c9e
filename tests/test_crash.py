"""Crash test (slow; run with GANFORMER_SLOW=1 or -m slow): kill -9 a training run at 20 random moments.

After every kill: at most one run folder, and every file in it loads (training states, snapshots, PNGs,
config.json, every complete stats.jsonl line). The same command then continues; the finished run's
weights and optimiser state equal an uninterrupted run's, bit for bit. Kills land before the first
training state (during start-up), between ticks, and during writes (seen as a stale temporary file).
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from training import snapshots

from test_training import assert_same_state, cli, data_dir, final_state  # noqa: F401 (fixture)

KILLS = 20
ARGS = ["--total-kimg", "0.06"]          # 15 steps, a training state every step


def _check_folder(results: Path) -> tuple[int, int]:
    """Assert the invariants after a kill; returns (training states present, stale temporary files)."""
    import PIL.Image

    from training.checkpoint import read_checkpoint
    runs = snapshots.find_runs(results, "t")
    assert len(runs) <= 1, f"a second run folder appeared: {runs}"
    if not runs:
        return 0, 0
    run = runs[0]
    for p in run.iterdir():
        if p.name.startswith("training-state-"):
            snapshots.load_state(p)
        elif p.name.startswith("network-snapshot-"):
            read_checkpoint(p)
        elif p.suffix == ".png":
            with PIL.Image.open(p) as img:
                img.load()
        elif p.name == "config.json":
            json.loads(p.read_text())
        elif p.name == "stats.jsonl":
            text = p.read_text()
            for line in text.splitlines(keepends=True):
                if line.endswith("\n"):
                    json.loads(line)
    return len(snapshots.states(run)), len(list(run.glob(".*.tmp")))


def _wait_for(proc: subprocess.Popen, results: Path, until: float, on_tmp: bool) -> bool:
    """Wait until `until` (monotonic) or, with on_tmp, until a temporary file shows up in the run folder
    (a write in progress); True if the process is still running then."""
    while time.monotonic() < until and proc.poll() is None:
        if on_tmp and any(p.name.endswith(".tmp") for run in snapshots.find_runs(results, "t")
                          for p in os.scandir(run)):
            return proc.poll() is None
        time.sleep(0.001 if on_tmp else 0.01)
    return proc.poll() is None


def _first_state_time(cmd: list[str], results: Path) -> tuple[float, float]:
    """(seconds until the first training state exists, seconds for the whole run) of an uninterrupted run."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = None
    while proc.poll() is None:
        if first is None and any(snapshots.latest_state(r) for r in snapshots.find_runs(results, "t")):
            first = time.monotonic() - t0
        time.sleep(0.01)
    assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
    total = time.monotonic() - t0
    return first or total, total


@pytest.mark.slow
def test_twenty_kills_lose_nothing(data_dir, tmp_path) -> None:
    cmd = lambda results: [sys.executable, str(REPO / "run_network.py"), *cli(data_dir, results, *ARGS)]
    first_state, duration = _first_state_time(cmd(tmp_path / "straight"), tmp_path / "straight")
    reference = final_state(tmp_path / "straight")
    rng = random.Random(13)
    kills = before_state = during_write = campaigns = 0
    while kills < KILLS:
        campaigns += 1
        results = tmp_path / f"killed-{campaigns}"
        for attempt in range(100):
            # Rotate: during start-up (before any state), at the next write (a temporary file seen), any time.
            kind = "startup" if attempt == 0 else ("write", "any")[attempt % 2]
            delay = rng.uniform(0.05, 0.9 * first_state) if kind == "startup" else rng.uniform(0.05, duration)
            proc = subprocess.Popen(cmd(results), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            deadline = time.monotonic() + (delay if kind != "write" else duration * 2)
            if not _wait_for(proc, results, deadline, on_tmp=kind == "write"):
                assert proc.wait() == 0, proc.stderr.read().decode()[-2000:]
                break                                   # finished on its own: this campaign is complete
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            states, tmps = _check_folder(results)
            before_state += states == 0
            during_write += tmps > 0
            if kills >= KILLS:
                break
        proc = subprocess.run(cmd(results), cwd=REPO, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs = snapshots.find_runs(results, "t")
        assert len(runs) == 1 and not list(runs[0].glob(".*.tmp"))
        _check_folder(results)
        assert_same_state(reference, final_state(results))
        ticks = [json.loads(line)["Progress/tick"] for line in (runs[0] / "stats.jsonl").read_text().splitlines()]
        assert ticks == list(range(1, len(ticks) + 1)), ticks
    print(f"\ncrash test: {kills} kills survived in {campaigns} campaign(s); {before_state} before the first "
          f"training state, {during_write} during a write (a temporary file left behind); every folder single, "
          f"every file loadable, final weights bitwise equal to the uninterrupted run")
    assert before_state >= 1 and during_write >= 1
