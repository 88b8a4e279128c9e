"""Every preset and option builds, runs forward and backward, and trains every live parameter."""
from __future__ import annotations

import re

import pytest
import torch

from training.networks import Discriminator, Generator
from training.networks.config import DiscriminatorConfig
from training.networks.presets import PRESETS, build

TINY = dict(channel_base=256, channel_max=32)


def tiny(preset: str, res: int = 16, c_dim: int = 0, **options) -> Generator:
    """A small network of `preset` built the way the command line builds it (options = flags)."""
    kw = {"latent_size": 32, "components_num": 4} if preset in ("GANformer", "kGAN") else {"latent_size": 32}
    G_cfg, _ = build(preset, res, c_dim=c_dim, **kw, **{**TINY, **options})
    torch.manual_seed(0)
    return Generator(G_cfg)


def dead_patterns(G: Generator) -> list[str]:
    """Parameters that by design receive no gradient (kept for the official weight layout)."""
    cfg, pats = G.cfg, []
    att = cfg.synthesis.attention
    if att.kmeans:
        pats += [r"\.attn\.to_keys\.", r"\.attn\.to_pos_map\."]     # k-means logits ignore keys (spec §5)
        if att.iterative:
            pats += [r"b(?!4\.)\d+\.conv\d\.attn\.centroids"]          # only the first layer's centroids are used
    if not att.use_pos:
        pats += [r"\.attn\.to_pos_map\."]
    if not cfg.synthesis.style:
        pats += [r"\.affine\."]                                       # plain convolutions ignore the styles
    if cfg.components_num and not (cfg.mapping.ltnt2ltnt and cfg.mapping.use_pos):
        if not (cfg.synthesis.transformer and att.use_pos and not att.kmeans):
            pats += [r"^pos$"]
    return pats


def run_and_check(G: Generator, c_dim: int = 0, batch: int = 4) -> torch.Tensor:
    res = G.img_resolution
    D = Discriminator(DiscriminatorConfig(img_resolution=res, c_dim=c_dim, channel_base=256, channel_max=32))
    G.train(), D.train()
    z = torch.randn(batch, G.k, G.z_dim)
    c = torch.nn.functional.one_hot(torch.arange(batch) % c_dim, c_dim).float() if c_dim else None
    img, att, ws = G(z, c, return_att=True, return_ws=True)
    assert img.shape == (batch, 3, res, res) and torch.isfinite(img).all()
    assert ws.shape == (batch, G.k, G.num_ws, G.z_dim)
    logits = D(img, c)
    assert logits.shape == (batch, 1)
    (logits.mean() + img.square().mean()).backward()
    no_grad = [n for n, p in G.named_parameters() if p.grad is None]
    dead = dead_patterns(G)
    unexpected = [n for n in no_grad if not any(re.search(p, n) for p in dead)]
    assert not unexpected, f"parameters without gradient: {unexpected}"
    assert all(p.grad is not None for p in D.parameters())
    return att


@pytest.mark.parametrize("preset", list(PRESETS))
def test_preset_trains(preset: str) -> None:
    run_and_check(tiny(preset, res=32 if preset == "SAGAN" else 16))


@pytest.mark.parametrize("overrides", [
    {"kmeans": False},                         # simplex
    {"kmeans_iters": 3},
    {"iterative": True},                       # crashes in the official port
    {"num_heads": 2},
    {"integration": "both"},                   # crashes in the official port
    {"integration": "add", "normalize": "instance"},
    {"ltnt_gate": True, "img_gate": True},   # ltnt_gate crashes there
    {"pos_type": "trainable"},                 # frozen in the official port
    {"pos_type": "trainable2d"},
    {"pos_type": "linear"},
    {"pos_directions_num": 4},
    {"img2ltnt": True, "kmeans": False},   # the paper's true duplex
    {"g_arch": "skip"},
    {"g_arch": "orig"},
    {"g_start_res": 3, "g_end_res": 4},
    {"latent_stem": True},
    {"mapping_resnet": False, "mapping_ltnt2ltnt": False},
    {"component_dropout": 0.5},
])
def test_ganformer_options(overrides: dict) -> None:
    att = run_and_check(tiny("GANformer", **overrides))
    G_att_layers = att.shape[2]
    assert att.ndim == 6 and att.shape[1] == 4 and G_att_layers >= 1


def test_trainable_grid_encoding_receives_gradient() -> None:
    G = tiny("GANformer", **{"pos_type": "trainable2d"})
    run_and_check(G)
    grads = [p.grad for n, p in G.named_parameters() if n.endswith("grid.emb")]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_conditional_resnet_mapping() -> None:
    """Labels with the residual mapping network crash in the official port; here they work."""
    G = tiny("GANformer", c_dim=3)
    run_and_check(G, c_dim=3)


def test_attention_maps_are_distributions() -> None:
    G = tiny("GANformer").eval()
    with torch.no_grad():
        _, att = G(torch.randn(2, G.k, G.z_dim), return_att=True)
    assert torch.allclose(att.sum(dim=1), torch.ones(()), atol=1e-5)     # softmax over the K latents
    assert att.shape[-1] == 16


def test_true_duplex_updates_latents_from_the_image() -> None:
    """img2ltnt = simplex attention whose keys/values come from latents updated bottom-up from the image:
    with the update's output projection zeroed it equals simplex exactly; otherwise the maps change."""
    simplex = tiny("GANformer", **{"kmeans": False}).eval()
    duplex = tiny("GANformer", **{"kmeans": False, "img2ltnt": True}).eval()
    missing = duplex.load_state_dict(simplex.state_dict(), strict=False).missing_keys
    assert missing and all(".ltnt_update." in k for k in missing)
    z = torch.randn(2, simplex.k, simplex.z_dim)
    with torch.no_grad():
        ws = simplex.map(z)
        img_s, maps_s = simplex.synthesize(ws, noise_mode="const")
        img_d, maps_d = duplex.synthesize(ws, noise_mode="const")
        assert not torch.allclose(maps_s[0], maps_d[0])
        for name, p in duplex.named_parameters():
            if ".ltnt_update.modulation." in name:
                p.zero_()
        img_0, maps_0 = duplex.synthesize(ws, noise_mode="const")
    assert torch.allclose(img_0, img_s, atol=1e-5) and torch.allclose(maps_0[0], maps_s[0], atol=1e-6)


def test_truncation_and_style_mixing_slots() -> None:
    G = tiny("GANformer").eval()
    z = torch.randn(3, G.k, G.z_dim)
    with torch.no_grad():
        ws = G.map(z)
        G.mapping.w_avg.normal_()
        wt = G.map(z, truncation_psi=0.5)
        wc = G.map(z, truncation_psi=0.5, truncation_cutoff=2)
    assert torch.allclose(wt, G.mapping.w_avg + 0.5 * (ws - G.mapping.w_avg), atol=1e-6)
    assert torch.allclose(wc[:, :, :2], wt[:, :, :2]) and torch.equal(wc[:, :, 2:], ws[:, :, 2:])


def test_w_avg_tracks_in_training_only() -> None:
    G = tiny("StyleGAN2")
    z = torch.randn(4, G.k, G.z_dim)
    G.eval()
    G(z)
    assert G.mapping.w_avg.abs().sum() == 0
    G.train()
    G(z)
    assert G.mapping.w_avg.abs().sum() > 0


def test_default_ganformer_256_parameter_count() -> None:
    G = Generator(build("GANformer", 256)[0])
    assert sum(p.numel() for p in G.parameters()) == 30_903_632


def test_discriminator_architectures() -> None:
    for arch in ("resnet", "skip", "orig"):
        D = Discriminator(DiscriminatorConfig(img_resolution=16, architecture=arch, channel_base=256, channel_max=32))
        x = torch.randn(4, 3, 16, 16, requires_grad=True)
        out = D(x)
        (g,) = torch.autograd.grad(out.sum(), x, create_graph=True)    # R1 needs double backward
        (g.square().sum() + out.mean()).backward()
        assert out.shape == (4, 1) and all(p.grad is not None for p in D.parameters())


def test_bad_config_is_rejected() -> None:
    from dnnlib.util import UserError
    with pytest.raises(UserError):
        build("GANformer", 48)
    with pytest.raises(UserError):
        build("GANformer", 32, integration="concat")
    with pytest.raises(UserError):
        build("NoSuchGAN", 32)
    with pytest.raises(UserError, match="unknown model option"):
        build("GANformer", 32, no_such_option=1)


def test_one_generation_path_with_one_dropout_mask() -> None:
    """The loss generates through G.generate: the component-dropout mask reaches the mapping (every mixing
    latent too) and the synthesis, the same mask for all; style mixing draws a second latent."""
    from training.loss import GANLoss
    from training.run_config import LossConfig

    G = tiny("GANformer", component_dropout=0.5).train()
    assert G.cfg.mapping.ltnt2ltnt                      # the mapping's self-attention sees the mask
    D = Discriminator(DiscriminatorConfig(img_resolution=16, channel_base=256, channel_max=32))
    seen: list = []
    record = lambda name: (lambda _m, _args, kwargs: seen.append((name, kwargs.get("mask"))))
    hooks = [G.mapping.register_forward_pre_hook(record("mapping"), with_kwargs=True),
             G.synthesis.register_forward_pre_hook(record("synthesis"), with_kwargs=True)]
    torch.manual_seed(1)
    GANLoss(G, D, LossConfig(style_mixing=1.0)).g_main(torch.randn(4, G.k, G.z_dim), None)
    for h in hooks:
        h.remove()
    assert [name for name, _ in seen] == ["mapping", "mapping", "synthesis"]
    masks = [m for _, m in seen]
    assert masks[0] is not None and masks[0].shape == (4, 4) and 0 < masks[0].sum() < 16
    assert all(torch.equal(m, masks[0]) for m in masks)
    G.eval()
    assert G.component_mask(4, torch.device("cpu")) is None            # no dropout outside training
