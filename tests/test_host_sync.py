"""No host work per micro-batch: between ticks a training step reads no tensor back to the host (the only
reads are of CPU random draws, which are no device sync), statistics are read once per tick, and gradients
live in one flat buffer (no per-parameter copies); EMA and optimiser use foreach/fused kernels."""
from __future__ import annotations

import linecache
import tempfile

import pytest
import torch

from training.distributed import Dist, FlatGrads
from training.stats import StatsCollector
from training.training_loop import Trainer, TrainOptions
from test_dtype_contract import tiny_nets

CPU_DATA = "# CPU data: no device read"
HOST_READS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__", "numpy")


class HostReads:
    """Patches Tensor's host-read methods to record (file, line, source, was a leaf CPU draw) per call."""

    def __init__(self, monkeypatch):
        import sys
        self.calls = []
        for name in HOST_READS:
            orig = getattr(torch.Tensor, name)

            def wrapper(t, *a, _orig=orig, **k):
                f = sys._getframe(1)
                src = linecache.getline(f.f_code.co_filename, f.f_lineno).strip()
                self.calls.append((f.f_code.co_filename, f.f_lineno, src, t.device.type == "cpu" and t.grad_fn is None))
                return _orig(t, *a, **k)
            monkeypatch.setattr(torch.Tensor, name, wrapper)

    def device_reads(self) -> list:
        """Reads that would sync a GPU: anything but a read of a fresh CPU random draw, or of CPU data on a
        line marked so (augmentation: test_augment.py runs it on the meta device, where a read would raise)."""
        ok = ("torch.rand(", "torch.randint(", CPU_DATA)
        return [c for c in self.calls if not (c[3] and any(m in c[2] for m in ok))]


def make_trainer(tmp: str, batch_gpu: int, augment: str = "none") -> Trainer:
    G, D = tiny_nets("GANformer")
    opts = TrainOptions(run_dir=tmp, resolution=16, batch_size=8, batch_gpu=batch_gpu, augment=augment,
                        augment_p=0.5, augment_pipe="bgcfnc")
    opts.loss.pl_weight = 2.0
    return Trainer(opts, G, D, Dist(), torch.device("cpu"), log=lambda *_: None)


ADA_READ = "# the one host read per ADA interval"


@pytest.mark.parametrize("batch_gpu,augment", [(8, "none"), (2, "none"), (4, "ada"), (8, "fixed")])
def test_no_host_reads_per_step(monkeypatch, batch_gpu, augment, one_thread) -> None:
    """Augmentation draws its parameters on the CPU; ADA reads D's mean sign once per adjustment interval."""
    with tempfile.TemporaryDirectory() as tmp:
        tr = make_trainer(tmp, batch_gpu, augment)
        reals = torch.randint(0, 256, [8, 3, 16, 16], dtype=torch.uint8)
        labels, one_hot = torch.zeros(8, dtype=torch.int64), lambda lab: torch.zeros(lab.shape[0], 0)
        reads = HostReads(monkeypatch)
        steps = 2 if augment == "none" else 2 * tr.ada.cfg.interval if augment == "ada" else 1
        for _ in range(steps):                      # step 0 runs every phase (PL and R1 included)
            tr.train_step(reals, labels, one_hot)
        assert reads.calls, "the patch saw nothing: the check would be vacuous"     # the mixing draws
        ada_reads = [c for c in reads.device_reads() if c[2].endswith(ADA_READ)]
        assert len(ada_reads) == (2 if augment == "ada" else 0)
        assert [c for c in reads.device_reads() if c not in ada_reads] == []
        if augment != "none":
            assert tr.augment_pipe.p > 0 and len(reads.calls) > 2 * steps     # it augmented (the CPU draws)
        n = len(reads.calls)
        stats = tr.stats.reduce()
        assert len(reads.calls) == n + 1 and reads.calls[-1][2].endswith("# the one host read per tick")
        assert {"Loss/G/loss", "Loss/D/loss", "Loss/r1_penalty", "Loss/pl_penalty"} <= set(stats)


def test_stats_collector_keeps_tensors_on_their_device() -> None:
    s = StatsCollector()
    s.report("a", torch.tensor([1.0, 3.0]))                  # mean 2
    s.report("a", torch.tensor(4.0, dtype=torch.bfloat16))
    s.report("b", 5)
    assert isinstance(s._sum["a"], torch.Tensor) and s._sum["a"].dtype == torch.float64
    assert s.reduce() == {"a": 3.0, "b": 5.0}


def test_flat_grads_are_views_and_guard_nan() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    fg = FlatGrads(net.parameters())
    net(torch.randn(5, 3)).sum().backward()
    assert all(p.grad.data_ptr() == v.data_ptr() for p, v in zip(fg.params, fg.views))
    assert fg.flat.abs().sum() > 0
    expect = [p.grad.clone() for p in fg.params]
    fg.params[0].grad[0, 0] = float("nan")
    fg.params[1].grad[0] = float("inf")
    fg.reduce(1)
    expect[0][0, 0] = 0
    expect[1][0] = 0
    assert all(torch.equal(p.grad, e) for p, e in zip(fg.params, expect))
    # A replaced .grad is copied back into the buffer, not lost.
    fg.params[2].grad = torch.full_like(fg.params[2], 7.0)
    fg.reduce(1)
    assert fg.params[2].grad is fg.views[2] and (fg.views[2] == 7).all()
    fg.zero()
    assert fg.flat.abs().sum() == 0 and all(p.grad is v for p, v in zip(fg.params, fg.views))
