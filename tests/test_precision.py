"""dnnlib/precision.py: one way to set TF32 (the new per-backend setting where PyTorch has it, never mixed with
the legacy flags), and the places that need full float32 get it."""
from __future__ import annotations

import torch

from dnnlib.precision import _backends, full_fp32, set_tf32


def _state() -> list:
    b = _backends()
    return [x.fp32_precision for x in b] if b else [torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32]


def test_full_fp32_turns_tf32_off_and_restores(monkeypatch) -> None:
    before = _state()
    try:
        set_tf32(True)
        on = _state()
        with full_fp32():
            off = _state()
            with full_fp32():
                assert _state() == off
            assert _state() == off
        assert _state() == on and on != off
        assert off == (["ieee", "ieee"] if _backends() else [False, False])
    finally:
        for b, v in zip(_backends(), before):
            b.fp32_precision = v


def test_augmentation_runs_without_tf32() -> None:
    """The pipe's sampling grid and colour matrix come from float32 matmuls, which TF32 would round."""
    from training.data.augment import AugmentPipe
    seen = []
    pipe = AugmentPipe("bgc", p=1.0)
    real_apply = pipe._apply
    pipe._apply = lambda x: (seen.append(_state()), real_apply(x))[1]
    set_tf32(True)
    try:
        out = pipe(torch.rand(2, 3, 16, 16) * 2 - 1)
    finally:
        set_tf32(False)
    assert out.shape == (2, 3, 16, 16) and seen and seen[0] == (["ieee", "ieee"] if _backends() else [False, False])
