"""bench/bench_train.py's FLOP accounting: a period's count is its phases' counts (R1 once per 16 steps), and
counts are reused from --flops-cache by later processes."""
from __future__ import annotations

import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import bench_train  # noqa: E402

TINY = ["--resolution", "16", "--batch", "4", "--channel-base", "256", "--channel-max", "16", "--device", "cpu",
        "--preset", "GANformer"]


def test_period_count_is_the_sum_of_its_phases(tmp_path) -> None:
    a = bench_train.parse(TINY + ["--flops-only"])
    f = bench_train.count_flops(a, "GANformer")
    ph = f["phase_gflop"]
    assert set(ph) == {"g_main", "d_main", "d_reg"}                   # path length is off by default
    per_step = (ph["g_main"] + ph["d_main"] + ph["d_reg"] / 16) * 1e9  # lazy R1: one step in 16
    # the phases are step 0's; style mixing, drawn anew each step, moves a step's count by a fraction of a percent
    assert f["flop_per_image_per_step"] == pytest.approx(per_step, rel=1e-2)
    # G's phase runs G and D forward and backward: more than a forward of each, less than four
    assert 2 < ph["g_main"] / (f["G_forward_gflop"] + f["D_forward_gflop"]) < 4
    # R1 differentiates D's gradient on reals: several D forwards' worth (about 6 at 256x256)
    assert 2 < f["r1_over_D_forward"] < 10


def test_flops_cache_is_reused_by_a_later_process(tmp_path, monkeypatch) -> None:
    cache = tmp_path / "flops.json"
    a = bench_train.parse(TINY + ["--flops-only", "--flops-cache", str(cache)])
    monkeypatch.setattr(bench_train, "_flop_cache", {})
    first = bench_train.count_flops(a, "GANformer")
    assert cache.is_file()
    monkeypatch.setattr(bench_train, "_flop_cache", {})              # a new process: nothing in memory
    monkeypatch.setattr(bench_train, "_count_flops", lambda *_: pytest.fail("counted again"))
    assert bench_train.count_flops(a, "GANformer") == first
    b = bench_train.parse(TINY + ["--flops-only", "--flops-cache", str(cache), "--batch", "8"])
    with pytest.raises(pytest.fail.Exception):                       # another batch: another key, counted anew
        bench_train.count_flops(b, "GANformer")
