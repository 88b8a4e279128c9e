"""CPU thread choice (dnnlib/threads.py): the decisions, fed with made-up readings (nothing is timed)."""
from __future__ import annotations

from dnnlib import threads
from dnnlib.threads import (CpuTimes, ThreadGovernor, choose_threads, free_threads, others_cores,
                            parse_proc_stat, settle)

PROC_STAT = """cpu  300 0 100 600 0 0 0 0 0 0
cpu0 100 0 50 350 0 0 0 0 0 0
cpu1 200 0 50 240 10 0 0 0 0 0
cpu2 7 0 0 93 0 0 0 0 0 0
intr 12345 0 0
"""


def test_proc_stat_sums_the_cpus_this_process_may_use():
    assert parse_proc_stat(PROC_STAT, {0, 1}) == CpuTimes(busy=400, total=1000)     # idle and iowait are not busy
    assert parse_proc_stat(PROC_STAT, {2}) == CpuTimes(busy=7, total=100)
    assert parse_proc_stat(PROC_STAT, {5}) is None
    assert parse_proc_stat("", {0}) is None


def test_others_are_the_busy_time_less_our_own():
    before = CpuTimes(busy=1000, total=5000)
    after = CpuTimes(busy=1000 + 150, total=5000 + 200)            # 2 CPUs, 100 ticks of wall time each
    assert others_cores(before, after, own_ticks=0, cpus=2) == 1.5
    assert others_cores(before, after, own_ticks=100, cpus=2) == 0.5
    assert others_cores(before, after, own_ticks=190, cpus=2) == 0.0    # rounding never goes negative
    assert others_cores(before, before, own_ticks=0, cpus=2) == 0.0     # no time passed


def test_threads_are_the_cores_others_leave_free():
    assert free_threads(2, 0.0) == 2
    assert free_threads(2, 0.2) == 2             # a light background process leaves the core free
    assert free_threads(2, 0.4) == 1             # more than a quarter of a core: taken
    assert free_threads(2, 1.0) == 1
    assert free_threads(2, 23.0) == 1            # never below one
    assert free_threads(8, 0.0, processes=2) == 4
    assert free_threads(8, 3.0, processes=2) == 2


def test_choice_explicit_beats_environment_beats_measurement():
    env: dict = {}
    assert choose_threads(3, cpus=2, others=2.0, env=env) == (3, "--num-threads", False)
    assert choose_threads(None, cpus=2, others=0.0, env={"OMP_NUM_THREADS": "1"}) == (1, "OMP_NUM_THREADS", False)
    idle = choose_threads(None, cpus=2, others=0.05, env=env)
    assert idle.threads == 2 and idle.auto and "2 CPUs" in idle.why
    assert choose_threads(None, cpus=2, others=1.1, env=env).threads == 1


def test_count_drops_at_once_and_rises_after_two_agreeing_readings():
    assert settle(2, 1, None) == 1
    assert settle(1, 2, None) == 1 and settle(1, 2, 1) == 1
    assert settle(1, 2, 2) == 2
    assert settle(1, 4, 3) == 3
    assert settle(2, 2, 1) == 2


class Machine:
    """Made-up /proc/stat and own-CPU readings: each step, 2 CPUs run for 100 ticks each."""

    def __init__(self):
        self.busy = self.total = 0
        self.own = 0.0

    def step(self, others: float, ours: float):
        self.total += 200
        self.busy += int(100 * (others + ours))
        self.own += 100 * ours


def test_governor_follows_other_work_and_prints_each_change():
    m, calls = Machine(), []
    g = ThreadGovernor(2, set_threads=calls.append, read=lambda: CpuTimes(m.busy, m.total), own=lambda: m.own,
                       cpus=2)
    m.step(others=0.0, ours=2.0)
    assert g.check() is None and calls == []                 # our own two busy threads are not "others"
    m.step(others=0.7, ours=1.3)                             # a job starts beside us (it gets 0.7 of a core)
    note = g.check()
    assert calls == [1] and note == "CPU threads: 2 -> 1 (other processes use 0.7 of 2 cores)"
    m.step(others=1.0, ours=1.0)
    assert g.check() is None and calls == [1]
    m.step(others=0.0, ours=1.0)                             # it ended: one reading is not enough
    assert g.check() is None and calls == [1]
    m.step(others=0.0, ours=1.0)
    assert g.check() == "CPU threads: 1 -> 2 (other processes use 0.0 of 2 cores)" and calls == [1, 2]


def test_governor_without_proc_stat_changes_nothing():
    calls: list = []
    g = ThreadGovernor(2, set_threads=calls.append, read=lambda: None, own=lambda: 0.0, cpus=2)
    assert g.check() is None and calls == []


def test_training_loop_rechecks_at_status_lines(tmp_path, capsys, monkeypatch, one_thread):
    """With follow_load, each status line asks the governor, and a change is printed as its own line."""
    import torch

    import training.training_loop as loop
    from training.data.writer import write_scenes
    from training.distributed import Dist
    from training.networks import Discriminator, Generator
    from training.networks.config import DiscriminatorConfig
    from training.networks.presets import build

    checks: list[int] = []

    class Governor:
        def __init__(self, threads):
            checks.append(threads)

        def check(self):
            checks.append(0)
            return "CPU threads: 1 -> 1 (made up)" if len(checks) == 2 else None

    monkeypatch.setattr(loop, "ThreadGovernor", Governor)
    write_scenes(tmp_path / "data" / "scenes", resolution=16, count=8, workers=1, progress=False)
    G = Generator(build("StyleGAN2", 16, latent_size=16, channel_base=64, channel_max=8)[0])
    D = Discriminator(DiscriminatorConfig(img_resolution=16, channel_base=64, channel_max=8, mbstd_group_size=2))
    opts = loop.TrainOptions(run_dir=str(tmp_path), data_dir=str(tmp_path / "data"), resolution=16, batch_size=2,
                             batch_gpu=2, total_kimg=0.006, kimg_per_tick=0.006, snapshot_ticks=1, status_seconds=0,
                             state_minutes=0, grid_size=(2, 1), follow_load=True)
    loop.Trainer(opts, G, D, Dist(), torch.device("cpu")).run()
    assert checks == [1, 0, 0]                          # made with the thread count; asked at both status lines
    assert "\nCPU threads: 1 -> 1 (made up)\n" in capsys.readouterr().out


def test_cpu_model_is_the_first_model_name_of_cpuinfo():
    text = ("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel\t\t: 1\nmodel name\t: AMD EPYC 7B13\n\n"
            "processor\t: 1\nmodel name\t: something else\n")
    assert threads.parse_cpu_model(text) == "AMD EPYC 7B13"        # not "model" (a number), not the second CPU's
    assert threads.parse_cpu_model("processor\t: 0\nmodel name\t: \n") is None
    assert threads.parse_cpu_model("") is None
    d = threads.describe_cpu()
    assert d["model"] and d["cores"] >= d["usable_cores"] >= 1
    assert d["torch_cpu_capability"] in ("DEFAULT", "NO AVX", "AVX2", "AVX512", "ZVECTOR", "VSX", "SVE256", "SVE128")
