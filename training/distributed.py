"""torch.distributed plumbing: one process per GPU (or CPU process for tests), same code under torchrun."""
from __future__ import annotations

import datetime
import os
import socket
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cuda_index(local_rank: int, gpus: list[int]) -> int:
    """The CUDA device of a process: the local_rank-th of --gpus, or local_rank past the end of that list."""
    return gpus[local_rank] if local_rank < len(gpus) else local_rank


def from_torchrun(gpus: list[int] = ()) -> Dist | None:
    """The process group torchrun describes in the environment, or None when not under torchrun."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) < 2:
        return None
    d = Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    if torch.cuda.is_available():
        # before the group exists: NCCL collectives (the run plan's broadcast_object_list is the first) use the
        # current device, and every rank on cuda:0 is an error ("Duplicate GPU detected") or a hang
        torch.cuda.set_device(cuda_index(d.local_rank, list(gpus)))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    _init(backend, rank=d.rank, world_size=d.world_size)
    return d


# How long a rank waits in a collective before the group gives up. Rank 0 alone evaluates metrics at snapshots
# (FID of 50k images, and once the dataset's statistics) while the others wait in the next gradient all-reduce;
# NCCL's default of 10 minutes would abort them mid-run.
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=2)


def _init(backend: str, **kwargs) -> None:
    """init_process_group, after importing torch._dynamo.

    Importing torch._dynamo once a process group exists (the optimisers import it) leaves references to the
    default group that destroy_process_group cannot drop, so the group and its gloo worker threads live on
    into interpreter shutdown. A worker thread that releases the last collective's tensors there needs the
    GIL, which a finalising interpreter no longer hands out, and the process dies of std::terminate (SIGABRT)
    after training has finished. Imported first, dynamo keeps no such references and teardown() joins the
    threads while Python is still whole."""
    import torch._dynamo  # noqa: F401  (see above; the optimisers import it anyway)
    dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT, **kwargs)


def teardown() -> None:
    """Every rank has finished its collectives; then the group and its threads are gone."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _worker(local_rank: int, world_size: int, port: int, backend: str, fn: Callable, args: tuple) -> None:
    _init(backend, init_method=f"tcp://127.0.0.1:{port}", rank=local_rank, world_size=world_size)
    try:
        fn(Dist(local_rank, world_size, local_rank), *args)
        teardown()
    finally:
        if dist.is_initialized():          # after an error, no barrier: the other ranks may never get there
            dist.destroy_process_group()


def launch(fn: Callable, world_size: int, args: tuple, backend: str) -> None:
    """Run fn(Dist, *args) in `world_size` processes on this machine (rank 0 logs and writes files)."""
    if world_size == 1:
        fn(Dist(), *args)
        return
    try:
        torch.multiprocessing.spawn(_worker, args=(world_size, free_port(), backend, fn, args), nprocs=world_size)
    except torch.multiprocessing.ProcessRaisedException as e:
        from dnnlib.util import UserError
        tail = str(e).strip().splitlines()[-1]
        if "UserError: " in tail:                  # a worker's one-line error stays one line
            raise UserError(tail.split("UserError: ", 1)[1]) from None
        raise


def sync_params(module: torch.nn.Module, world_size: int) -> None:
    """Give every rank rank 0's parameters and buffers."""
    if world_size > 1:
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


class FlatGrads:
    """A module's gradients as views into one flat buffer, so that zeroing them, averaging them over ranks
    and the NaN/Inf guard are one op each on the whole buffer: no per-parameter copies, and with one
    process nothing but the guard.

    Backward accumulates into the views in place. Should anything replace a parameter's `.grad`,
    `reduce()` copies it back into its view (and re-attaches the view) rather than lose it.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter]):
        self.params = list(params)
        if not self.params:
            raise ValueError("FlatGrads needs at least one parameter")
        ref = self.params[0]
        if any(p.dtype != ref.dtype or p.device != ref.device for p in self.params):
            raise ValueError("FlatGrads needs parameters of one dtype and device")
        self.flat = torch.zeros(sum(p.numel() for p in self.params), dtype=ref.dtype, device=ref.device)
        self.views = list(self.flat.split([p.numel() for p in self.params]))
        self.views = [v.view_as(p) for v, p in zip(self.views, self.params)]
        self._attach()

    def _attach(self) -> None:
        for p, v in zip(self.params, self.views):
            if p.grad is not v:
                if p.grad is not None:
                    v.copy_(p.grad)
                p.grad = v

    def zero(self) -> None:
        self._attach()
        self.flat.zero_()

    def reduce(self, world_size: int) -> None:
        """Average over ranks (one all-reduce) and zero any NaN/Inf, in place, before the optimiser step."""
        self._attach()
        if world_size > 1:
            dist.all_reduce(self.flat)
            self.flat.div_(world_size)
        torch.nan_to_num(self.flat, nan=0.0, posinf=0.0, neginf=0.0, out=self.flat)


def average_buffer(t: torch.Tensor, world_size: int) -> None:
    if world_size > 1:
        dist.all_reduce(t)
        t /= world_size


def check_consistency(module: torch.nn.Module, world_size: int, what: str) -> None:
    """Raise if any rank's parameters differ from rank 0's (they must stay bitwise identical)."""
    if world_size < 2:
        return
    flat = torch.cat([p.detach().flatten().float() for p in module.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(world_size)]
    dist.all_gather(gathered, flat)
    worst = max((g - gathered[0]).abs().max().item() for g in gathered)
    if worst != 0:
        raise RuntimeError(f"{what}: parameters differ across ranks (max abs difference {worst:g})")
