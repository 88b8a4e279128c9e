"""CPU threads on a machine shared with other work: as many torch threads as there are free cores, now.

Seconds per training step of the Quickstart config on the 2-core development machine, each setting in a
fresh process, best of 2 (`python bench/bench_threads.py --steps 10 --warmup 3 --repeats 2 --load-procs 1`,
bench/results/threads-idle-cpu.json):

                                   1 thread   2 threads, default wait   2 threads, OMP_WAIT_POLICY=PASSIVE
  machine free                     0.62-0.64  0.38                      0.65
  one busy-loop process beside it  0.57-0.64  1.39                      0.70

(bench/results/threads-cpu.json, one sample each with a load average near 22: 2 threads with the default
wait were 12-21x slower than 1 thread.) Hence:

* The thread count is the number of cores that other processes leave free, measured when the run
  starts from the CPUs' busy time over 0.3 s (/proc/stat; the 1-minute load average only where that is
  missing: it lags by minutes, and right after another job ended it chose 1 thread on an idle machine).
  A core counts as taken when others use more than a quarter of it: two threads beside a busy core
  cost 2.2x, one thread on a free machine 1.7x.
* OpenMP's default wait policy is kept (a user's OMP_WAIT_POLICY is left as it is): with threads only
  on free cores it is the fastest, and PASSIVE never beat one thread.
* During training (`ThreadGovernor.check()`, at each status line, ~10 s) the same measurement, less this
  process's own CPU time, follows other work: the count drops as soon as others take a core and rises
  again after two readings that agree, with a printed line each time.
* `--num-threads N` (the seed's flag) or OMP_NUM_THREADS fix the count; it is then never changed.
"""
from __future__ import annotations

import os
import time
from typing import Callable, NamedTuple, Optional

TAKEN_SHARE = 0.25          # others using more than this share of a core take it
SAMPLE_SECONDS = 0.3        # the measurement at start


def available_cpus() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def parse_cpu_model(cpuinfo: str) -> Optional[str]:
    """The first "model name" of /proc/cpuinfo text (x86 Linux), else None."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "model name" and value.strip():
            return value.strip()
    return None


def describe_cpu() -> dict:
    """What a CPU benchmark figure depends on: the processor model, the vector ISA that PyTorch's CPU kernels
    dispatch to (AVX2, AVX512, ...: the convolutions that dominate a CPU training step run on them), the cores."""
    import platform
    import torch
    try:
        with open("/proc/cpuinfo") as f:
            model = parse_cpu_model(f.read())
    except OSError:
        model = None
    return {"model": model or platform.processor() or platform.machine(),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cores": os.cpu_count(), "usable_cores": len(available_cpus())}


# -- decisions (pure: readings in, numbers out) ----------------------------------------------------------

class CpuTimes(NamedTuple):
    busy: int                # clock ticks the CPUs spent on anything but idle / iowait
    total: int               # all clock ticks of the CPUs


def parse_proc_stat(text: str, cpus: set[int]) -> Optional[CpuTimes]:
    """Busy and total clock ticks summed over `cpus`, from the text of /proc/stat (None if none listed)."""
    busy = total = 0
    seen = False
    for line in text.splitlines():
        name, *fields = line.split() or [""]
        if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus):
            continue
        ticks = [int(f) for f in fields[:8]]          # user nice system idle iowait irq softirq steal
        busy += sum(ticks) - ticks[3] - ticks[4]
        total += sum(ticks)
        seen = True
    return CpuTimes(busy, total) if seen else None


def others_cores(before: CpuTimes, after: CpuTimes, own_ticks: float, cpus: int) -> float:
    """Cores' worth of work by other processes between two readings, given this process's own ticks."""
    elapsed = after.total - before.total
    if elapsed <= 0:
        return 0.0
    return max(0.0, (after.busy - before.busy - own_ticks) / elapsed * cpus)


def free_threads(cpus: int, others: float, processes: int = 1) -> int:
    """Threads per process: the cores not taken by others (see TAKEN_SHARE), split over `processes`, >= 1."""
    taken = max(0, int(others - TAKEN_SHARE + 0.999999))     # ceil(others - share)
    return max(1, (cpus - min(taken, cpus)) // max(1, processes))


def settle(current: int, wanted: int, previous_wanted: Optional[int]) -> int:
    """The next thread count: down at once (threads beside busy cores cost most), up only when the last
    two readings both asked for more (to the smaller of the two)."""
    if wanted < current:
        return wanted
    if wanted > current and previous_wanted is not None and previous_wanted > current:
        return min(wanted, previous_wanted)
    return current


class ThreadChoice(NamedTuple):
    threads: int
    why: str
    auto: bool               # chosen from the free cores (and so followed during training)


def choose_threads(requested: Optional[int], processes: int = 1, cpus: Optional[int] = None,
                   others: Optional[float] = None, env: Optional[dict] = None) -> ThreadChoice:
    """Threads per process for --num-threads `requested` (None = automatic: measure `others` unless given)."""
    env = os.environ if env is None else env
    if requested is not None:
        return ThreadChoice(max(1, requested), "--num-threads", False)
    if env.get("OMP_NUM_THREADS", "").isdigit() and int(env["OMP_NUM_THREADS"]) > 0:
        return ThreadChoice(int(env["OMP_NUM_THREADS"]), "OMP_NUM_THREADS", False)
    cpus = len(available_cpus()) if cpus is None else cpus
    source = "given"
    if others is None:
        others, source = measure_others()
    n = free_threads(cpus, others, processes)
    return ThreadChoice(n, f"auto: {cpus} CPU{'s' if cpus > 1 else ''}, {others:.1f} busy with other work "
                           f"({source})", True)


# -- measurements ----------------------------------------------------------------------------------------

def read_cpu_times(cpus: Optional[set[int]] = None) -> Optional[CpuTimes]:
    try:
        with open("/proc/stat") as f:
            return parse_proc_stat(f.read(), available_cpus() if cpus is None else cpus)
    except OSError:
        return None


def own_ticks() -> float:
    """This process's CPU time (all its threads) in /proc/stat clock ticks."""
    return time.process_time() * os.sysconf("SC_CLK_TCK")


def measure_others(seconds: float = SAMPLE_SECONDS) -> tuple[float, str]:
    """(cores busy with other processes, how it was measured): /proc/stat over `seconds`, else the load average."""
    cpus = available_cpus()
    before, own = read_cpu_times(cpus), own_ticks()
    if before is not None:
        time.sleep(seconds)
        after = read_cpu_times(cpus)
        if after is not None:
            return others_cores(before, after, own_ticks() - own, len(cpus)), f"/proc/stat over {seconds:g} s"
    try:
        return os.getloadavg()[0], "1-minute load average"
    except (AttributeError, OSError):
        return 0.0, "no measurement"


class ThreadGovernor:
    """Follows other work during training: call `check()` every few seconds; it returns a line to print
    when it changed torch's thread count, else None. Needs /proc/stat (else it never changes anything)."""

    def __init__(self, threads: int, set_threads: Optional[Callable[[int], None]] = None,
                 read: Callable[[], Optional[CpuTimes]] = read_cpu_times, own: Callable[[], float] = own_ticks,
                 cpus: Optional[int] = None):
        if set_threads is None:
            import torch
            set_threads = torch.set_num_threads
        self.threads, self.set_threads, self.read, self.own = threads, set_threads, read, own
        self.cpus = len(available_cpus()) if cpus is None else cpus
        self.last, self.last_own = read(), own()
        self.wanted: Optional[int] = None

    def check(self) -> Optional[str]:
        now, own = self.read(), self.own()
        if now is None or self.last is None:
            return None
        others = others_cores(self.last, now, own - self.last_own, self.cpus)
        self.last, self.last_own = now, own
        wanted = free_threads(self.cpus, others)
        n = settle(self.threads, wanted, self.wanted)
        self.wanted = wanted
        if n == self.threads:
            return None
        old, self.threads = self.threads, n
        self.set_threads(n)
        return f"CPU threads: {old} -> {n} (other processes use {others:.1f} of {self.cpus} cores)"
