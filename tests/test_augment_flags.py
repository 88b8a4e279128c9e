"""Bad augmentation flags end the command when it is parsed (training/run_config.py validate()): one line on
stderr naming the flag, exit code 2, before torch is imported or any dataset, run folder or network exists."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO
from dnnlib.util import UserError
from training.options import parse

TRAIN = ["--train", "--dataset", "scenes", "--resolution", "16", "--total-kimg", "0.004"]
BAD = [(["--augment", "ada", "--ada-target", "1.5"], "--ada-target"),
       (["--augment", "ada", "--ada-target", "0"], "--ada-target"),
       (["--augment", "ada", "--ada-target", "nan"], "--ada-target"),
       (["--augment", "ada", "--ada-kimg", "0"], "--ada-kimg"),
       (["--augment", "ada", "--ada-kimg", "inf"], "--ada-kimg"),
       (["--augment", "fixed", "--augment-p", "-0.1"], "--augment-p"),
       (["--augment", "fixed", "--augment-p", "1.5"], "--augment-p"),
       (["--augment", "fixed", "--augment-pipe", "bgq"], "--augment-pipe"),
       (["--augment-pipe", "geom,warp"], "--augment-pipe")]


@pytest.mark.parametrize("flags, name", BAD)
def test_bad_flag_fails_at_parse_time(flags, name):
    with pytest.raises(UserError, match=name):
        parse(TRAIN + flags)


@pytest.mark.parametrize("flags", [["--augment", "ada", "--ada-target", "0.6", "--ada-kimg", "100"],
                                   ["--augment", "fixed", "--augment-p", "0", "--augment-pipe", "bgcfnc"],
                                   ["--augment", "none", "--augment-pipe", "xflip,geom,hue"]])
def test_good_flags_pass(flags):
    run = parse(TRAIN + flags)
    assert run.train.augment == flags[1]


def test_eval_and_summary_modes_check_them_too():
    """The flags are validated wherever they are given (one place: TrainOptions.validate)."""
    for mode in ([], ["--eval"]):
        with pytest.raises(UserError, match="--ada-target"):
            parse(["--dataset", "scenes", *mode, "--ada-target", "2"])


def test_script_stops_before_any_work(tmp_path):
    """The real script: one line, exit code 2, torch never imported, no dataset rendered, no run folder."""
    probe = ("import sys, run_network\n"
             "try:\n    run_network.main(sys.argv[1:])\n"
             "except SystemExit as e:\n    print(e.code, 'torch' in sys.modules)\n")
    argv = [*TRAIN, "--data-dir", str(tmp_path / "data"), "--result-dir", str(tmp_path / "results"),
            "--augment", "ada", "--ada-target", "1.5"]
    r = subprocess.run([sys.executable, "-c", probe, *argv], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["2", "False"], r.stdout + r.stderr
    assert r.stderr.count("\n") == 1 and "--ada-target" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "results").exists()
