"""The dependency-free TensorBoard writer produces valid TFRecord-framed Event protos; stats reduce to means."""
from __future__ import annotations

import struct

import numpy as np

from training.data.sources import read_records
from training.stats import StatsCollector, TensorBoardWriter


def _fields(buf: bytes) -> list[tuple[int, object]]:
    """Decode one protobuf message into (field number, value) pairs (varint, fixed32/64, bytes)."""
    out, pos = [], 0

    def varint() -> int:
        nonlocal pos
        result = shift = 0
        while True:
            b = buf[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return result

    while pos < len(buf):
        key = varint()
        num, wire = key >> 3, key & 7
        if wire == 0:
            out.append((num, varint()))
        elif wire == 1:
            out.append((num, struct.unpack("<d", buf[pos:pos + 8])[0]))
            pos += 8
        elif wire == 5:
            out.append((num, struct.unpack("<f", buf[pos:pos + 4])[0]))
            pos += 4
        else:
            n = varint()
            out.append((num, buf[pos:pos + n]))
            pos += n
    return out


def test_event_file_round_trip(tmp_path) -> None:
    tb = TensorBoardWriter(tmp_path)
    tb.scalars({"Loss/G/loss": 1.5, "Progress/kimg": 12.0}, step=12)
    tb.image("Samples/fakes", np.zeros([8, 16, 3], np.uint8), step=12)
    tb.close()
    (path,) = tmp_path.glob("events.out.tfevents.*")
    records = list(read_records(path, verify=True))
    assert len(records) == 3 and all(r is not None for r in records)
    assert dict(_fields(records[0]))[3] == b"brain.Event:2"
    event = dict(_fields(records[1]))
    assert event[2] == 12
    values = [dict(_fields(v)) for n, v in _fields(event[5]) if n == 1]
    assert {v[1].decode(): v[2] for v in values} == {"Loss/G/loss": 1.5, "Progress/kimg": 12.0}
    image = dict(_fields(dict(_fields(dict(_fields(records[2]))[5]))[1]))
    assert image[1] == b"Samples/fakes"
    img = dict(_fields(image[4]))
    assert (img[1], img[2]) == (8, 16) and img[4][:8] == b"\x89PNG\r\n\x1a\n"


def test_stats_collector_means() -> None:
    s = StatsCollector()
    for v in (1.0, 2.0, 6.0):
        s.report("a", v)
    s.report("b", 4)
    assert s.reduce() == {"a": 3.0, "b": 4.0}
    assert s.reduce() == {}
