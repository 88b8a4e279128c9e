"""Import of the official TensorFlow GANformer pickles: every reference folder reproduces its TF outputs.

Tolerance (the issue's): max abs error <= 1e-3 of the largest absolute value of each reference array,
1e-4 for ws. The reference pickles are genuine TF snapshots; see shared/reference/official-tf/README.md.
"""
from __future__ import annotations

import collections
import hashlib
import json
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REF_TF
from dnnlib.util import UserError
from training.checkpoint import load_networks
from training.importers import official_tf, safe_pickle, tf_layout

FOLDERS = ["A_ganformer_default_32", "B_ganformer_k8_64", "D_ganformer_default_256", "E_heads2_32", "F_clevr_64"]
PKL = "network-snapshot-000000.pkl"
# Reference output tag -> (network, truncation psi, noise mode).
CALLS = {"psi1": ("G_ema", 1.0, "const"), "psi0p7": ("G_ema", 0.7, "const"),
         "psi1_nonoise": ("G_ema", 1.0, "none"), "G_psi1": ("G", 1.0, "const")}

pytestmark = pytest.mark.skipif(not REF_TF.is_dir(), reason=f"reference data not found at {REF_TF}")


@pytest.fixture(scope="module")
def imported():
    cache: dict[str, dict] = {}

    def get(folder: str) -> dict:
        if folder not in cache:
            cache[folder] = load_networks(REF_TF / folder / PKL)
        return cache[folder]
    return get


def assert_close(ours: torch.Tensor | np.ndarray, ref: np.ndarray, rel: float, what: str) -> None:
    ours = ours.detach().numpy() if isinstance(ours, torch.Tensor) else ours
    assert ours.shape == ref.shape, f"{what}: shape {list(ours.shape)} != {list(ref.shape)}"
    err, scale = float(np.abs(ours - ref).max()), float(np.abs(ref).max())
    assert err <= rel * scale, f"{what}: max abs error {err:.3g} > {rel:g} * {scale:.3g}"


def run_generator(G, z: torch.Tensor, psi: float, noise: str):
    """ws, image and the per-layer attention maps in TF call order (mapping self-attention first)."""
    mapping_maps: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: mapping_maps.append(out[1]))
             for name, m in G.mapping.named_modules() if name.startswith("mlp.sa") and name.count(".") == 1]
    try:
        with torch.no_grad():
            img, ws, maps = G.generate(z, noise_mode=noise, truncation_psi=psi)
    finally:
        for h in hooks:
            h.remove()
    # TF synthesis maps are [B*heads, K, r, r] with row = sample * heads + head.
    return ws, img, mapping_maps + [m.reshape(-1, *m.shape[2:]) for m in maps]


@pytest.mark.parametrize("folder", FOLDERS)
def test_reference_outputs(folder: str, imported) -> None:
    path = REF_TF / folder
    nets = imported(folder)
    z = torch.from_numpy(np.load(path / "inputs.npz")["z"])
    ref = dict(np.load(path / "outputs.npz"))
    for tag, (net, psi, noise) in CALLS.items():
        ws, img, maps = run_generator(nets[net], z, psi, noise)
        want_ws = tf_layout.ws_from_tf(torch.from_numpy(ref[f"ws_{tag}"]), nets[net]).numpy()   # TF's w slots -> ours
        assert_close(ws, want_ws, 1e-4, f"{folder} ws_{tag}")
        if f"img_{tag}" in ref:
            assert_close(img, ref[f"img_{tag}"], 1e-3, f"{folder} img_{tag}")
        att = sorted(k for k in ref if k.startswith("att_layer") and k[len("att_layerNN_"):] == tag)
        assert not att or len(att) == len(maps), f"{folder}: {len(maps)} attention layers, TF has {len(att)}"
        for key in att:
            r = ref[key]
            m = maps[int(key[len("att_layer"):len("att_layerNN")])][: r.shape[0]]  # D stores the first sample only
            assert_close(m.reshape(r.shape), r, 1e-3, f"{folder} {key}")
    with torch.no_grad():
        if "D_logits" in ref:
            assert_close(nets["D"](torch.from_numpy(np.load(path / "inputs.npz")["d_img"])), ref["D_logits"],
                         1e-3, f"{folder} D_logits")
        assert_close(nets["D"](torch.from_numpy(ref["img_psi1"])), ref["D_logits_on_img_psi1"], 1e-3,
                     f"{folder} D_logits_on_img_psi1")


def test_256_outputs_not_stored_match_their_summaries(imported) -> None:
    """Folder D keeps only sum of squares and max |x| of some outputs; d_img is rebuilt by its recipe."""
    path = REF_TF / "D_ganformer_default_256"
    nets = imported(path.name)
    dropped = json.loads((path / "config.json").read_text())["dropped_outputs_checksums"]
    d_img = np.random.RandomState(202).uniform(-1, 1, [4, 3, 256, 256]).astype(np.float32)
    assert hashlib.sha256(d_img.tobytes()).hexdigest() == dropped["inputs:d_img"]["sha256_of_float32_bytes"]
    z = torch.from_numpy(np.load(path / "inputs.npz")["z"])
    with torch.no_grad():
        outs = {"D_logits": nets["D"](torch.from_numpy(d_img))}
    for tag in ("psi0p7", "psi1_nonoise", "G_psi1"):
        outs[f"img_{tag}"] = run_generator(nets[CALLS[tag][0]], z, *CALLS[tag][1:])[1]
    for key, out in outs.items():
        x, want = out.double().numpy(), dropped[key]
        assert abs(np.abs(x).max() - want["max_abs"]) <= 1e-4 * want["max_abs"], key
        assert abs((x ** 2).sum() - want["sum_of_squares_f64"]) <= 1e-4 * want["sum_of_squares_f64"], key


@pytest.mark.parametrize("folder", FOLDERS)
def test_generate_cli_reproduces_tf_images(folder: str, tmp_path) -> None:
    import generate

    path = REF_TF / folder
    np.save(tmp_path / "z.npy", np.load(path / "inputs.npz")["z"])
    generate.main(["--model", str(path / PKL), "--latents", str(tmp_path / "z.npy"), "--truncation-psi", "1",
                   "--noise-mode", "const", "--save-npy", str(tmp_path / "out.npy"), "--output-dir", str(tmp_path)])
    assert_close(np.load(tmp_path / "out.npy"), np.load(path / "outputs.npz")["img_psi1"], 1e-3, folder)


def test_tf_behaviour_is_configured(imported) -> None:
    nets = imported("A_ganformer_default_32")
    G, D = nets["G_ema"], nets["D"]
    cfg = G.cfg
    assert cfg.mapping.per_component_norm and not cfg.mapping.normalize_global and cfg.mapping.out_layer
    assert cfg.synthesis.conv_last and G.synthesis.b32.conv_last is not None   # attention up to 32x32
    assert cfg.synthesis.channel_base == 512 and D.cfg.channel_base == 512   # TF base 256, doubled
    # Our slots in layer order (4x4 conv; conv0, conv1 per block; the extra conv; the last ToRGB) read
    # TF slots: 0 (a latent stem's) is never read and the extra conv shares conv1's.
    assert tf_layout.tf_w_slots(G) == [1, 2, 3, 4, 5, 6, 7, 7, 8] and G.num_ws == 9
    assert tf_layout.cutoff_from_tf(None, G) is None and tf_layout.cutoff_from_tf(8, G) == 8
    assert tf_layout.cutoff_from_tf(4, G) == 3 and tf_layout.cutoff_from_tf(1, G) == 0
    assert nets["extra"]["source"] == "official-tf-pickle" and nets["extra"]["tf_truncation_psi"] == 0.75
    # G and Gs are different networks (the perturbations differ), both returned for fine-tuning.
    assert not torch.equal(nets["G"].mapping.w_avg, G.mapping.w_avg)


def test_unsupported_options_are_refused_with_one_line() -> None:
    kwargs = json.loads((REF_TF / "A_ganformer_default_32" / "config.json").read_text())["static_kwargs"]["G"]
    official_tf.generator_config(dict(kwargs, unknown_flag=3))          # TF ignores unknown kwargs too
    for key, value in (("img2ltnt", True), ("crop_ratio", 0.5), ("merge", True), ("transformer", False),
                       ("pos_type", "trainable"), ("iterative", True)):
        with pytest.raises(UserError, match=key) as e:
            official_tf.generator_config(dict(kwargs, **{key: value}))
        assert "\n" not in str(e.value)


def test_older_kwarg_names_are_understood() -> None:
    """Kwargs as the TF code named them before its 2022 renaming (also read by the official converter)."""
    kwargs = json.loads((REF_TF / "B_ganformer_k8_64" / "config.json").read_text())["static_kwargs"]
    old = {"z_dim": "latent_size", "w_dim": "dlatent_size", "channel_base": "fmap_base", "channel_max": "fmap_max",
           "mbstd_num_channels": "mbstd_num_features"}

    def rename(kw: dict) -> dict:
        return {old.get(k, k): v for k, v in kw.items()}
    assert official_tf.generator_config(rename(kwargs["G"])) == official_tf.generator_config(kwargs["G"])
    assert official_tf.discriminator_config(rename(kwargs["D"])) == official_tf.discriminator_config(kwargs["D"])


def test_kmeans_weights_per_iteration_are_imported() -> None:
    stub = safe_pickle.safe_load(REF_TF / "A_ganformer_default_32" / PKL)[2]
    net = official_tf.parse_network(stub, "Gs")
    net.kwargs["kmeans_iters"] = 2
    syn = net.components["synthesis"].variables
    for name in [n for n in syn if n.endswith("iter_0/st_weights")]:
        syn[name.replace("iter_0", "iter_1")] = syn[name] + np.float32(0.25)
    G = official_tf.build_generator(net, "Gs")
    att = G.cfg.synthesis.attention
    assert att.kmeans_iters == 2 and att.kmeans_weights_per_iter
    weight = G.synthesis.b4.conv1.attn.att_weight                  # [iterations, heads, 1, 2H]
    for i in range(2):
        assert torch.equal(weight[i], torch.from_numpy(syn[f"4x4/Conv/AttLayer_l2n/iter_{i}/st_weights"]))
    del syn["4x4/Conv/AttLayer_l2n/iter_1/st_weights"]
    with pytest.raises(UserError, match="iter_1/st_weights is missing"):
        official_tf.build_generator(net, "Gs")


def _fake_tf_pickle(state_or_reduce) -> bytes:
    """Pickle bytes naming dnnlib.tflib.network.Network, as a TF snapshot does."""
    mod = types.ModuleType("dnnlib.tflib.network")

    class Network:
        def __reduce__(self):
            return state_or_reduce if isinstance(state_or_reduce, tuple) else (Network, (), state_or_reduce)

    Network.__module__, Network.__qualname__ = "dnnlib.tflib.network", "Network"
    mod.Network = Network
    saved = sys.modules.get("dnnlib.tflib.network")
    sys.modules["dnnlib.tflib.network"] = mod
    try:
        return pickle.dumps((Network(), Network(), Network()), protocol=4)
    finally:
        if saved is None:
            del sys.modules["dnnlib.tflib.network"]
        else:
            sys.modules["dnnlib.tflib.network"] = saved


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


def test_malicious_and_damaged_pickles_are_refused(tmp_path) -> None:
    marker = tmp_path / "ran"
    cases = {
        "payload.pkl": pickle.dumps((_Payload(marker),) * 3),
        # A TF network whose state smuggles another global: refused although torch would allow it.
        "tf_then_torch.pkl": _fake_tf_pickle({"version": 4, "x": collections.OrderedDict(a=1)}),
        "tf_payload.pkl": _fake_tf_pickle({"version": 4, "name": "G", "x": _Payload(marker)}),
        "truncated.pkl": (REF_TF / "F_clevr_64" / PKL).read_bytes()[:100_000],
    }
    expected = {"payload.pkl": "refusing", "tf_then_torch.pkl": "refusing", "tf_payload.pkl": "refusing",
                "truncated.pkl": "damaged"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UserError, match=expected[name]) as e:
            load_networks(tmp_path / name)
        assert "\n" not in str(e.value), name
    assert not marker.exists()


def test_wrong_kind_of_file(tmp_path) -> None:
    torch.save({"x": torch.ones(1)}, tmp_path / "weights.pkl")
    with pytest.raises(UserError, match="zip archive"):
        official_tf.load_tf_pickle(tmp_path / "weights.pkl")
    (tmp_path / "pt.pkl").write_bytes(pickle.dumps({"G": 1, "D": 2, "Gs": 3}))
    with pytest.raises(UserError, match="not a TensorFlow GANformer pickle"):
        official_tf.load_tf_pickle(tmp_path / "pt.pkl")
    (tmp_path / "incomplete.pkl").write_bytes(_fake_tf_pickle({"version": 4, "name": "G"}))
    with pytest.raises(UserError, match="TensorFlow"):
        load_networks(tmp_path / "incomplete.pkl")


def test_converted_checkpoint_reproduces_the_import(tmp_path, imported) -> None:
    import convert_model

    path = REF_TF / "F_clevr_64"
    out = tmp_path / "clevr.safetensors"
    convert_model.main(["--model", str(path / PKL), "--output", str(out)])
    converted, original = load_networks(out), imported(path.name)
    assert converted["extra"]["source"] == "official-tf-pickle"
    z = torch.from_numpy(np.load(path / "inputs.npz")["z"])
    for name in ("G", "G_ema"):
        converted[name].eval()                       # our checkpoints load in training mode
        assert converted[name].cfg == original[name].cfg
        a = run_generator(converted[name], z, 1.0, "const")[1]
        assert torch.equal(a, run_generator(original[name], z, 1.0, "const")[1])
    assert_close(run_generator(converted["G_ema"], z, 1.0, "const")[1], np.load(path / "outputs.npz")["img_psi1"],
                 1e-3, "converted img_psi1")
    d_img = torch.from_numpy(np.load(path / "inputs.npz")["d_img"])
    with torch.no_grad():
        assert torch.equal(converted["D"].eval()(d_img), original["D"](d_img))
