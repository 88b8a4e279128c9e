"""Training choices beyond the seed: RpGAN loss, R2 on fakes, Adam betas, --r1-interval, the recipes."""
from __future__ import annotations

import dataclasses
import json
import sys

import pytest
import torch
import torch.nn.functional as Fn

from conftest import REPO
from test_networks import tiny
from test_training import assert_same_state, cli, data_dir, final_state, run_in_process  # noqa: F401 (fixture)
from training import snapshots
from training.loss import GANLoss
from training.networks import Discriminator
from training.networks.config import DiscriminatorConfig
from training.networks.presets import MODEL_OPTIONS, RECIPES
from training.options import TARGETS, parse
from training.run_config import LossConfig, TrainOptions
from training.training_loop import make_optimizer


class SquareD(torch.nn.Module):
    """D(x) = sum(w * x^2): grad_x D = 2 w x, so the gradient penalty is known in closed form."""

    def __init__(self, res: int = 16, scale: float = 1.0) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.linspace(0.5, 1.5, 3 * res * res).reshape(1, 3, res, res) * scale)

    def forward(self, img: torch.Tensor, c=None) -> torch.Tensor:
        return (self.w * img.square()).sum(dim=(1, 2, 3))


def fakes(G, z: torch.Tensor, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    with torch.no_grad():
        return G.generate(z, None, style_mixing=0.0)[0]


def test_rpgan_pairs_fakes_with_reals_and_mirrors_the_d_loss() -> None:
    G, D = tiny("StyleGAN2"), SquareD(scale=0.001)           # scores below 1: softplus is far from linear
    loss = GANLoss(G, D, LossConfig(g_loss="rpgan", d_loss="rpgan", style_mixing=0.0))
    z = torch.randn(4, G.k, G.z_dim)
    real = torch.tensor([0.0, 0.5, 0.8, 1.0]).reshape(4, 1, 1, 1).expand(4, 3, 16, 16)   # distinct scores
    torch.manual_seed(3)
    d_loss, _ = loss.d_main(real, None, z)
    fake_logits, real_logits = D(fakes(G, z, 3)), D(real)
    assert torch.allclose(d_loss, Fn.softplus(fake_logits - real_logits).mean())
    torch.manual_seed(3)
    g_loss, _ = loss.g_main(z, None, real)
    assert torch.allclose(g_loss, Fn.softplus(real_logits - fake_logits).mean(), atol=1e-6)
    # softplus(x) - softplus(-x) = x: the two losses are mirror images around the paired score gap
    assert torch.allclose(d_loss - g_loss, (fake_logits - real_logits).mean(), atol=1e-5)
    # pairing matters (unlike the logistic loss): the same reals in another order give another loss
    torch.manual_seed(3)
    permuted, _ = loss.d_main(real.flip(0), None, z)
    assert not torch.allclose(permuted, d_loss)
    with pytest.raises(ValueError, match="one real per fake"):
        loss.g_main(z, None)


def test_rpgan_generator_gradient_reaches_g_only_through_the_fakes() -> None:
    G = tiny("StyleGAN2")
    D = Discriminator(DiscriminatorConfig(img_resolution=16, channel_base=256, channel_max=32)).requires_grad_(False)
    loss = GANLoss(G, D, LossConfig(g_loss="rpgan", d_loss="rpgan"))
    value, stats = loss.g_main(torch.randn(4, G.k, G.z_dim), None, torch.rand(4, 3, 16, 16))
    assert value.shape == () and torch.isfinite(value)
    value.backward()
    grads = [p.grad for p in G.synthesis.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert "Loss/G/loss" in stats
    value, _ = GANLoss(G, D, LossConfig(d_loss="rpgan")).d_main(torch.rand(4, 3, 16, 16), None,
                                                                 torch.randn(4, G.k, G.z_dim))
    assert value.shape == () and torch.isfinite(value)


def test_r2_is_the_gradient_penalty_on_fakes_and_trains_d_only() -> None:
    G, D = tiny("StyleGAN2"), SquareD()
    loss = GANLoss(G, D, LossConfig(r1_gamma=0.0, r2_gamma=4.0, style_mixing=0.0))
    z = torch.randn(4, G.k, G.z_dim)
    torch.manual_seed(5)
    value, stats = loss.d_r2(None, z)
    fake = fakes(G, z, 5)
    expected = (2 * D.w.detach() * fake).square().sum(dim=(1, 2, 3))       # |grad_x D(fake)|^2
    assert torch.allclose(stats["Loss/r2_penalty"], expected.mean(), rtol=1e-5)
    assert torch.allclose(value, 2.0 * expected.mean(), rtol=1e-5)
    value.backward()
    assert all(p.grad is None for p in G.parameters())                      # the fakes are constants
    # d/dw of gamma/2 * mean(sum(4 w^2 x^2)) = gamma * mean(4 w x^2)
    assert torch.allclose(D.w.grad, 4.0 * (4 * D.w.detach() * fake.square()).mean(0, keepdim=True), rtol=1e-4)
    # on reals instead (R1), the penalty differs: R2 really is taken on the fakes
    r1, _ = GANLoss(G, D, LossConfig(r1_gamma=4.0)).d_r1(torch.rand(4, 3, 16, 16), None)
    assert not torch.allclose(r1, value)


def test_d_reg_combines_r1_and_r2_and_r2_none_follows_gamma() -> None:
    G, D = tiny("StyleGAN2"), SquareD()
    real, z = torch.rand(4, 3, 16, 16), torch.randn(4, G.k, G.z_dim)
    both = GANLoss(G, D, LossConfig(r1_gamma=2.0, r2_gamma=None, style_mixing=0.0))
    assert both.cfg.r2_weight() == 2.0
    torch.manual_seed(7)
    total, stats = both.d_reg(real, None, z)
    r1, _ = both.d_r1(real, None)
    torch.manual_seed(7)
    r2, _ = both.d_r2(None, z)
    assert torch.allclose(total, r1 + r2) and {"Loss/r1_penalty", "Loss/r2_penalty"} <= set(stats)
    only_r1, stats = both.d_reg(real, None, None)
    assert torch.equal(only_r1, r1) and "Loss/r2_penalty" not in stats


def test_adam_betas_with_lazy_rescaling() -> None:
    net = torch.nn.Linear(2, 2)
    group = make_optimizer(net, 0.002, 16, (0.5, 0.9)).param_groups[0]
    rho = 16 / 17
    assert group["betas"] == pytest.approx((0.5 ** rho, 0.9 ** rho)) and group["lr"] == pytest.approx(0.002 * rho)
    assert make_optimizer(net, 0.002, 16).param_groups[0]["betas"] == pytest.approx((0.0, 0.99 ** rho))


def test_faithful_defaults_unchanged() -> None:
    loss, train = LossConfig(), TrainOptions()
    assert (loss.g_loss, loss.d_loss, loss.r1_gamma, loss.r2_gamma, loss.style_mixing) == ("logistic_ns", "logistic",
                                                                                           10.0, 0.0, 0.9)
    assert (train.adam_beta1, train.adam_beta2, train.d_reg_interval, train.ema_rampup) == (0.0, 0.99, 16, None)
    assert RECIPES["faithful"] == {}
    for args in ([], ["--ganformer-default", "--dataset", "ffhq"]):
        plain, faithful = parse(args), parse([*args, "--recipe", "faithful"])
        assert faithful.recipe == "faithful" and dataclasses.replace(faithful, recipe=None) == plain


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_a_recipe_changes_training_choices_only(recipe) -> None:
    assert not set(RECIPES[recipe]) & set(MODEL_OPTIONS)
    assert all(TARGETS[name].split(".")[0] in ("train", "loss") for name in RECIPES[recipe])
    for args in (["--ganformer-default", "--dataset", "clevr"], ["--baseline", "StyleGAN2"]):
        plain, chosen = parse(args), parse([*args, "--recipe", recipe])
        assert chosen.model == plain.model
        assert chosen.network_configs(32) == plain.network_configs(32)


def test_modern_recipe_values_and_flags_override_it() -> None:
    run = parse(["--ganformer-default", "--dataset", "bedrooms", "--recipe", "modern"])
    assert (run.train.loss.g_loss, run.train.loss.d_loss, run.train.ema_rampup) == ("rpgan", "rpgan", 0.05)
    assert run.train.loss.r1_gamma == 100 and run.train.loss.r2_weight() == 100   # R2 follows the dataset's gamma
    run = parse(["--recipe", "modern", "--r2-gamma", "1", "--d-loss", "logistic", "--r1-interval", "4"])
    assert (run.train.loss.r2_weight(), run.train.loss.d_loss, run.train.d_reg_interval) == (1.0, "logistic", 4)


@pytest.mark.parametrize("flags, words", [(["--recipe", "nope"], "--recipe"), (["--r1-interval", "0"], "--r1-interval"),
                                          (["--adam-beta1", "1"], "--adam-beta1"), (["--r2-gamma", "-1"], "--r2-gamma")])
def test_bad_training_choices_are_one_line(flags, words, tmp_path, capsys) -> None:
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_in_process(["--train", "--dataset", "scenes", "--data-dir", str(tmp_path), *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code != 0 and len(err) == 1 and words in err[0], err


MODERN = ["--baseline", "StyleGAN2", "--recipe", "modern", "--r1-interval", "2", "--adam-beta1", "0.1"]


def test_modern_recipe_trains_with_r2_and_resumes_bitwise(data_dir, tmp_path) -> None:
    run_in_process(cli(data_dir, tmp_path / "straight", *MODERN, "--total-kimg", "0.016"))
    run_in_process(cli(data_dir, tmp_path / "split", *MODERN, "--total-kimg", "0.008"))
    assert final_state(tmp_path / "split")["counters"]["cur_nimg"] == 8
    run_in_process(cli(data_dir, tmp_path / "split", *MODERN, "--total-kimg", "0.016"))     # resumes
    straight = final_state(tmp_path / "straight")
    assert_same_state(straight, final_state(tmp_path / "split"))
    assert straight["opts"]["D"]["param_groups"][0]["betas"][0] == pytest.approx(0.1 ** (2 / 3))
    run = snapshots.find_runs(tmp_path / "straight", "t")[-1]
    ticks = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    regularised = [t for t in ticks if "Loss/r2_penalty" in t]       # one step per tick, R1 + R2 every 2nd
    assert len(regularised) == 2 and all(t["Loss/r2_penalty"] > 0 and t["Loss/r1_penalty"] > 0 for t in regularised)
    assert json.loads((run / "config.json").read_text())["run"]["recipe"] == "modern"


def test_recipe_experiment_smoke_writes_curves_plot_and_resumes(tmp_path, capsys) -> None:
    """bench/recipe_experiment.py --smoke: 2 candidates, FID/KID at 2 kimg points each, JSON + PNG; run again,
    every run is found finished and skipped."""
    sys.path.insert(0, str(REPO / "bench"))
    import recipe_experiment
    from PIL import Image

    result = recipe_experiment.main(["--smoke", "--work-dir", str(tmp_path)])
    curves = result["curves"]["scenes"]
    assert set(curves) == {"faithful", "modern"}
    for runs in curves.values():
        assert [p["kimg"] for p in runs["0"]] == [0.004, 0.008]
        assert all(p["fid"] > 0 and "kid" in p for p in runs["0"])
    summary = result["summary"]["scenes"]
    assert summary["faithful"]["0.008"]["fid_ratio_to_faithful"] == 1.0
    modern = summary["modern"]["0.008"]
    assert modern["fid"]["n"] == 1 and modern["fid_ratio_to_faithful"] == pytest.approx(
        curves["modern"]["0"][-1]["fid"] / curves["faithful"]["0"][-1]["fid"])
    assert result["settings"]["fakes_per_metric"] == result["settings"]["reals_per_metric"] == 4
    written = json.loads((tmp_path / "recipes-smoke.json").read_text())
    assert written["curves"] == json.loads(json.dumps(result["curves"]))
    with Image.open(tmp_path / "recipes-smoke.png") as im:
        assert im.size[0] > 100 and len(set(im.convert("RGB").getdata())) > 2     # something was drawn
    # the same command again: every run is finished, nothing is trained or evaluated again
    capsys.readouterr()
    again = recipe_experiment.main(["--smoke", "--work-dir", str(tmp_path)])
    assert capsys.readouterr().out.count("finished, skipped") == 2
    assert again["curves"] == result["curves"]
    # --collect with a candidate that never ran: nothing trains, the missing run is said and left out
    collected = recipe_experiment.main(["--smoke", "--work-dir", str(tmp_path), "--collect",
                                        "--candidates", "faithful,modern,rpgan"])
    out = capsys.readouterr().out
    assert out.count("not finished, left out") == 1 and "run_network.py" not in out
    assert collected["curves"] == result["curves"] and collected["settings"]["collected_only"]


def test_photo_crops_are_square_deterministic_and_varied() -> None:
    """bench/make_photo_crops.py: crops of a photograph at the asked size, the same for the same seed."""
    import numpy as np
    sys.path.insert(0, str(REPO / "bench"))
    import make_photo_crops
    photo = np.random.default_rng(1).integers(0, 256, (300, 451, 3), dtype=np.uint8)
    a = [np.asarray(make_photo_crops.crop(photo, np.random.default_rng(7), 32)) for _ in range(2)]
    assert a[0].shape == (32, 32, 3) and np.array_equal(a[0], a[1])
    rng = np.random.default_rng(3)
    crops = [np.asarray(make_photo_crops.crop(photo, rng, 32)) for _ in range(20)]
    assert len({c.tobytes() for c in crops}) == 20
