"""generate.py end to end: reference parity through the CLI, our checkpoints, and one-line errors."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REF_PT, REPO

FOLDERS = ["A_ganformer_default_32", "B_ganformer_k8_64", "C_stylegan2_32", "D_vanilla_gan_32",
           "E_duplex_kmeans_iters3_32", "extra_simplex_32", "extra_heads2_32"]
needs_ref = pytest.mark.skipif(not REF_PT.is_dir(), reason=f"reference data not found at {REF_PT}")


def generate_in_process(*args: str) -> None:
    import generate as cli
    cli.main(list(args))


def generate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "generate.py"), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], proc.stderr


@needs_ref
@pytest.mark.parametrize("folder", FOLDERS)
def test_reference_images_through_cli(tmp_path, folder: str) -> None:
    inputs = torch.load(REF_PT / folder / "inputs.pt", weights_only=True)
    ref = torch.load(REF_PT / folder / "outputs.pt", weights_only=True)
    z = tmp_path / "z.npy"
    np.save(z, inputs["z"].numpy())
    tol = 1e-2 if folder.startswith("E_") else 1e-4
    for psi, key in (("0.7", "img_psi0p7_const"), ("1", "img_psi1_const")):
        out = tmp_path / f"out{psi}.npy"
        generate_in_process("--model", str(REF_PT / folder), "--latents", str(z), "--truncation-psi", psi,
                            "--noise-mode", "const", "--save-npy", str(out), "--output-dir", str(tmp_path / "o"))
        got = np.load(out)
        err = np.abs(got - ref[key].numpy()).max()
        assert err <= tol * np.abs(ref[key].numpy()).max(), f"{key}: {err}"
    pngs = sorted((tmp_path / "o").glob("*.png"))
    assert len(pngs) == 4 and Image.open(pngs[0]).size == (ref[key].shape[-1],) * 2


def test_own_checkpoint_seeds_ratio_and_determinism(tmp_path) -> None:
    from training.checkpoint import save_checkpoint
    from training.config import generator_preset
    from training.networks import Generator

    torch.manual_seed(0)
    G = Generator(generator_preset("StyleGAN2", resolution=16, latent_size=16,
                                   **{"synthesis.channel_base": 128, "synthesis.channel_max": 16}))
    model = tmp_path / "net.safetensors"
    save_checkpoint(model, {"G_ema": G})
    runs = []
    for name in ("a", "b"):
        proc = generate("--model", str(model), "--seeds", "3-5", "--ratio", "0.5", "--output-dir",
                        str(tmp_path / name), "--batch-size", "2", "--save-npy", str(tmp_path / f"{name}.npy"))
        assert proc.returncode == 0, proc.stderr
        assert "CPU" in proc.stdout or torch.cuda.is_available()
        runs.append(np.load(tmp_path / f"{name}.npy"))
    assert runs[0].shape == (3, 3, 16, 16) and np.array_equal(runs[0], runs[1])
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == ["seed000003.png", "seed000004.png", "seed000005.png"]
    assert Image.open(tmp_path / "a" / files[0]).size == (16, 8)       # width 16, height 16 * 0.5


def test_bad_inputs_give_one_line(tmp_path) -> None:
    assert_one_line_error(generate("--model", str(tmp_path / "missing.safetensors")), "not found")
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"\x80\x04K\x01.")      # a pickle of the integer 1
    assert_one_line_error(generate("--model", str(junk)), "not a GANformer PyTorch snapshot")
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    assert_one_line_error(generate("--model", str(bad)), "unrecognised model file")
    assert_one_line_error(generate("--model", str(junk), "--seeds", "x-y"), "--seeds")


@needs_ref
def test_bad_reference_folder_and_latents(tmp_path) -> None:
    import shutil
    folder = tmp_path / "ref"
    shutil.copytree(REF_PT / "C_stylegan2_32", folder)
    z = tmp_path / "z.npy"
    np.save(z, np.zeros([2, 5, 7], np.float32))
    assert_one_line_error(generate("--model", str(folder), "--latents", str(z)), "[N, 1, 128]")
    (folder / "D_state.pt").unlink()
    assert_one_line_error(generate("--model", str(folder)), "missing D_state.pt")
