"""Speed-related training options: the default micro-batch and the optional torch.compile of G and D."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from training.training_loop import default_batch_gpu


def test_default_batch_gpu_cpu_takes_the_whole_batch() -> None:
    assert default_batch_gpu(256, 32, torch.device("cpu")) == 32
    assert default_batch_gpu(1024, 6, torch.device("cpu")) == 6


@pytest.mark.parametrize("mem_gib, res, per_rank, expect", [
    (80, 256, 32, 32), (80, 512, 32, 16), (80, 1024, 32, 8), (80, 64, 32, 32), (80, 256, 48, 24),
    (24, 256, 32, 16), (24, 1024, 32, 4), (141, 256, 64, 32), (80, 8192, 4, 1)])
def test_default_batch_gpu_rule(monkeypatch, mem_gib, res, per_rank, expect) -> None:
    props = SimpleNamespace(total_memory=mem_gib * 2 ** 30)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: props)
    got = default_batch_gpu(res, per_rank, torch.device("cuda", 0))
    assert got == expect and per_rank % got == 0
