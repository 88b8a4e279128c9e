"""CPU threads that degrade gracefully on a machine shared with other work.

Measured with bench/bench_threads.py (figures in bench/results/threads-cpu.json): with the other cores
busy, OpenMP's default wait policy lets each torch thread spin while its siblings are descheduled,
and two threads ran many times slower than one. So:

* OMP_WAIT_POLICY defaults to PASSIVE (idle threads sleep instead of spinning); it must be in the
  environment before torch is imported, hence `prefer_passive_wait()` at the top of the scripts;
* the thread count defaults to the cores that are free when a run starts (CPUs this process may use,
  minus the whole cores the 1-minute load average says are busy, split over the processes; at least 1);
  `--num-threads N` (the seed's flag) or OMP_NUM_THREADS choose it instead.
"""
from __future__ import annotations

import os
from typing import Optional


def prefer_passive_wait() -> None:
    """Idle OpenMP threads sleep rather than spin, unless the user set a policy. Call before importing torch."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def choose_threads(requested: Optional[int], processes: int = 1, cpus: Optional[int] = None,
                   load: Optional[float] = None, env: Optional[dict] = None) -> tuple[int, str]:
    """(threads per process, how they were chosen) for --num-threads `requested` (None = automatic)."""
    env = os.environ if env is None else env
    if requested is not None:
        return max(1, requested), "--num-threads"
    if env.get("OMP_NUM_THREADS", "").isdigit() and int(env["OMP_NUM_THREADS"]) > 0:
        return int(env["OMP_NUM_THREADS"]), "OMP_NUM_THREADS"
    cpus = available_cpus() if cpus is None else cpus
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
    free = max(1, cpus - int(load))
    n = max(1, min(cpus, free) // max(1, processes))
    return n, f"auto: {cpus} CPU{'s' if cpus > 1 else ''}, load {load:.1f}"

