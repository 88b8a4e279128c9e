"""The built-in `scenes` renderer and dataset."""
import numpy as np
import pytest

from training.data import scenes
from training.data.dataset import ImageDataset
from training.data.writer import write_scenes


def test_scene_sampling_is_deterministic_and_valid():
    for i in range(30):
        s = scenes.sample_scene(7, i)
        assert all(np.array_equal(v, scenes.sample_scene(7, i)[k]) for k, v in s.items())
        n = int((s["shape"] >= 0).sum())
        assert 3 <= n <= 10 and np.all(s["shape"][n:] == -1)
        x, y, size = s["x"][:n], s["y"][:n], s["size"][:n]
        gap = np.hypot(x[:, None] - x[None], y[:, None] - y[None]) - (size[:, None] + size[None])
        assert np.all(gap[~np.eye(n, dtype=bool)] > 0)          # objects never interpenetrate
    assert not np.array_equal(scenes.sample_scene(7, 0)["x"], scenes.sample_scene(8, 0)["x"])


def test_render_is_batch_independent_and_varied():
    batch = scenes.render_images(0, range(6), 32)
    assert batch.shape == (6, 3, 32, 32) and batch.dtype == np.uint8
    assert np.array_equal(scenes.render_images(0, [4], 32)[0], batch[4])
    assert not np.array_equal(batch[0], batch[1])
    # Objects stand out from the grey ground: many pixels are saturated colours.
    sat = batch.max(axis=1).astype(int) - batch.min(axis=1)
    assert (sat > 40).mean() > 0.01


def test_materials_and_shapes_look_different():
    """A metal sphere shows a white highlight; the rubber one (and the grey ground) nothing as bright."""
    n = scenes.MAX_OBJECTS

    def one(metal):
        s = {"shape": np.full(n, -1), "x": np.zeros(n, np.float32), "y": np.zeros(n, np.float32),
             "size": np.ones(n, np.float32), "angle": np.zeros(n, np.float32), "color": np.zeros(n, int),
             "metal": np.zeros(n, bool)}
        s["shape"][0], s["size"][0], s["color"][0], s["metal"][0] = 0, 0.7, 2, metal
        return s

    rubber, metal = scenes.render_batch([one(False), one(True)], 64)
    def whiteness(img):                     # the brightest value reached in all channels at once
        return int(img.min(axis=0).max())
    assert whiteness(metal) > whiteness(rubber) + 40


@pytest.mark.parametrize("res", [4, 16])
def test_any_power_of_two(res):
    assert scenes.render_images(1, range(2), res).shape == (2, 3, res, res)


def test_workers_match_single_process():
    one = np.concatenate(list(scenes.iter_scenes(2, 0, 10, 8, workers=1)))
    two = np.concatenate(list(scenes.iter_scenes(2, 0, 10, 8, workers=2)))
    assert np.array_equal(one, two) and one.shape == (10, 3, 8, 8)
    with pytest.raises(ValueError):
        next(scenes.iter_scenes(0, 0, 1, 12))


def test_write_scenes_dataset(tmp_path):
    s = write_scenes(tmp_path / "scenes", resolution=16, count=12, seed=5, workers=1, progress=False)
    assert s["count"] == 12 and not s["already"]
    ds = ImageDataset(tmp_path / "scenes")
    assert np.array_equal(ds.get_batch(range(12))[0].numpy(), scenes.render_images(5, range(12), 16))
    again = write_scenes(tmp_path / "scenes", resolution=16, count=12, seed=5, workers=1, progress=False)
    assert again["already"]
