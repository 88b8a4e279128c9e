"""Training on CPU: every preset steps, resume after kill -9 equals an uninterrupted run, gloo DDP, atomic states."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO
from training import snapshots

TINY = ["--resolution", "16", "--channel-base", "256", "--channel-max", "16", "--batch-size", "4", "--batch-gpu", "2",
        "--kimg-per-tick", "0.004", "--snapshot-ticks", "1", "--summarize", "False", "--latent-size", "32",
        "--metrics", "none"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    from training.data.writer import write_scenes
    root = tmp_path_factory.mktemp("data")
    write_scenes(root / "scenes", resolution=16, count=64, workers=1, progress=False)
    return root


def cli(data_dir: Path, results: Path, *extra: str) -> list[str]:
    """A tiny training command. The thread count is fixed: runs are bitwise reproducible for a given seed and
    thread count only, and the automatic choice follows whatever else the machine is doing."""
    return ["--train", "--dataset", "scenes", "--data-dir", str(data_dir), "--result-dir", str(results),
            "--expname", "t", "--num-threads", "1", *TINY, *extra]


def run_in_process(argv: list[str]) -> None:
    import run_network
    run_network.main(argv)


def final_state(results: Path) -> dict:
    run = snapshots.find_runs(results, "t")[-1]
    nets, _, opts, counters = snapshots.load_state(snapshots.latest_state(run))
    return {"nets": nets, "opts": opts, "counters": counters}


def assert_same_state(a: dict, b: dict) -> None:
    assert a["counters"]["cur_nimg"] == b["counters"]["cur_nimg"]
    for net in ("G", "D", "G_ema"):
        for k, v in a["nets"][net].items():
            assert torch.equal(v, b["nets"][net][k]), f"{net}.{k}"
    for opt in ("G", "D"):
        for idx, st in a["opts"][opt]["state"].items():
            for k, v in st.items():
                assert torch.equal(v, b["opts"][opt]["state"][idx][k]), f"opt {opt} {idx} {k}"


@pytest.mark.parametrize("model", [["--ganformer-default", "--components-num", "4"], ["--baseline", "StyleGAN2"],
                                   ["--baseline", "GAN"], ["--baseline", "kGAN", "--components-num", "4"],
                                   ["--baseline", "SAGAN", "--g-img2img", "3"]])
def test_every_model_trains(data_dir, tmp_path, model) -> None:
    run_in_process(cli(data_dir, tmp_path, *model, "--total-kimg", "0.008"))
    state = final_state(tmp_path)
    assert state["counters"]["cur_nimg"] == 8 and state["counters"]["step"] == 2
    run = snapshots.find_runs(tmp_path, "t")[-1]
    assert (run / "fakes-000000.png").exists() and (run / "stats.jsonl").read_text().count("\n") == 2
    assert all(torch.isfinite(v).all() for v in state["nets"]["G"].values() if v.is_floating_point())


def test_resume_after_kill_matches_uninterrupted(data_dir, tmp_path) -> None:
    args = ["--ganformer-default", "--components-num", "4", "--total-kimg", "0.032"]
    run_in_process(cli(data_dir, tmp_path / "straight", *args))
    killed = tmp_path / "killed"
    cmd = [sys.executable, str(REPO / "run_network.py"), *cli(data_dir, killed, *args)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        runs = snapshots.find_runs(killed, "t")
        if runs and (state := snapshots.latest_state(runs[-1])):
            if snapshots.load_state(state)[3]["cur_nimg"] >= 8:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed: " + proc.stderr.read().decode()[-500:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    interrupted_at = snapshots.load_state(snapshots.latest_state(snapshots.find_runs(killed, "t")[-1]))[3]["cur_nimg"]
    assert interrupted_at < 32
    run_in_process(cli(data_dir, killed, *args))          # the same command again resumes
    assert len(snapshots.find_runs(killed, "t")) == 1
    assert_same_state(final_state(tmp_path / "straight"), final_state(killed))


@pytest.fixture(scope="module")
def labelled_dir(tmp_path_factory) -> Path:
    """A 2-class dataset `toy` of 16 random 16x16 images."""
    import numpy as np
    from training.data.writer import DatasetWriter
    root = tmp_path_factory.mktemp("labelled")
    images = np.random.default_rng(0).integers(0, 256, size=(16, 3, 16, 16), dtype=np.uint8)
    with DatasetWriter(root / "toy", name="toy", resolution=16, channels=3, capacity=16, shards_num=1, ratio=1.0,
                       fingerprint={"test": 1}, class_names=["a", "b"], checkpoint_seconds=0.0) as w:
        w.start()
        for i, img in enumerate(images):
            w.add(img, i % 2)
            w.advance(i + 1)
        w.finish()
    return root


@pytest.mark.parametrize("launcher", ["gpus", "torchrun"])
def test_two_process_gloo_with_labels(labelled_dir, tmp_path, launcher) -> None:
    """Two CPU processes, by --gpus 0,1 or by torchrun: every rank builds the conditional networks."""
    argv = ["--train", "--dataset", "toy", "--data-dir", str(labelled_dir), "--result-dir", str(tmp_path),
            "--expname", "t", *TINY, "--ganformer-default", "--components-num", "4", "--total-kimg", "0.016"]
    script = [str(REPO / "run_network.py"), *argv]
    if launcher == "gpus":
        cmd = [sys.executable, *script, "--gpus", "0,1"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
               *script]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "weights identical on all 2 ranks" in proc.stdout
    assert len(snapshots.find_runs(tmp_path, "t")) == 1
    _, configs, _, counters = snapshots.load_state(snapshots.latest_state(snapshots.find_runs(tmp_path, "t")[-1]))
    assert counters["cur_nimg"] == 16 and configs["G"]["c_dim"] == 2 and configs["D"]["c_dim"] == 2


def test_kill_during_state_write_never_leaves_a_bad_file(tmp_path) -> None:
    """A writer killed at random moments of save_snapshot (release file, then training state) leaves only
    complete files, and every training state left can be resumed (its release file is complete too)."""
    script = (
        "import sys, torch; sys.path.insert(0, %r)\n"
        "from training import snapshots\n"
        "from training.networks.presets import build\n"
        "from training.networks import Discriminator, Generator\n"
        "g, d = build('StyleGAN2', 64)\n"
        "G, D, G_ema = Generator(g), Discriminator(d), Generator(g)\n"
        "opts = {'G': torch.optim.Adam(G.parameters()), 'D': torch.optim.Adam(D.parameters())}\n"
        "i = 0\n"
        "while True:\n"
        "    snapshots.save_snapshot(%r, f'{i %% 3:06d}', G, D, G_ema, opts, {'i': i}, {})\n"
        "    print(i, flush=True); i += 1\n") % (str(REPO), str(tmp_path))
    for delay in (0.0, 0.13, 0.37):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        first = proc.stdout.readline()                  # one whole snapshot written: now kill it mid-stream
        assert first.strip() == "0", proc.stderr.read()[-2000:]
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        states = sorted(tmp_path.glob("training-state-*.safetensors"))
        assert states
        for f in states:
            nets, _, _, counters = snapshots.load_state(f)      # raises if it or its release file is incomplete
            assert len(nets["G"]) > 0 and len(nets["G_ema"]) > 0 and "i" in counters


def test_metrics_at_snapshots_and_eval(data_dir, tmp_path, capsys) -> None:
    """FID during training (real TF-Inception features), then run_network.py --eval on the run."""
    run_in_process(cli(data_dir, tmp_path, "--ganformer-default", "--components-num", "4", "--total-kimg", "0.008",
                       "--snapshot-ticks", "2", "--metrics", "fid", "--eval-images-num", "8"))
    run = snapshots.find_runs(tmp_path, "t")[-1]
    lines = (run / "metric-fid.txt").read_text().splitlines()
    assert len(lines) == 1 and "fid" in lines[0]
    stats = [l for l in (run / "stats.jsonl").read_text().splitlines() if "Metrics/fid" in l]
    assert len(stats) == 1
    base = ["--eval", "--expname", "t", "--result-dir", str(tmp_path), "--dataset", "scenes", "--data-dir", str(data_dir)]
    run_in_process(base + ["--metrics", "fid,kid", "--eval-images-num", "8"])
    assert len((run / "metric-fid.txt").read_text().splitlines()) == 2
    assert (run / "metric-kid.txt").exists()
    run_in_process(base + ["--metrics", "none", "--vis-maps", "--vis-images", "--vis-num", "2"])
    assert len(list((run / "visuals" / "maps").glob("*.png"))) == 2
    assert len(list((run / "visuals" / "images").glob("*.png"))) == 2
    from training.checkpoint import load_generator
    assert load_generator(run).img_resolution == 16          # a run folder means its latest snapshot
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_in_process(base + ["--metrics", "fid", "--eval-images-num", "1000"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "--eval-images-num" in err[0]


def test_fine_tune_from_tf_pickle(tmp_path) -> None:
    """--pretrained-pkl with an original TF snapshot: G, D and G_ema start from it and train."""
    from conftest import REF_TF
    pkl = REF_TF / "A_ganformer_default_32" / "network-snapshot-000000.pkl"
    if not pkl.exists():
        pytest.skip(f"TF reference data not found at {REF_TF}")
    from training.checkpoint import load_networks
    from training.data.writer import write_scenes
    write_scenes(tmp_path / "data" / "scenes", resolution=32, count=16, workers=1, progress=False)
    run_in_process(["--train", "--dataset", "scenes", "--data-dir", str(tmp_path / "data"), "--result-dir",
                    str(tmp_path), "--expname", "t", "--pretrained-pkl", str(pkl), "--batch-size", "4",
                    "--batch-gpu", "4", "--total-kimg", "0.008", "--kimg-per-tick", "0.004", "--summarize", "False",
                    "--metrics", "none"])
    tf = load_networks(pkl)
    state = final_state(tmp_path)
    assert state["counters"]["cur_nimg"] == 8
    G_sd = state["nets"]["G"]
    moved = [k for k, v in tf["G"].state_dict().items() if not torch.equal(v, G_sd[k])]
    assert set(G_sd) == set(tf["G"].state_dict()) and moved          # same architecture, weights trained
    ema = state["nets"]["G_ema"]
    start = tf["G_ema"].state_dict()
    # after 2 steps the EMA is still almost exactly the imported Gs (not G)
    differ = [k for k, v in start.items() if v.is_floating_point() and not torch.equal(v, tf["G"].state_dict()[k])
              and "w_avg" not in k]
    assert differ
    for k in differ:
        assert (ema[k] - start[k]).abs().max() < (ema[k] - tf["G"].state_dict()[k]).abs().max(), k
