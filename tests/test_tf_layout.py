"""TF layout in both directions, on our own networks (no reference data): export to the variables a TF
snapshot holds, import them back through the TF importer, and get the same network bit for bit.
Covers k-means attention with one weight per iteration (TF `.../AttLayer_l2n/iter_<i>/st_weights`)."""
from __future__ import annotations

import pytest
import torch

from dnnlib.util import UserError
from training.importers import official_tf, tf_layout
from training.importers.official_tf import TFNetwork
from training.networks import Discriminator, Generator

# Static kwargs of a small TF GANformer (names as the TF code spells them).
TF_G_KWARGS = dict(
    resolution=16, num_channels=3, components_num=4, z_dim=32, w_dim=32, transformer=True, kmeans=True,
    kmeans_iters=3, num_heads=2, norm="layer", integration="mul", use_pos=True, architecture="resnet",
    mapping_resnet=True, mapping_ltnt2ltnt=True, mapping_num_layers=4, channel_base=128, channel_max=32,
    start_res=0, end_res=4)
TF_D_KWARGS = dict(resolution=16, num_channels=3, architecture="resnet", channel_base=128, channel_max=32)


def _randomise(net: torch.nn.Module, seed: int) -> None:
    """Random values on a 2^-10 grid, so that TF's +1 on style biases round-trips exactly."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in net.state_dict().values():
            t.copy_(torch.round(torch.randn(t.shape, generator=g) * 512) / 1024)


def _tf_network(name: str, func: str, kwargs: dict, variables: dict, components: tuple[str, ...] = ()) -> TFNetwork:
    """Split flat "component/..." variables into a TFNetwork with sub-networks, as a snapshot holds them."""
    own = {k: v for k, v in variables.items() if k.split("/")[0] not in components}
    subs = {c: TFNetwork(c, f"G_{c}", {}, {k[len(c) + 1:]: v for k, v in variables.items() if k.startswith(c + "/")})
            for c in components}
    return TFNetwork(name, func, dict(kwargs), own, subs)


def _export_generator(G: Generator) -> TFNetwork:
    variables = tf_layout.export_state(tf_layout.generator_plan(G), G.state_dict())
    return _tf_network("G", "Generator", TF_G_KWARGS, variables, ("synthesis", "mapping"))


def test_generator_round_trip_with_weights_per_iteration() -> None:
    G = Generator(official_tf.generator_config(TF_G_KWARGS)).eval()
    att = G.synthesis.b4.conv1.attn
    assert G.cfg.synthesis.attention.kmeans_weights_per_iter and att.att_weight.shape[0] == 3
    _randomise(G, 0)
    tf = _export_generator(G)
    syn = tf.components["synthesis"].variables
    assert sorted(n for n in syn if n.startswith("4x4/Conv/AttLayer_l2n/iter_")) == [
        f"4x4/Conv/AttLayer_l2n/iter_{i}/st_weights" for i in range(3)]
    assert syn["4x4/Conv/AttLayer_l2n/iter_2/st_weights"].shape == (2, 1, 32)   # [heads, 1, 2 x head width]

    back = official_tf.build_generator(tf, "G")
    for name, t in G.state_dict().items():
        assert torch.equal(back.state_dict()[name], t), name
    z = torch.randn(3, G.k, G.z_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(back(z, noise_mode="const"), G(z, noise_mode="const"))


def test_weights_per_iteration_are_used() -> None:
    G = Generator(official_tf.generator_config(TF_G_KWARGS)).eval()
    _randomise(G, 2)
    cfg = official_tf.generator_config(TF_G_KWARGS)
    cfg.synthesis.attention.kmeans_weights_per_iter = False
    shared = Generator(cfg).eval()
    z = torch.randn(2, G.k, G.z_dim, generator=torch.Generator().manual_seed(3))
    state = G.state_dict()
    with torch.no_grad():
        # Equal weights in every iteration: the same function as one shared weight.
        for name, t in state.items():
            if name.endswith("att_weight"):
                t.copy_(t[:1].clone().expand_as(t))
        shared.load_state_dict({k: v[0] if k.endswith("att_weight") else v for k, v in state.items()})
        assert torch.equal(G(z, noise_mode="const"), shared(z, noise_mode="const"))
        # A different weight in the last iteration changes the image.
        G.synthesis.b4.conv1.attn.att_weight[2].mul_(3)
        assert not torch.allclose(G(z, noise_mode="const"), shared(z, noise_mode="const"))


def test_discriminator_round_trip() -> None:
    D = Discriminator(official_tf.discriminator_config(TF_D_KWARGS)).eval()
    _randomise(D, 4)
    variables = tf_layout.export_state(tf_layout.discriminator_plan(D), D.state_dict())
    back = official_tf.build_discriminator(TFNetwork("D", "Discriminator", TF_D_KWARGS, variables), "D")
    img = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(back(img), D(img))


def test_w_slots_follow_the_tf_numbering() -> None:
    G = Generator(official_tf.generator_config(TF_G_KWARGS))
    # 4x4 conv, (conv0, conv1) at 8 and 16, the extra last conv (attention reaches 16x16), the last ToRGB.
    assert tf_layout.tf_w_slots(G) == [1, 2, 3, 4, 5, 5, 6]
    ws_tf = torch.arange(7.0).reshape(1, 1, 7, 1).expand(2, G.k, 7, G.w_dim)
    assert tf_layout.ws_from_tf(ws_tf, G)[0, 0, :, 0].tolist() == [1, 2, 3, 4, 5, 5, 6]
    no_extra = Generator(official_tf.generator_config(dict(TF_G_KWARGS, end_res=3)))
    assert not no_extra.cfg.synthesis.conv_last and tf_layout.tf_w_slots(no_extra) == [1, 2, 3, 4, 5, 6]


def test_missing_iteration_weight_is_one_line() -> None:
    G = Generator(official_tf.generator_config(TF_G_KWARGS))
    tf = _export_generator(G)
    del tf.components["synthesis"].variables["8x8/Conv1/AttLayer_l2n/iter_1/st_weights"]
    with pytest.raises(UserError, match="iter_1/st_weights is missing") as e:
        official_tf.build_generator(tf, "G")
    assert "\n" not in str(e.value)


def test_configs_saved_before_the_layout_moved_still_load() -> None:
    from training.networks.config import GeneratorConfig, from_dict, to_dict

    cfg = official_tf.generator_config(TF_G_KWARGS)
    old = to_dict(cfg)
    old["synthesis"].pop("conv_last")
    for rule, res, want in (("transformer", 16, True), ("transformer", 32, False), ("always", 32, True),
                            ("never", 16, False)):
        saved = dict(old, img_resolution=res, synthesis=dict(old["synthesis"], conv_last=rule, tf_w_slots=True))
        assert from_dict(GeneratorConfig, saved).synthesis.conv_last is want, (rule, res)
    with pytest.raises(UserError, match="conv_last"):
        Generator(from_dict(GeneratorConfig, dict(old, synthesis=dict(old["synthesis"], conv_last=3))))
