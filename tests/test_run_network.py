"""run_network.py flags resolve to the seed's presets; explicit flags win; bad combinations fail in one line."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO
from dnnlib.util import UserError
from training.options import parse


def cfgs(*argv: str, res: int = 256):
    run = parse(list(argv))
    return run, *run.network_configs(res)


def test_ganformer_default_per_dataset() -> None:
    run, G, D = cfgs("--ganformer-default", "--dataset", "ffhq")
    assert (G.components_num, G.z_dim, G.synthesis.style, G.mapping.ltnt2ltnt) == (16, 32, True, True)
    assert G.synthesis.attention.kmeans and G.synthesis.attention.integration == "mul"
    assert run.train.loss.r1_gamma == 10 and run.train.mirror is True
    run, G, _ = cfgs("--ganformer-default", "--dataset", "clevr")
    assert (G.components_num, G.z_dim, G.synthesis.style, G.mapping.ltnt2ltnt) == (8, 16, False, False)
    assert run.train.loss.r1_gamma == 40 and run.train.mirror is False
    run, _, _ = cfgs("--baseline", "GAN", "--dataset", "clevr")
    assert run.train.loss.r1_gamma == 10 and run.image_ratio() == 0.75


def test_explicit_flags_override_presets() -> None:
    """The official port could not switch these off under --ganformer-default; here they can."""
    run, G, _ = cfgs("--ganformer-default", "--dataset", "ffhq", "--kmeans", "False", "--use-pos", "false",
                     "--mapping-ltnt2ltnt", "False", "--components-num", "8", "--gamma", "3", "--mirror-augment", "False")
    assert not G.synthesis.attention.kmeans and not G.synthesis.attention.use_pos and not G.mapping.ltnt2ltnt
    assert G.components_num == 8 and G.z_dim == 64
    assert run.train.loss.r1_gamma == 3 and run.train.mirror is False


@pytest.mark.parametrize("baseline,check", [
    ("StyleGAN2", lambda G: G.components_num == 0 and G.synthesis.style and G.synthesis.architecture == "skip"),
    ("GAN", lambda G: G.synthesis.latent_stem and not G.synthesis.style),
    ("kGAN", lambda G: G.synthesis.kgan and G.components_num == 8),
    ("SAGAN", lambda G: G.synthesis.img2img_res == 5 and not G.synthesis.style),
])
def test_baselines(baseline, check) -> None:
    _, G, _ = cfgs("--baseline", baseline, res=64)
    assert check(G)


@pytest.mark.parametrize("argv,needle", [
    (["--ganformer-default", "--baseline", "GAN"], "mutually exclusive"),
    (["--components-num", "4"], "--transformer"),
    (["--ganformer-default", "--latent-size", "100"], "not divisible"),
    (["--ganformer-default", "--num-heads", "3"], "--num-heads"),
    (["--baseline", "kGAN", "--transformer"], "k-GAN"),
    (["--ganformer-default", "--g-start-res", "6", "--g-end-res", "3"], "no attention layer"),
    (["--ganformer-default", "--pos-dim", "6"], "--pos-dim"),
    (["--baseline", "SAGAN", "--g-img2img", "9"], "--g-img2img"),
    (["--ganformer-default", "--img2ltnt"], "k-means"),
])
def test_bad_flag_combinations(argv, needle) -> None:
    with pytest.raises(UserError, match=needle):
        cfgs(*argv)


def test_cli_prints_summary_and_rejects_unavailable_modes() -> None:
    run = lambda *a: subprocess.run([sys.executable, "run_network.py", *a], cwd=REPO, capture_output=True, text=True)
    ok = run("--ganformer-default", "--dataset", "ffhq")
    assert ok.returncode == 0 and "G: 30,903,632 parameters" in ok.stdout and "D: 28,864,129 parameters" in ok.stdout
    bad = run("--ganformer-default", "--kmeans", "maybe")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
