"""TrainOptions.compile on CPU: one training step of a tiny GANformer with torch.compile'd G and D (inductor)
runs, really compiles graphs, and reports the eager step's losses.

Slow: compiling G and D (forward and backward) takes minutes on a 2-core CPU (about 150 s on the shared dev
machine), so it runs only with GANFORMER_SLOW=1 or -m slow. Skipped where inductor cannot compile at all."""
from __future__ import annotations

import copy
import functools

import pytest
import torch

from test_dtype_contract import tiny_nets
from training.distributed import Dist
from training import training_loop
from training.training_loop import Trainer, TrainOptions, torch_compiles_generator


@functools.lru_cache(maxsize=None)
def inductor_problem() -> str:
    """Why inductor cannot compile on this machine ('' when it can): it needs a C++ compiler on CPU."""
    try:
        f = torch.compile(lambda t: t.sin() + 1, backend="inductor")
        return "" if torch.allclose(f(torch.ones(3)), torch.ones(3).sin() + 1) else "wrong result from a trivial graph"
    except Exception as e:  # noqa: BLE001 -- any failure of the trivial compile means no inductor here
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def one_step(G, D, tmp_path, compile: bool) -> tuple[Trainer, dict]:
    opts = TrainOptions(run_dir=str(tmp_path), resolution=16, batch_size=4, batch_gpu=4, compile=compile)
    tr = Trainer(opts, copy.deepcopy(G), copy.deepcopy(D), Dist(), torch.device("cpu"), log=lambda *_: None)
    reals = torch.randint(0, 256, [4, 3, 16, 16], dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    tr.train_step(reals, torch.zeros(4, dtype=torch.int64), lambda lab: torch.zeros(lab.shape[0], 0))
    return tr, tr.stats.reduce()


@pytest.mark.slow
def test_compiled_training_step_on_cpu(tmp_path, monkeypatch):
    problem = inductor_problem()
    if problem:
        pytest.skip(f"torch.compile (inductor) does not work here: {problem}")
    import torch._inductor.config
    from torch._dynamo.utils import counters
    # inductor draws random numbers (G's noise, dropout) with its own generator unless told to use eager's;
    # for a comparison draw for draw, it must use eager's
    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    G, D = tiny_nets("GANformer")
    _, eager = one_step(G, D, tmp_path / "eager", compile=False)
    counters.clear()
    tr, compiled = one_step(G, D, tmp_path / "compiled", compile=True)
    # G's and D's graphs, at least (D's only where this torch keeps G eager: training_loop.COMPILE_G_MIN_TORCH)
    assert tr.compiled is not None and counters["stats"]["unique_graphs"] >= (2 if torch_compiles_generator() else 1)
    assert set(compiled) == set(eager) and {"Loss/G/loss", "Loss/D/loss", "Loss/r1_penalty"} <= set(eager)
    for k in eager:         # same draws, same math; inductor may fuse and reorder float32 sums
        assert compiled[k] == pytest.approx(eager[k], rel=1e-4, abs=1e-6), k
    params = torch.cat([p.detach().flatten() for p in tr.G.parameters()])
    assert torch.isfinite(params).all()


def test_compile_targets_what_the_loss_calls(tmp_path, monkeypatch):
    """The loss calls G.generate and D.forward: those are what --compile compiles (torch.compile(G) alone
    would compile G.forward, which training never calls). Wiring only: torch.compile is recorded, not run."""
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: (compiled.append(fn), fn)[1])
    monkeypatch.setattr(training_loop, "torch_compiles_generator", lambda: True)
    G, D = tiny_nets("GANformer")
    tr, _ = one_step(G, D, tmp_path, compile=True)
    assert len(compiled) == 2
    gen, disc = compiled
    assert getattr(gen, "__self__", None) is tr.G and gen.__func__ is type(tr.G).generate
    assert disc is tr.D
    assert tr.compiled[0].generate is gen and tr.compiled[0].z_dim == tr.G.z_dim     # the rest is G's own


def test_older_torch_keeps_G_eager(tmp_path, monkeypatch):
    """torch 2.11 miscompiled G.generate (see training_loop.COMPILE_G_MIN_TORCH): there only D is compiled."""
    assert not torch_compiles_generator("2.11.0+cu130") and not torch_compiles_generator("2.12.1")
    assert torch_compiles_generator("2.13.0+cpu") and torch_compiles_generator("2.14.1")
    assert torch_compiles_generator("2.13.0a0+git1234") and torch_compiles_generator("3.0.0")
    compiled, lines = [], []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: (compiled.append(fn), fn)[1])
    monkeypatch.setattr(training_loop, "torch_compiles_generator", lambda: False)
    G, D = tiny_nets("GANformer")
    opts = TrainOptions(run_dir=str(tmp_path), resolution=16, batch_size=4, batch_gpu=4, compile=True)
    tr = Trainer(opts, G, D, Dist(), torch.device("cpu"), log=lines.append)
    assert compiled == [tr.D] and tr.compiled[0] is tr.G
    assert any("G stays eager" in line for line in lines)
