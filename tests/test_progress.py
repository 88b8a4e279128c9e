"""What a new user sees: progress lines, names of short runs, images that can be read."""
from __future__ import annotations

import io

import numpy as np
import torch

from dnnlib.progress import LineBar, StatusLine, bar, fmt_time
from training import snapshots
from training.checkpoint import kimg_tag, latest_snapshot
from training.visualize import dataset_grid, enlarge, noise_variance_image, view_factor, view_grid


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_line_bar_prints_every_interval_with_rate_and_eta():
    clock, out = Clock(), io.StringIO()
    with LineBar(100, "scenes", "img", interval=10, file=out, clock=clock) as b:
        for _ in range(10):
            clock.t += 3
            b.update(5)
    lines = out.getvalue().splitlines()
    # updates at t = 3..30: lines at t=12 (20 img), t=24 (40 img), plus the final count at close
    assert lines[0] == "scenes: 20/100 img (20%), 1.7 img/s, eta 48s"
    assert len(lines) == 3 and lines[-1].startswith("scenes: 50/100 img (50%)")


def test_bar_is_a_line_bar_when_not_a_terminal(capsys):
    assert isinstance(bar(10, "x"), LineBar)                 # pytest's captured stderr is no terminal
    assert not isinstance(bar(10, "x", enabled=False), LineBar)
    assert fmt_time(59) == "59s" and fmt_time(61) == "1m 01s" and fmt_time(3700) == "1h 01m"


def test_status_line_in_place_on_a_terminal_else_new_lines():
    clock = Clock()
    log = io.StringIO()
    s = StatusLine(10, file=log, clock=clock)
    assert not s.due()
    clock.t = 10
    assert s.due()
    s.show("a")
    assert not s.due() and log.getvalue() == "a\n"
    tty = io.StringIO()
    tty.isatty = lambda: True
    s = StatusLine(10, file=tty, clock=clock)
    s.show("b")
    s.clear()
    assert tty.getvalue() == "\rb\033[K\r\033[K"


def test_names_of_short_runs_are_unique_and_sort_by_kimg(tmp_path):
    assert kimg_tag(0) == "000000" and kimg_tag(15000) == "000015"          # whole kimg: the old names
    assert kimg_tag(512) == "000000.512" and kimg_tag(1016) == "000001.016"
    points = [0, 4, 512, 1000, 1016, 2000, 12000]
    assert len({kimg_tag(n) for n in points}) == len(points)
    for n in points:
        (tmp_path / f"training-state-{kimg_tag(n)}.safetensors").write_bytes(b"")
        (tmp_path / f"network-snapshot-{kimg_tag(n)}.safetensors").write_bytes(b"")
    assert snapshots.latest_state(tmp_path).name == "training-state-000012.safetensors"
    assert latest_snapshot(tmp_path).name == "network-snapshot-000012.safetensors"
    snapshots.prune(tmp_path, 3)             # by kimg, not by name ("000001.016" sorts after "000001" as text)
    left = sorted(p.name for p in tmp_path.glob("training-state-*"))
    assert left == ["training-state-000001.016.safetensors", "training-state-000002.safetensors",
                    "training-state-000012.safetensors"]


def test_small_images_are_enlarged_for_viewing_and_noise_maps_normalised():
    assert view_factor(32) == 4 and view_factor(16) == 8 and view_factor(256) == 1 and view_factor(100) == 2
    imgs = torch.arange(2 * 4 * 4 * 3, dtype=torch.uint8).reshape(2, 4, 4, 3)
    big = enlarge(imgs, 3)
    assert big.shape == (2, 12, 12, 3) and torch.equal(big[:, ::3, ::3], imgs) and torch.equal(big[:, 2::3, 1::3], imgs)
    grid = view_grid(imgs, 2)                                # two 128-pixel cells, 2 black pixels apart
    assert grid.shape == (128, 258, 3) and np.array_equal(grid[:4, :4], imgs[0, :1, :1].expand(4, 4, 3).numpy())
    assert (grid[:, 128:130] == 0).all() and np.array_equal(grid[-1, -1], imgs[1, -1, -1].numpy())
    std = torch.zeros(32, 32)
    std[3, 5] = 2.25                                         # a dim map: the official rendering gives 9 of 255
    img = noise_variance_image(std)
    assert img.shape == (128, 128, 1) and img.max() == 255 and img[12:16, 20:24].min() == 255 and img[0, 0] == 0
    assert noise_variance_image(torch.zeros(8, 8)).max() == 0


def test_dataset_grid_spreads_over_the_dataset(tmp_path):
    from training.data.dataset import ImageDataset
    from training.data.writer import write_scenes
    write_scenes(tmp_path / "scenes", resolution=16, count=40, workers=1, progress=False)
    ds = ImageDataset(tmp_path / "scenes")
    grid = dataset_grid(ds, cols=8, rows=4)
    assert grid.shape == (4 * 130 - 2, 8 * 130 - 2, 3)
    last = ds.get_batch([39])[0][0].permute(1, 2, 0)                    # the last cell is the last image
    assert np.array_equal(grid[-128::8, -128::8], last.numpy())


def test_short_run_keeps_every_point_shows_status_and_writes_reals(tmp_path, capsys, one_thread):
    from test_stats import _fields
    from training.data.sources import read_records
    from training.data.writer import write_scenes
    from training.distributed import Dist
    from training.networks import Discriminator, Generator
    from training.networks.config import DiscriminatorConfig
    from training.networks.presets import build
    from training.training_loop import Trainer, TrainOptions
    write_scenes(tmp_path / "data" / "scenes", resolution=16, count=16, workers=1, progress=False)
    G = Generator(build("StyleGAN2", 16, latent_size=16, channel_base=64, channel_max=8)[0])
    D = Discriminator(DiscriminatorConfig(img_resolution=16, channel_base=64, channel_max=8, mbstd_group_size=2))
    run = tmp_path / "run"
    run.mkdir()
    opts = TrainOptions(run_dir=str(run), data_dir=str(tmp_path / "data"), resolution=16, batch_size=2, batch_gpu=2,
                        total_kimg=0.008, kimg_per_tick=0.004, snapshot_ticks=1, status_seconds=0,
                        state_minutes=1e-9, grid_size=(2, 1), last_snapshots=0)
    Trainer(opts, G, D, Dist(), torch.device("cpu")).run()
    out = capsys.readouterr().out
    # a status line after every step inside a tick (status_seconds=0): kimg, img/s, ETAs
    assert "  kimg 0.002    tick 1: 0.002/0.004 kimg  img/s" in out and "tick eta" in out and "run eta" in out
    assert "(1 process, 1 CPU thread)" in out
    assert out.rstrip().endswith(f"to look at: reals.png, fakes-000000.008.png in {run}")   # the run's last line
    # every sample grid, snapshot and state kept under its own name; grids enlarged to 128-pixel cells
    names = {p.name for p in run.iterdir()}
    for tag in ("000000", "000000.004", "000000.008"):
        assert f"fakes-{tag}.png" in names
    assert {"network-snapshot-000000.004.safetensors", "network-snapshot-000000.008.safetensors"} <= names
    assert {"training-state-000000.002.safetensors", "network-snapshot-000000.006.safetensors"} <= names  # by time
    assert snapshots.is_timed(run / "network-snapshot-000000.006.safetensors")     # so pruning can tell them apart
    assert not snapshots.is_timed(run / "network-snapshot-000000.004.safetensors")
    from PIL import Image
    assert Image.open(run / "fakes-000000.004.png").size == (2 * 130 - 2, 128)
    assert Image.open(run / "reals.png").size == (8 * 130 - 2, 2 * 130 - 2)   # 16 images: 8 x 2
    # TensorBoard steps are image counts
    (events,) = run.glob("events.out.tfevents.*")
    steps = [dict(_fields(r)).get(2) for r in list(read_records(events))[1:]]
    assert sorted(set(s for s in steps if s is not None)) == [0, 4, 8]
