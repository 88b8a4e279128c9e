"""Visualisations: tensor functions (maps, interpolations, noise variance, mixing) and the --vis-* files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training.networks.presets import build
from training.networks import Generator
from training.sampling import to_uint8, z_from_seeds
from training.options import parse
from training.run_config import RunConfig
from training.vis_cli import run_visualizations
from training.visualize import (attention_images, colorize, interpolations, layer_map_images, lerp, mixing_table,
                                mixing_ws, noise_std, noise_variance_image, palette, render, slerp, style_mixing,
                                synthesize)

TINY = dict(channel_base=256, channel_max=32)
R = 16


def tiny_ganformer(c_dim: int = 0, **options) -> Generator:
    torch.manual_seed(0)
    G = Generator(build("GANformer", R, c_dim=c_dim, latent_size=32, components_num=4, **TINY, **options)[0])
    with torch.no_grad():   # a fresh model has zero noise strength; give the noise visible effect
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.3)
    return G.eval().requires_grad_(False)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run faster on one thread, and much faster when other jobs share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def G() -> Generator:
    return tiny_ganformer()


def vis_args(*argv: str) -> RunConfig:
    """The run config of `run_network.py --eval <argv>`."""
    return parse(["--eval", *argv])


def test_palette_is_stable_and_distinct() -> None:
    p4, p16 = palette(4), palette(16)
    assert torch.equal(p4, p16[:4]) and torch.equal(p16, palette(16))
    d = torch.cdist(p16, p16) + torch.eye(16) * 10
    assert d.min() > 0.05                                   # no two components share a colour


def test_soft_and_hard_maps(G) -> None:
    z = z_from_seeds(range(3), G.k, G.z_dim)
    img, maps, ws = synthesize(G, z=z, truncation_psi=0.75)
    assert torch.equal(img, G(z, truncation_psi=0.75, noise_mode="const"))
    assert ws.shape == (3, G.k, G.num_ws, G.z_dim) and len(maps) == 5
    probs = maps[-1][:, 0]                                                   # [B, K, r, r]
    assert torch.allclose(probs.sum(1), torch.ones(()), atol=1e-5)
    out = attention_images(img, maps[-1], alpha=0.3)
    assert {k: tuple(v.shape) for k, v in out.items()} == {k: (3, R, R, 3) for k in
                                                           ("soft", "hard", "soft_blend", "hard_blend")}
    f = R // probs.shape[-1]
    up = probs.repeat_interleave(f, -2).repeat_interleave(f, -1)
    # Hard maps are the colour of the argmax of the soft maps' probabilities.
    assert torch.equal(out["hard"], to_uint8(palette(G.K)[up.argmax(1)].permute(0, 3, 1, 2) * 2 - 1))
    assert torch.equal(out["soft"], to_uint8(colorize(up) * 2 - 1))
    blend = (0.7 * out["hard"].float() / 255 + 0.3 * to_uint8(img).float() / 255) * 255
    assert (out["hard_blend"].float() - blend).abs().max() <= 1.5
    layers = layer_map_images(maps, R)
    assert sorted(layers) == [f"l{i}_h0" for i in range(5)]
    assert torch.equal(layers["l4_h0"], out["hard"])


def test_interpolation_end_points_are_the_sources(G) -> None:
    a, b = z_from_seeds([1, 2], G.k, G.z_dim)
    t = torch.linspace(0, 1, 5)
    path = slerp(a, b, t)
    assert path.shape == (5, *a.shape)
    assert torch.allclose(path[0], a, atol=1e-6) and torch.allclose(path[-1], b, atol=1e-6)
    assert torch.allclose(slerp(a, a, t), a.expand(5, -1, -1), atol=1e-6)      # parallel rows stay put
    wa, wb = torch.randn(2, 3, 4)
    assert torch.equal(lerp(wa, wb, t)[0], wa) and torch.equal(lerp(wa, wb, t)[-1], wb)
    frames = interpolations(G, a, b, None, 0.75, density=5, batch_size=2)
    ends = render(G, 2, z=torch.stack([a, b]), truncation_psi=0.75)
    for space in ("z", "w"):
        assert frames[space].shape == (5, R, R, 3)
        assert (frames[space][[0, -1]].int() - ends.int()).abs().max() <= 1
    assert not torch.equal(frames["z"][2], frames["z"][0])


def test_noise_variance_is_zero_without_noise(G) -> None:
    z = z_from_seeds([0], G.k, G.z_dim)[0]
    for mode in ("const", "none"):
        assert noise_std(G, z, None, 0.75, samples=6, batch_size=4, noise_mode=mode).max() < 1e-3
    std = noise_std(G, z, None, 0.75, samples=6, batch_size=4)
    assert std.shape == (R, R) and std.max() > 1
    # Streaming sums over batches give the plain standard deviation of the same renders.
    torch.manual_seed(0)
    imgs = torch.cat([to_uint8(G(z.expand(n, -1, -1), truncation_psi=0.75)) for n in (4, 2)])
    assert torch.allclose(std, imgs.double().mean(-1).std(0, unbiased=False).float(), atol=1e-3)
    assert torch.equal(noise_std(G, z, None, 0.75, samples=6, batch_size=4), std)   # reproducible
    img = noise_variance_image(std)                    # normalised to its maximum, enlarged for viewing
    assert img.dtype == torch.uint8 and img.shape == (128, 128, 1) and img.max() == 255


def test_mixing_latents_and_tables(G) -> None:
    ws = G.map(z_from_seeds(range(6), G.k, G.z_dim))        # [6, K+1, L, d]
    cols, rows = ws[:4], ws[4:]
    layer = mixing_ws(cols, rows, "layer").reshape(4, 2, 4, *ws.shape[1:])      # (cutoff, row, col)
    assert torch.equal(layer[0, 1, 2, :, :2], rows[1, :, :2]) and torch.equal(layer[0, 1, 2, :, 2:], cols[2, :, 2:])
    assert torch.equal(layer[3, 0, 3, :, :11], rows[0, :, :11]) and torch.equal(layer[3, 0, 3, :, 11:], cols[3, :, 11:])
    comp = mixing_ws(cols, rows, "component").reshape(4, 2, 4, *ws.shape[1:])
    assert torch.equal(comp[0, 0, 1, :2], rows[0, :2]) and torch.equal(comp[0, 0, 1, 2:], cols[1, 2:])
    src = torch.arange(6, dtype=torch.uint8).reshape(6, 1, 1, 1).expand(6, 2, 3, 3)
    mixes = (torch.arange(32, dtype=torch.uint8) + 10).reshape(32, 1, 1, 1).expand(32, 2, 3, 3)
    table = mixing_table(src[:4], src[4:], mixes)
    assert table.shape == (2 * 9, 3 * 5, 3)
    assert table[0, 0, 0] == 0 and table[0, 3, 0] == 0 and table[0, 6, 0] == 1      # corner black, then columns
    assert table[2, 0, 0] == 4 and table[4, 0, 0] == 5 and table[6, 0, 0] == 4      # row sources alternate
    assert table[4, 3, 0] == 10 + 4                                                  # mix (row 1, col 0)
    tables = style_mixing(G, z_from_seeds(range(6), G.k, G.z_dim), None, 0.75, batch_size=5)
    assert tables["layer"].shape == tables["component"].shape == (R * 9, R * 5, 3)


def test_every_option_writes_its_files(G, tmp_path: Path) -> None:
    batches: list[int] = []
    hook = G.synthesis.register_forward_pre_hook(lambda m, a: batches.append(a[0].shape[0]))
    try:
        args = vis_args("--vis-images", "--vis-latents", "--vis-maps", "--vis-layer-maps", "--vis-interpolations",
                        "--vis-noise-var", "--vis-style-mix", "--vis-num", "5", "--vis-rich-num", "2",
                        "--interpolation-density", "4", "--vis-batch-size", "3", "--vis-section-size", "4",
                        "--ratio", "0.5")
        where = run_visualizations(args, G, tmp_path / "visuals", "cpu")
    finally:
        hook.remove()
    assert max(batches) <= 3                                   # never more than one batch in flight
    v = tmp_path / "visuals"
    assert set(where) == {"images", "latents", "maps", "layer_maps", "interpolations", "noise_var", "style_mix"}
    names = [f"{i:06d}" for i in range(5)]
    V = 128                                                     # maps, strips and tables enlarged for viewing
    for folder in ("images", "maps", "softmaps", "blends", "softblends"):
        assert sorted(p.stem for p in (v / folder).glob("*.png")) == names, folder
        side = R if folder == "images" else V                    # images/ stay as rendered
        assert Image.open(v / folder / "000000.png").size == (side, side // 2)     # --ratio crop
    for space in ("z", "w"):
        assert sorted(p.stem for p in (v / f"latents-{space}").glob("*.npy")) == names
        assert np.load(v / f"latents-{space}" / "000003.npy").shape == (G.k, G.z_dim)
        gif = Image.open(v / f"interpolations-{space}" / "000001.gif")
        assert gif.n_frames == 4 and gif.size == (V, V // 2)
        assert Image.open(v / f"interpolations-{space}" / "000001.png").size == (4 * V, V // 2)
    assert np.array_equal(np.load(v / "latents-z" / "000003.npy"), z_from_seeds([3], G.k, G.z_dim)[0].numpy())
    assert sorted(p.name for p in (v / "layer_maps").iterdir()) == names[:2]
    assert sorted(p.stem for p in (v / "layer_maps" / "000001").iterdir()) == [f"l{i}_h0" for i in range(5)]
    assert Image.open(v / "noise-variance.png").mode == "L"
    for kind in ("layer", "component"):
        assert Image.open(v / f"{kind}-mixing.png").size == (V * 5, V * 9)
    img0 = np.asarray(Image.open(v / "images" / "000002.png"))
    ref = to_uint8(G(z_from_seeds([2], G.k, G.z_dim), truncation_psi=0.75, noise_mode="const"))[0, 4:12].numpy()
    assert np.array_equal(img0, ref)                           # sample i is seed i, psi from --truncation-psi


def test_defaults_skips_and_keep_samples(tmp_path: Path) -> None:
    torch.manual_seed(0)
    G2 = Generator(build("StyleGAN2", R, latent_size=16, channel_base=128, channel_max=16)[0]).eval()
    assert run_visualizations(vis_args(), G2, tmp_path, "cpu") == {}                  # nothing asked, nothing done
    where = run_visualizations(vis_args("--vis", "--vis-num", "3", "--vis-rich-num", "1"), G2, tmp_path, "cpu")
    assert set(where) == {"images", "latents", "interpolations", "noise_var"}        # no maps without attention
    assert len(list((tmp_path / "images").glob("*.png"))) == 3
    run_visualizations(vis_args("--vis-images", "--vis-num", "2", "--keep-samples", "False"), G2, tmp_path, "cpu")
    assert len(list((tmp_path / "images").glob("*.png"))) == 2
    assert (tmp_path / "latents-z").is_dir()                                          # other outputs kept


def test_conditional_model(tmp_path: Path) -> None:
    G3 = tiny_ganformer(c_dim=3)
    run_visualizations(vis_args("--vis-images", "--vis-style-mix", "--vis-noise-var", "--vis-interpolations",
                                "--vis-num", "2", "--vis-rich-num", "1", "--interpolation-density", "2"),
                       G3, tmp_path, "cpu")
    assert len(list((tmp_path / "images").glob("*.png"))) == 2 and (tmp_path / "layer-mixing.png").is_file()


@pytest.mark.parametrize("argv,needle", [(["--vis-num", "0"], "--vis-num"),
                                         (["--blending-alpha", "2"], "--blending-alpha"),
                                         (["--interpolation-density", "1"], "--interpolation-density")])
def test_bad_flags(G, tmp_path: Path, argv: list[str], needle: str) -> None:
    from dnnlib.util import UserError
    with pytest.raises(UserError, match=needle):
        run_visualizations(vis_args("--vis-images", *argv), G, tmp_path, "cpu")
