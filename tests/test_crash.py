"""Crash test (slow; run with GANFORMER_SLOW=1 or -m slow): kill -9 a training run at 20 random moments.

After every kill: at most one run folder, and every file in it loads (training states, snapshots, PNGs,
config.json, every complete stats.jsonl line). The same command then continues; the finished run's
weights and optimiser state equal an uninterrupted run's, bit for bit. Kills land before the first
training state (during start-up), between ticks, and during writes (seen as a stale temporary file).
"""
from __future__ import annotations

import json
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


@pytest.mark.slow
def test_twenty_kills_lose_nothing(data_dir, tmp_path) -> None:
    cmd = lambda results: [sys.executable, str(REPO / "run_network.py"), *cli(data_dir, results, *ARGS)]
    t0 = time.time()
    subprocess.run(cmd(tmp_path / "straight"), cwd=REPO, check=True, capture_output=True, timeout=900)
    duration = time.time() - t0
    reference = final_state(tmp_path / "straight")
    rng = random.Random(13)
    kills = before_state = during_write = campaigns = 0
    while kills < KILLS:
        campaigns += 1
        results = tmp_path / f"killed-{campaigns}"
        first = True
        while True:
            # The first kill of a campaign comes during start-up (before any training state), the others anywhere.
            delay = rng.uniform(0.05, 0.6 * duration) if not first else rng.uniform(0.05, 0.3 * duration)
            first = False
            proc = subprocess.Popen(cmd(results), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                states, tmps = _check_folder(results)
                before_state += states == 0
                during_write += tmps > 0
                if kills >= KILLS:
                    break
                continue
            assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
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
          f"training state, {during_write} left a stale temporary file (killed during a write); every folder "
          f"single, every file loadable, final weights bitwise equal to the uninterrupted run")
    assert before_state >= 1
