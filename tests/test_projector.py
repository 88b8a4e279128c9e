"""projector.py: the distance falls, outputs are written and reload into generate.py, the API is stable."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import projector
from test_generate import generate_in_process, tiny_ganformer_checkpoint


class PixelDistance(projector.Distance):
    name = "pixel"

    def __call__(self, images, target):
        return (images - target).square().mean((1, 2, 3))


def test_project_api_recovers_a_generated_image(tmp_path, one_thread):
    from training.checkpoint import load_generator
    G = load_generator(tiny_ganformer_checkpoint(tmp_path / "net.safetensors"), "cpu")
    before = {k: v.clone() for k, v in G.state_dict().items()}
    with torch.no_grad():
        target = G(torch.randn([1, G.k, G.z_dim], generator=torch.Generator().manual_seed(5)), noise_mode="const")[0]
    res = projector.project(G, target, num_steps=60, distance=PixelDistance(), w_avg_samples=200, frames=5,
                            z_fit_steps=50, progress=False)
    assert res.w.shape == res.z.shape == (G.k, G.z_dim) and res.image.shape == target.shape
    assert res.segmentation.shape[0] == G.K and torch.allclose(res.segmentation.sum(0), torch.ones(()), atol=1e-4)
    assert np.mean(res.losses[-5:]) < 0.5 * np.mean(res.losses[:5]), res.losses
    assert 2 <= len(res.frames) <= 7 and res.frames[0].shape == (16, 16, 3)
    assert all(torch.equal(v, G.state_dict()[k]) for k, v in before.items())    # the model is not modified
    noise_maps = list(res.noise.values())
    assert noise_maps and all(abs(float(n.std()) - 1) < 0.05 for n in noise_maps)


def test_cli_outputs_reload_in_generate(tmp_path, one_thread, capsys):
    model = str(tiny_ganformer_checkpoint(tmp_path / "net.safetensors"))
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(tmp_path / "t.png")
    info = projector.main(["--model", model, "--target", str(tmp_path / "t.png"), "--outdir", str(tmp_path / "p"),
                           "--num-steps", "8", "--feature-res", "75"])
    out = tmp_path / "p"
    assert info["distance"] in ("inception-stem+pixel", "vgg16-lpips") and info["distance"] in capsys.readouterr().out
    assert json.loads((out / "projection.json").read_text())["steps"] == 8
    assert Image.open(out / "reconstruction.png").size == (48, 16) and Image.open(out / "segmentation.png").size == (16, 16)
    assert Image.open(out / "optimisation.gif").n_frames >= 2
    w = np.load(out / "projected_w.npy")
    assert w.shape == (1, 5, 8) and np.load(out / "projected_z.npy").shape == (1, 5, 8)
    generate_in_process("--model", model, "--latents-w", str(out / "projected_w.npy"), "--output-dir", str(tmp_path / "g"))
    generate_in_process("--model", model, "--latents", str(out / "projected_z.npy"), "--truncation-psi", "1",
                        "--output-dir", str(tmp_path / "gz"))
    regen = np.asarray(Image.open(tmp_path / "g" / "sample_000000.png")).astype(np.float64)
    target = np.asarray(Image.open(out / "reconstruction.png"))[:, :16].astype(np.float64)
    regen_psnr = 10 * np.log10(255 ** 2 / np.mean((regen - target) ** 2))
    assert abs(regen_psnr - info["psnr_model_noise_db"]) < 0.3          # generate.py reproduces the projection
    assert (tmp_path / "gz" / "sample_000000.png").is_file()


@pytest.mark.parametrize("argv, message", [
    (["--target", "missing.png"], "does not exist"),
    (["--target", "t.png", "--num-steps", "0"], "--num-steps must be >= 1"),
])
def test_bad_inputs_one_line(tmp_path, capsys, argv, message):
    model = str(tiny_ganformer_checkpoint(tmp_path / "net.safetensors"))
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "t.png")
    argv = [str(tmp_path / a) if a.endswith(".png") else a for a in argv]
    with pytest.raises(SystemExit) as e:
        projector.main(["--model", model, "--outdir", str(tmp_path / "p"), *argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and err.count("\n") == 1
