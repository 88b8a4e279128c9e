"""Parity with the official GANformer PyTorch port: load each reference folder, compare every output.

Tolerances are those the reference README suggests for an independent float32 implementation:
ws within 1e-5 relative; images and D logits within 1e-4 of the tensor's largest absolute value;
attention maps within 1e-4 absolute; folder E (3 k-means iterations, near one-hot attention) at 1e-2.
"""
from __future__ import annotations

import pytest
import torch

from conftest import REF_PT
from training.importers.official_pt import load_reference_folder

FOLDERS = ["A_ganformer_default_32", "B_ganformer_k8_64", "C_stylegan2_32", "D_vanilla_gan_32",
           "E_duplex_kmeans_iters3_32", "extra_simplex_32", "extra_heads2_32"]

pytestmark = pytest.mark.skipif(not REF_PT.is_dir(), reason=f"reference data not found at {REF_PT}")


def rel_tol(folder: str) -> float:
    return 1e-2 if folder.startswith("E_") else 1e-4


def assert_close(ours: torch.Tensor, ref: torch.Tensor, rel: float, what: str) -> None:
    assert ours.shape == ref.shape, f"{what}: shape {list(ours.shape)} != {list(ref.shape)}"
    err = (ours - ref).abs().max().item()
    scale = ref.abs().max().item()
    assert err <= rel * scale, f"{what}: max abs error {err:.3g} > {rel:g} * {scale:.3g}"


def _cases():
    for folder in FOLDERS:
        for perturbed in (False, True):
            yield pytest.param(folder, perturbed, id=f"{folder}-{'perturbed' if perturbed else 'plain'}")


@pytest.mark.parametrize("folder,perturbed", list(_cases()))
def test_reference_outputs(folder: str, perturbed: bool) -> None:
    path = REF_PT / folder
    out_file = path / ("outputs_perturbed.pt" if perturbed else "outputs.pt")
    if not out_file.exists():
        pytest.skip(f"{folder} has no {out_file.name} (lite folder)")
    inputs = torch.load(path / "inputs.pt", weights_only=True)
    ref = torch.load(out_file, weights_only=True)
    nets = load_reference_folder(path, overrides=perturbed)
    G, D = nets["G"], nets["D"]
    tol = rel_tol(folder)
    with torch.no_grad():
        for psi, tag in ((1.0, "psi1"), (0.7, "psi0p7")):
            ws = G.map(inputs["z"], inputs["c"], truncation_psi=psi)
            assert_close(ws, ref[f"ws_{tag}"], 1e-5, f"ws_{tag}")
            img, maps = G.synthesize(ws, noise_mode="const")
            assert_close(img, ref[f"img_{tag}_const"], tol, f"img_{tag}_const")
            layers = sorted(k for k in ref if k.startswith(f"att_{tag}_const.layer"))
            if tag == "psi1" or layers:   # psi 0.7 maps are stored only in the full, unperturbed sets
                assert len(layers) == len(maps), f"{len(maps)} attention layers, reference has {len(layers)}"
            for j, m in enumerate(maps if layers else []):
                r = ref[f"att_{tag}_const.layer{j}"]
                err = (m.reshape(r.shape) - r).abs().max().item()
                assert err <= (1e-2 if folder.startswith("E_") else 1e-4), f"attention layer {j}: {err:.3g}"
        assert_close(G(inputs["z"], inputs["c"], noise_mode="none"), ref["img_psi1_none"], tol, "img_psi1_none")
        assert_close(G(inputs["z"], inputs["c"], noise_mode="const", fused_modconv=False),
                     ref["img_psi1_const_unfused"], tol, "img_psi1_const_unfused")
        assert_close(D(inputs["d_img"], inputs["d_c"]), ref["d_logits_real"], tol, "d_logits_real")
        assert_close(D(ref["img_psi1_const"], inputs["c"]), ref["d_logits_fake"], tol, "d_logits_fake")

    if perturbed:
        # One official w_avg update (the reference ran it with attention dropout off, as in eval mode).
        before, after = ref["w_avg_update.before"], ref["w_avg_update.after"]
        assert torch.equal(G.mapping.w_avg, before)
        with torch.no_grad():
            G.map(inputs["z_w_avg_update"], inputs["c"], update_w_avg=True)
        assert_close(G.mapping.w_avg, after, 1e-5, "w_avg after one update")


@pytest.mark.parametrize("folder", ["A_ganformer_default_32", "B_ganformer_k8_64"])
def test_full_attention_tensor_matches_checksum(folder: str) -> None:
    """The stacked [B, K, L, N, R, R] maps have the official layout (sum of squares from config.json)."""
    path = REF_PT / folder
    inputs = torch.load(path / "inputs.pt", weights_only=True)
    nets = load_reference_folder(path)
    want = nets["config"]["derived"]["att_maps_full"]["psi1"]
    with torch.no_grad():
        _, att = nets["G"](inputs["z"], inputs["c"], noise_mode="const", return_att=True)
    assert list(att.shape) == want["shape"]
    got = att.double().square().sum().item()
    assert abs(got - want["sum_of_squares_f64"]) <= 1e-4 * want["sum_of_squares_f64"]


def test_grid_encoding_matches_official_buffers() -> None:
    """Our recomputed sinusoidal grid equals the official `grid_pos` buffers bitwise."""
    path = REF_PT / "B_ganformer_k8_64"
    sd = torch.load(path / "G_state.pt", weights_only=True)
    G = load_reference_folder(path)["G"]
    n = 0
    for name, buf in sd.items():
        if name.endswith("grid_pos"):
            layer = G.get_submodule(name.rsplit(".", 1)[0].replace(".transformer", ""))
            assert torch.equal(layer.grid(), buf), name
            n += 1
    assert n > 0


def test_parameter_counts_match_official() -> None:
    for folder in FOLDERS:
        nets = load_reference_folder(REF_PT / folder)
        derived = nets["config"]["derived"]
        assert sum(p.numel() for p in nets["G"].parameters()) == derived["G_num_params"], folder
        assert sum(p.numel() for p in nets["D"].parameters()) == derived["D_num_params"], folder
