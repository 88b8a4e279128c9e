"""A multi-process run ends with its process group gone: no gloo worker thread is left for interpreter
shutdown, where its release of the last collective's tensors needs the GIL and aborts the process (SIGABRT
after "done", about one two-process CPU run in ten before training/distributed._init imported torch._dynamo
ahead of the group)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SCRIPT = '''
import os, sys
sys.path.insert(0, {repo!r})
import torch
import torch.multiprocessing as mp

def threads():
    return len(os.listdir("/proc/self/task"))

def child(rank, port):
    from training import distributed
    before = threads()
    distributed._init("gloo", init_method=f"tcp://127.0.0.1:{{port}}", rank=rank, world_size=2)
    net = torch.nn.Linear(4, 4)
    distributed.sync_params(net, 2)
    torch.optim.Adam(net.parameters(), fused=True)     # the optimisers import torch._dynamo
    distributed.check_consistency(net, 2, "net")       # the last collective: an all-gather
    distributed.teardown()
    print(f"rank {{rank}} threads before {{before}} after {{threads()}}", flush=True)

if __name__ == "__main__":
    from training.distributed import free_port
    mp.spawn(child, args=(free_port(),), nprocs=2)
'''


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc (Linux)")
def test_teardown_leaves_no_process_group_threads(tmp_path) -> None:
    script = tmp_path / "teardown.py"
    script.write_text(SCRIPT.format(repo=str(REPO)))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = sorted(l for l in proc.stdout.splitlines() if l.startswith("rank "))
    assert len(lines) == 2, proc.stdout
    for line in lines:
        before, after = int(line.split()[4]), int(line.split()[6])
        assert after == before, f"process group threads outlive teardown: {line}"


def test_every_launcher_maps_ranks_to_the_same_gpus() -> None:
    """torchrun's early set_device (before the NCCL group) and the worker's device use one rule: the
    local_rank-th of --gpus, or local_rank itself past its end."""
    from training.distributed import cuda_index
    assert [cuda_index(r, [2, 3]) for r in (0, 1)] == [2, 3]
    assert [cuda_index(r, [0]) for r in (0, 1, 2)] == [0, 1, 2]
    assert cuda_index(1, []) == 1
