"""The shard format: writer (atomic, resumable), reader, sampler, batching."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from dnnlib.util import UserError
from training.data import writer as dw
from training.data.dataset import (
    ImageDataset,
    InfiniteSampler,
    ensure_scenes,
    is_complete,
    iterate_batches,
    load_dataset,
    read_manifest,
    to_float,
)


def _images(n, c=3, r=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, c, r, r), dtype=np.uint8)


def _write(root, images, labels=None, class_names=None, shards=3, interrupt_after=None, fingerprint=None, force=False):
    n, c, r = images.shape[0], images.shape[1], images.shape[2]
    w = dw.DatasetWriter(root, name="toy", resolution=r, channels=c, capacity=n, shards_num=shards, ratio=1.0,
                         fingerprint=fingerprint or {"test": 1}, class_names=class_names, checkpoint_seconds=0.0,
                         force=force)
    with w:
        pos = w.start()
        for i in range(pos, n):
            if interrupt_after is not None and i == interrupt_after:
                raise KeyboardInterrupt
            w.add(images[i], None if labels is None else int(labels[i]))
            w.advance(i + 1)
        return w.finish(), pos


def test_round_trip_shards_labels_and_hash(tmp_path):
    imgs = _images(10)
    labels = np.arange(10) % 3
    manifest, _ = _write(tmp_path / "toy", imgs, labels, ["a", "b", "c"], shards=3)
    assert [s["count"] for s in manifest["shards"]] == [4, 4, 2]
    assert manifest["labels"] == labels.tolist() and manifest["class_names"] == ["a", "b", "c"]
    ds = ImageDataset(tmp_path / "toy", use_labels=True, verify=True)
    assert len(ds) == 10 and ds.image_shape == (3, 8, 8) and ds.num_classes == 3
    x, y = ds.get_batch([9, 0, 5, 4])
    assert x.dtype == torch.uint8 and torch.equal(x, torch.from_numpy(imgs[[9, 0, 5, 4]]))
    assert y.tolist() == labels[[9, 0, 5, 4]].tolist()
    img, lab = ds[3]
    assert torch.equal(img, torch.from_numpy(imgs[3])) and lab == labels[3]
    # Same inputs -> same bytes and hash.
    manifest2, _ = _write(tmp_path / "toy2", imgs, labels, ["a", "b", "c"], shards=3)
    assert manifest2["content_hash"] == manifest["content_hash"]
    # Unlabelled access: -1 labels.
    assert ImageDataset(tmp_path / "toy").get_batch([0])[1].tolist() == [-1]


def test_mirror_subset_downsample(tmp_path):
    imgs = _images(6, c=1, r=8)
    _write(tmp_path / "toy", imgs, shards=2)
    ds = ImageDataset(tmp_path / "toy", mirror=True)
    assert len(ds) == 12
    x, _ = ds.get_batch([1, 7])
    assert torch.equal(x[0], torch.from_numpy(imgs[1]))
    assert torch.equal(x[1], torch.from_numpy(imgs[1][..., ::-1].copy()))
    sub = ImageDataset(tmp_path / "toy", max_images=3)
    assert len(sub) == 3 and len(set(sub.indices.tolist())) == 3
    half = ImageDataset(tmp_path / "toy", resolution=4)
    y, _ = half.get_batch([2])
    ref = imgs[2].astype(np.float32).reshape(1, 4, 2, 4, 2).mean(axis=(2, 4))
    assert y.shape == (1, 1, 4, 4) and np.abs(y[0].numpy() - np.rint(ref)).max() <= 0
    with pytest.raises(UserError, match="cannot serve"):
        ImageDataset(tmp_path / "toy", resolution=16)


def test_to_float_range():
    x = torch.tensor([[[[0, 255, 128]]]], dtype=torch.uint8)
    y = to_float(x, "cpu")
    assert y.dtype == torch.float32 and y.min() == -1 and y.max() == 1
    assert abs(float(y[0, 0, 0, 2]) - (128 / 127.5 - 1)) < 1e-6


def test_interrupted_write_resumes_identically(tmp_path):
    imgs, labels = _images(9), np.arange(9) % 2
    with pytest.raises(KeyboardInterrupt):
        _write(tmp_path / "toy", imgs, labels, ["x", "y"], interrupt_after=5)
    assert not is_complete(tmp_path / "toy")
    with pytest.raises(UserError, match="incomplete"):
        ImageDataset(tmp_path / "toy")
    # Junk past the last consistent point (a torn write) must be dropped on resume.
    with open(max((tmp_path / "toy").glob("shard-*.u8")), "ab") as f:
        f.write(b"\x07" * 100)
    manifest, resumed_at = _write(tmp_path / "toy", imgs, labels, ["x", "y"])
    assert resumed_at == 5
    clean, _ = _write(tmp_path / "clean", imgs, labels, ["x", "y"])
    assert manifest["content_hash"] == clean["content_hash"] and manifest["labels"] == labels.tolist()
    assert not (tmp_path / "toy" / dw.PROGRESS_NAME).exists()
    # Different inputs never replace a complete dataset silently; with force they restart from scratch.
    with pytest.raises(UserError, match="different dataset"):
        _write(tmp_path / "toy", _images(9, seed=1), fingerprint={"test": 2})
    assert read_manifest(tmp_path / "toy")["content_hash"] == clean["content_hash"]
    _, pos = _write(tmp_path / "toy", _images(9, seed=1), fingerprint={"test": 2}, force=True)
    assert pos == 0


def test_reader_refuses_broken_datasets(tmp_path):
    with pytest.raises(UserError, match="no dataset"):
        read_manifest(tmp_path / "missing")
    _write(tmp_path / "toy", _images(4), shards=1)
    shard = tmp_path / "toy" / "shard-00000.u8"
    data = bytearray(shard.read_bytes())
    data[0] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(UserError, match="corrupt"):
        ImageDataset(tmp_path / "toy", verify=True)
    shard.write_bytes(bytes(data[:-1]))
    with pytest.raises(UserError):
        ImageDataset(tmp_path / "toy")
    (tmp_path / "toy" / "manifest.json").write_text("{")
    with pytest.raises(UserError):
        read_manifest(tmp_path / "toy")


def test_infinite_sampler_ranks_and_resume():
    n = 7
    def take(sampler, k):
        return [x for _, x in zip(range(k), sampler)]
    stream = take(InfiniteSampler(n, seed=3), 21)
    assert sorted(stream[:7]) == list(range(7)) and sorted(stream[7:14]) == list(range(7))
    r0, r1 = take(InfiniteSampler(n, 0, 2, seed=3), 10), take(InfiniteSampler(n, 1, 2, seed=3), 10)
    assert r0 == stream[0:20:2] and r1 == stream[1:20:2]
    assert take(InfiniteSampler(n, 1, 2, seed=3, start_index=8), 5) == stream[9:19:2]
    assert take(InfiniteSampler(n, seed=4), 7) != stream[:7]
    with pytest.raises(ValueError):
        InfiniteSampler(n, rank=2, world_size=2)


def test_dataloader_and_prefetch_iterator(tmp_path):
    imgs = _images(5)
    _write(tmp_path / "toy", imgs, shards=2)
    ds = ImageDataset(tmp_path / "toy", mirror=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, sampler=InfiniteSampler(len(ds), seed=1))
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 8, 8) and x.dtype == torch.uint8 and y.tolist() == [-1] * 4
    order = [i for _, i in zip(range(8), InfiniteSampler(len(ds), seed=1))]
    batches = iterate_batches(ds, InfiniteSampler(len(ds), seed=1), batch_size=4)
    b1, b2 = next(batches), next(batches)
    batches.close()
    assert torch.equal(b1[0], x) and torch.equal(b2[0], ds.get_batch(order[4:])[0])


def test_ensure_scenes_generates_once(tmp_path, monkeypatch):
    path = ensure_scenes(tmp_path, resolution=8, num_images=6, workers=1, progress=False, log=lambda *_: None)
    assert is_complete(path) and json.loads((path / "manifest.json").read_text())["count"] == 6
    monkeypatch.setattr(dw, "write_scenes", lambda *a, **k: pytest.fail("regenerated"))
    ensure_scenes(tmp_path, resolution=4, num_images=6, log=lambda *_: None)      # higher res is reused
    ds = load_dataset(tmp_path, "scenes", resolution=4)
    assert ds.get_batch([0])[0].shape == (1, 3, 4, 4)


def test_reading_never_writes_a_dataset(tmp_path):
    """load_dataset only reads: a missing `scenes` is an error, not a rendering job."""
    with pytest.raises(UserError):
        load_dataset(tmp_path, "scenes", resolution=8)
    assert not any(tmp_path.iterdir())


def test_hard_kill_resumes_from_last_checkpoint(tmp_path):
    """A killed writer runs no cleanup: the next run truncates to the last recorded point."""
    imgs = _images(8)
    w = dw.DatasetWriter(tmp_path / "toy", name="toy", resolution=8, channels=3, capacity=8, shards_num=2,
                         ratio=1.0, fingerprint={"test": 1}, checkpoint_seconds=0.0)
    w.start()
    for i in range(5):
        w.add(imgs[i])
        w.advance(i + 1)
    w.add(imgs[5])                      # written but never recorded
    w.close()                           # the process dies here (no __exit__, no finish)
    assert not is_complete(tmp_path / "toy")
    manifest, resumed_at = _write(tmp_path / "toy", imgs, shards=2)
    assert resumed_at == 5
    assert manifest["content_hash"] == _write(tmp_path / "clean", imgs, shards=2)[0]["content_hash"]


def test_killed_prepare_process_leaves_no_dataset(tmp_path):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [sys.executable, "prepare_data.py", "--scenes", "--resolution", "8", "--max-images", "50000",
           "--workers", "1", "--data-dir", str(tmp_path)]
    proc = subprocess.Popen(cmd, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shard = tmp_path / "scenes" / "shard-00000.u8"
    deadline = time.time() + 30
    while not (shard.exists() and shard.stat().st_size > 0) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert shard.exists() and proc.returncode == -signal.SIGKILL      # it was killed while writing
    assert not is_complete(tmp_path / "scenes")
    with pytest.raises(UserError, match="incomplete"):
        ImageDataset(tmp_path / "scenes")
