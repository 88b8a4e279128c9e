"""Training statistics: report from anywhere, reduce per tick, write stats.jsonl and TensorBoard files.

The TensorBoard writer is dependency-free: event files are TFRecord-framed `Event` protocol buffers,
which take a few dozen lines to encode by hand (scalars and PNG images only).
"""
from __future__ import annotations

import io
import json
import os
import socket
import struct
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from training.data.sources import encode_varint, frame_records


class StatsCollector:
    """`report(name, value)` during a tick; `reduce()` returns {name: mean of the reports} and starts over.

    Tensors are summed where they live (a few tiny device ops, never a host sync); `reduce()` stacks
    every statistic into one tensor, all-reduces it over ranks and reads it back once per tick.
    """

    def __init__(self) -> None:
        self._sum: dict[str, torch.Tensor | float] = {}
        self._n: dict[str, int] = {}

    def report(self, name: str, value) -> None:
        if isinstance(value, torch.Tensor):
            value = value.detach().mean(dtype=torch.float64)
        else:
            value = float(value)
        self._sum[name] = self._sum[name] + value if name in self._sum else value
        self._n[name] = self._n.get(name, 0) + 1

    def reduce(self, world_size: int = 1) -> dict[str, float]:
        names = sorted(self._sum)
        if not names:
            return {}
        device = next((v.device for v in self._sum.values() if isinstance(v, torch.Tensor)), torch.device("cpu"))
        sums = torch.stack([torch.as_tensor(self._sum[n], dtype=torch.float64, device=device) for n in names])
        buf = torch.stack([sums, torch.tensor([self._n[n] for n in names], dtype=torch.float64, device=device)])
        if world_size > 1:
            import torch.distributed as dist
            dist.all_reduce(buf)                        # every rank reports the same names each tick
        means = (buf[0] / buf[1].clamp(min=1)).tolist()     # the one host read per tick
        self._sum.clear()
        self._n.clear()
        return dict(zip(names, means))


# -- protocol buffer encoding ------------------------------------------------------------------------

def _varint(n: int) -> bytes:
    return encode_varint(n & ((1 << 64) - 1))


def _field(num: int, wire: int, payload: bytes) -> bytes:
    return _varint(num << 3 | wire) + payload


def _bytes_field(num: int, data: bytes) -> bytes:
    return _field(num, 2, _varint(len(data)) + data)


def _event(step: int, summary_values: list[bytes] = (), file_version: Optional[str] = None) -> bytes:
    msg = _field(1, 1, struct.pack("<d", time.time())) + _field(2, 0, _varint(step))
    if file_version is not None:
        msg += _bytes_field(3, file_version.encode())
    if summary_values:
        msg += _bytes_field(5, b"".join(_bytes_field(1, v) for v in summary_values))
    return msg


def _record(data: bytes) -> bytes:
    return frame_records([data])


class TensorBoardWriter:
    """Appends scalar and image summaries to an `events.out.tfevents.*` file in `log_dir`."""

    def __init__(self, log_dir: str | os.PathLike):
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}"
        self._f = open(Path(log_dir) / name, "ab")
        self._f.write(_record(_event(0, file_version="brain.Event:2")))

    def scalars(self, values: dict[str, float], step: int) -> None:
        vals = [_bytes_field(1, tag.encode()) + _field(2, 5, struct.pack("<f", float(v))) for tag, v in values.items()]
        self._f.write(_record(_event(step, vals)))
        self._f.flush()

    def image(self, tag: str, img: np.ndarray, step: int) -> None:
        """img: HWC uint8 (RGB)."""
        import PIL.Image
        buf = io.BytesIO()
        PIL.Image.fromarray(img).save(buf, format="PNG")
        h, w = img.shape[:2]
        image = (_field(1, 0, _varint(h)) + _field(2, 0, _varint(w)) + _field(3, 0, _varint(3))
                 + _bytes_field(4, buf.getvalue()))
        self._f.write(_record(_event(step, [_bytes_field(1, tag.encode()) + _bytes_field(4, image)])))
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class JsonlWriter:
    def __init__(self, path: str | os.PathLike):
        self._f = open(path, "a")

    def write(self, record: dict) -> None:
        self._f.write(json.dumps(record) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()
