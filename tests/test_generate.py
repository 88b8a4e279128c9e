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
    from training.networks.presets import build
    from training.networks import Generator

    torch.manual_seed(0)
    G = Generator(build("StyleGAN2", 16, latent_size=16, channel_base=128, channel_max=16)[0])
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


def tiny_ganformer_checkpoint(path, c_dim=0):
    from training.checkpoint import save_checkpoint
    from training.networks.presets import build
    from training.networks import Generator

    torch.manual_seed(0)
    G = Generator(build("GANformer", 16, c_dim=c_dim, latent_size=32, components_num=4, channel_base=256,
                        channel_max=32)[0])
    save_checkpoint(path, {"G_ema": G})
    return path


def pngs(folder) -> dict:
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}


def test_vis_latents_feed_generate(tmp_path, one_thread) -> None:
    """z and w saved by --vis-latents regenerate the --vis-images samples, as folders or single files."""
    from training.checkpoint import load_generator
    from training.options import parse
    from training.vis_cli import run_visualizations

    model = tiny_ganformer_checkpoint(tmp_path / "net.safetensors")
    run = parse(["--eval", "--vis-images", "--vis-latents", "--vis-num", "3", "--truncation-psi", "0.6"])
    vis = tmp_path / "visuals"
    run_visualizations(run, load_generator(model), vis, "cpu")
    want = {f"sample_{k}": v for k, v in pngs(vis / "images").items()}
    generate_in_process("--model", str(model), "--latents", str(vis / "latents-z"), "--truncation-psi", "0.6",
                        "--output-dir", str(tmp_path / "z"))
    generate_in_process("--model", str(model), "--latents-w", str(vis / "latents-w"),
                        "--output-dir", str(tmp_path / "w"))
    generate_in_process("--model", str(model), "--latents", str(vis / "latents-z" / "000001.npy"),
                        "--truncation-psi", "0.6", "--output-dir", str(tmp_path / "one"))
    for got in (pngs(tmp_path / "z"), pngs(tmp_path / "w")):
        assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
    assert np.array_equal(pngs(tmp_path / "one")["sample_000001.png"], want["sample_000001.png"])


def test_class_and_attention_overlay(tmp_path, one_thread, capsys) -> None:
    model = tiny_ganformer_checkpoint(tmp_path / "cond.safetensors", c_dim=3)
    for cls in ("0", "2"):
        generate_in_process("--model", str(model), "--seeds", "0-2", "--class", cls, "--attention", "--batch-size", "2",
                            "--ratio", "0.75", "--output-dir", str(tmp_path / cls))
    a, b = pngs(tmp_path / "0"), pngs(tmp_path / "2")
    assert list(a) == ["seed000000.png", "seed000001.png", "seed000002.png"]
    assert not np.array_equal(a["seed000000.png"], b["seed000000.png"])           # the class matters
    overlays = pngs(tmp_path / "0" / "attention")
    assert overlays.keys() == a.keys() and overlays["seed000001.png"].shape == (12, 16, 3)
    assert not np.array_equal(overlays["seed000001.png"], a["seed000001.png"])
    for argv, needle in ((["--class", "3"], "--class must be in 0..2"), ([], "pass --class")):
        with pytest.raises(SystemExit):
            generate_in_process("--model", str(model), "--images-num", "1", "--output-dir", str(tmp_path / "x"), *argv)
        assert needle in capsys.readouterr().err
    plain = tmp_path / "plain.safetensors"
    from training.checkpoint import save_checkpoint
    from training.networks.presets import build
    from training.networks import Generator
    save_checkpoint(plain, {"G_ema": Generator(build("StyleGAN2", 16, latent_size=16, channel_base=128,
                                                     channel_max=16)[0])})
    for argv, needle in ((["--class", "1"], "unconditional"), (["--attention"], "no attention layers")):
        with pytest.raises(SystemExit):
            generate_in_process("--model", str(plain), "--images-num", "1", "--output-dir", str(tmp_path / "y"), *argv)
        assert needle in capsys.readouterr().err


@needs_ref
def test_reference_folder_attention_overlay(tmp_path, one_thread) -> None:
    generate_in_process("--model", str(REF_PT / "A_ganformer_default_32"), "--images-num", "2", "--attention", "soft",
                        "--output-dir", str(tmp_path))
    overlays = pngs(tmp_path / "attention")
    assert list(overlays) == ["seed000000.png", "seed000001.png"] and overlays["seed000000.png"].shape == (32, 32, 3)


def test_swap_and_resample_components(tmp_path, one_thread, capsys) -> None:
    """--swap-from/--resample-seed replace exactly the chosen rows; compare strips show original | donor | edited."""
    from training.checkpoint import load_generator
    from training.sampling import z_from_seeds

    model = str(tiny_ganformer_checkpoint(tmp_path / "net.safetensors"))      # K = 4: rows 0..3 local, 4 global
    G = load_generator(model, "cpu")
    za, zb = z_from_seeds([0, 1], G.k, G.z_dim).numpy(), z_from_seeds([2], G.k, G.z_dim).numpy()
    np.save(tmp_path / "a.npy", za)
    np.save(tmp_path / "b.npy", zb)
    edited = za.copy()
    edited[:, [1, 4]] = zb[:, [1, 4]]
    np.save(tmp_path / "want.npy", edited)
    generate_in_process("--model", model, "--latents", str(tmp_path / "a.npy"), "--swap-from", str(tmp_path / "b.npy"),
                        "--components", "4,1", "--output-dir", str(tmp_path / "swap"))
    for name, z in (("want", tmp_path / "want.npy"), ("a", tmp_path / "a.npy"), ("b", tmp_path / "b.npy")):
        generate_in_process("--model", model, "--latents", str(z), "--output-dir", str(tmp_path / name))
    got, want, a, b = (pngs(tmp_path / n) for n in ("swap", "want", "a", "b"))
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
    assert not np.array_equal(got["sample_000000.png"], a["sample_000000.png"])
    strip = pngs(tmp_path / "swap" / "compare")["sample_000001.png"]
    assert strip.shape == (16, 48, 3)
    for panel, ref in zip(np.split(strip, 3, axis=1), (a["sample_000001.png"], b["sample_000000.png"], got["sample_000001.png"])):
        assert np.array_equal(panel, ref)

    # w space: swapping every row reproduces the donor exactly; resampling takes the rows of the seed's w.
    with torch.no_grad():
        wa = G.map(torch.from_numpy(za), None, truncation_psi=0.5)[:, :, 0].numpy()
        w7 = G.map(z_from_seeds([7], G.k, G.z_dim), None, truncation_psi=0.5)[:, :, 0].numpy()
    np.save(tmp_path / "wa.npy", wa)
    np.save(tmp_path / "w7.npy", w7)
    generate_in_process("--model", model, "--latents-w", str(tmp_path / "wa.npy"), "--components", "0,1,2,3,global",
                        "--resample-seed", "7", "--truncation-psi", "0.5", "--output-dir", str(tmp_path / "res"))
    generate_in_process("--model", model, "--latents-w", str(tmp_path / "w7.npy"), "--output-dir", str(tmp_path / "w7"))
    res, w7png = pngs(tmp_path / "res"), pngs(tmp_path / "w7")["sample_000000.png"]
    assert all(np.array_equal(v, w7png) for v in res.values()) and len(res) == 2

    for argv, needle in ((["--components", "1"], "--components goes with"),
                         (["--resample-seed", "1"], "--components goes with"),
                         (["--components", "5", "--resample-seed", "1"], "rows in 0..4"),
                         (["--components", "x", "--resample-seed", "1"], "a list like"),
                         (["--components", "1", "--resample-seed", "1", "--swap-from", "b.npy"], "not both"),
                         (["--components", "1", "--swap-from", str(tmp_path / "a.npy"), "--seeds", "0-2"], "give 1 or 3")):
        with pytest.raises(SystemExit):
            generate_in_process("--model", model, "--output-dir", str(tmp_path / "x"), *argv)
        assert needle in capsys.readouterr().err
