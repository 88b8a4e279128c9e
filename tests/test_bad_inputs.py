"""Bad input, one clear line: every case exits non-zero with exactly one line on stderr, no traceback,
and leaves nothing behind (no new run folder, output file or temporary file).

The CLIs run in-process (main(argv), catching SystemExit) so that the suite stays fast; a few run as
real subprocesses to check the exit code and stderr of the scripts themselves.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO

TRAIN = ["--train", "--dataset", "scenes", "--expname", "t", "--resolution", "16", "--channel-base", "256",
         "--channel-max", "16", "--batch-size", "4", "--batch-gpu", "2", "--kimg-per-tick", "0.004",
         "--total-kimg", "0.008", "--summarize", "False", "--latent-size", "32", "--metrics", "none"]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _tiny(resolution: int = 16):
    from training.networks.presets import build
    from training.networks import Discriminator, Generator
    torch.manual_seed(0)
    G_cfg, D_cfg = build("StyleGAN2", resolution, latent_size=32, channel_base=256, channel_max=16)
    return Generator(G_cfg), Discriminator(D_cfg)


def _write_raw(path: Path, tensors: dict, meta: dict) -> None:
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=meta)


@pytest.fixture(scope="module")
def w(tmp_path_factory) -> dict:
    """Inputs: a dataset, good and broken checkpoints, broken latents, a refused pickle, a result folder."""
    from training.checkpoint import read_safetensors, save_checkpoint
    from training.data.writer import write_scenes
    root = tmp_path_factory.mktemp("bad")
    write_scenes(root / "data" / "scenes", resolution=16, count=16, workers=1, progress=False)
    G, D = _tiny()
    good = root / "good.safetensors"
    save_checkpoint(good, {"G": G, "D": D, "G_ema": G})
    meta, flat = read_safetensors(good, "ganformer-pytorch", "checkpoint")
    cfgs = json.loads(meta["configs"])
    nan = {k: (torch.full_like(v, float("nan")) if v.is_floating_point() else v) for k, v in flat.items()}
    _write_raw(root / "nan.safetensors", nan, meta)
    shapes = dict(flat)
    key = next(k for k in flat if k.startswith("G.") and flat[k].ndim == 2)
    shapes[key] = torch.zeros(flat[key].shape[0] + 1, flat[key].shape[1])
    _write_raw(root / "shape.safetensors", shapes, meta)
    _write_raw(root / "version.safetensors", flat, {**meta, "format_version": "x"})
    _write_raw(root / "future.safetensors", flat, {**meta, "format_version": "99"})
    _write_raw(root / "noconfigs.safetensors", flat, {k: v for k, v in meta.items() if k != "configs"})
    _write_raw(root / "badjson.safetensors", flat, {**meta, "configs": "{not json"})
    for name, patch in (("res65536", {"img_resolution": 65536}), ("channels", {"channel_max": 1 << 20}),
                        ("resstr", {"img_resolution": "16"})):
        c = json.loads(json.dumps(cfgs))
        for net in c.values():
            for k, v in patch.items():
                (net["synthesis"] if k.startswith("channel") and "synthesis" in net else net)[k] = v
        _write_raw(root / f"{name}.safetensors", flat, {**meta, "configs": json.dumps(c)})
    (root / "evil.pkl").write_bytes(pickle.dumps(_Evil()))
    (root / "garbage.safetensors").write_bytes(b"\x00" * 100)
    ref = root / "official"
    ref.mkdir()
    (ref / "config.json").write_text(json.dumps({"G_kwargs": {"w_dim": 32, "k": 1, "img_resolution": 16},
                                                 "D_kwargs": {"img_resolution": 16}}))
    torch.save({}, ref / "G_state.pt")
    np.save(root / "object.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    np.save(root / "nanz.npy", np.full([2, 1, 32], np.nan, np.float32))
    np.save(root / "z3.npy", np.zeros([2, 5], np.float32))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        data = np.random.default_rng(0).bytes(50000)
        info = tarfile.TarInfo("a.bin")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    (root / "trunc.tar.gz").write_bytes(gzip.compress(raw.getvalue())[:30000])
    (root / "afile").write_text("not a folder")
    imgs = root / "imgs"
    imgs.mkdir()
    (root / "results").mkdir()
    return {"root": root, "data": root / "data", "results": root / "results", "out": root / "out"}


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1, p.stat().st_mtime_ns)
            for p in root.rglob("*")}


def refuse(main, argv: list[str], root: Path, capsys) -> str:
    """Run main(argv): assert a non-zero exit, one stderr line, no traceback, nothing written."""
    capsys.readouterr()
    before = _tree(root)
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert e.value.code not in (0, None), err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert _tree(root) == before, "something was written"
    return err.strip()


def _train(w, *extra):
    return [*TRAIN, "--data-dir", w["data"], "--result-dir", w["results"], *extra]


def _eval(w, model, *extra):
    return ["--eval", "--metrics", "none", "--result-dir", w["results"], "--expname", "e",
            "--pretrained-pkl", w["root"] / model, *extra]


def _gen(w, *extra):
    return ["--output-dir", w["out"], "--images-num", "2", *extra]


RUN_NETWORK = [  # (id, argv from the fixture, needle in the message)
    ("g-lr-nan", lambda w: _train(w, "--g-lr", "nan"), "--g-lr"),
    ("g-lr-negative", lambda w: _train(w, "--g-lr", "-1"), "--g-lr"),
    ("d-lr-inf", lambda w: _train(w, "--d-lr", "inf"), "--d-lr"),
    ("g-lr-text", lambda w: _train(w, "--g-lr", "abc"), "--g-lr"),
    ("ema-kimg-nan", lambda w: _train(w, "--ema-kimg", "nan"), "--ema-kimg"),
    ("ema-rampup-negative", lambda w: _train(w, "--ema-rampup", "-1"), "--ema-rampup"),
    ("truncation-nan", lambda w: _train(w, "--truncation-psi", "nan"), "--truncation-psi"),
    ("gamma-negative", lambda w: _train(w, "--gamma", "-1"), "--gamma"),
    ("gamma-nan", lambda w: _train(w, "--gamma", "nan"), "--gamma"),
    ("style-mixing-2", lambda w: _train(w, "--style-mixing", "2"), "--style-mixing"),
    ("pl-weight-inf", lambda w: _train(w, "--pl-weight", "inf"), "--pl-weight"),
    ("total-kimg-0", lambda w: _train(w, "--total-kimg", "0"), "--total-kimg"),
    ("kimg-per-tick-nan", lambda w: _train(w, "--kimg-per-tick", "nan"), "--kimg-per-tick"),
    ("batch-size-0", lambda w: _train(w, "--batch-size", "0"), "--batch-size"),
    ("seed-negative", lambda w: _train(w, "--seed", "-1"), "--seed"),
    ("train-images-0", lambda w: _train(w, "--train-images-num", "0"), "--train-images-num"),
    ("resolution-0", lambda w: _train(w, "--resolution", "0"), "--resolution"),
    ("resolution-24", lambda w: _train(w, "--resolution", "24"), "power of two"),
    ("ratio-nan", lambda w: _train(w, "--ratio", "nan"), "--ratio"),
    ("latent-size-65", lambda w: _train(w, "--ganformer-default", "--components-num", "4", "--latent-size", "65"),
     "--latent-size"),
    ("num-heads-0", lambda w: _train(w, "--ganformer-default", "--components-num", "4", "--num-heads", "0"),
     "--num-heads"),
    ("channel-max-huge", lambda w: _train(w, "--channel-max", str(1 << 20)), "channel_max"),
    ("no-dataset", lambda w: [a for a in _train(w) if a != "scenes" and a != "--dataset"], "--dataset"),
    ("missing-dataset", lambda w: _train(w, "--dataset", "nosuch"), "nosuch"),
    ("result-dir-is-file", lambda w: _train(w, "--result-dir", w["root"] / "afile"), "afile"),
    ("result-dir-unwritable", lambda w: _train(w, "--result-dir", "/proc/ganformer-results"), "ganformer-results"),
    ("pretrained-nan", lambda w: _train(w, "--pretrained-pkl", w["root"] / "nan.safetensors"), "NaN"),
    ("pretrained-evil", lambda w: _train(w, "--pretrained-pkl", w["root"] / "evil.pkl"), "evil.pkl"),
    ("pretrained-shape", lambda w: _train(w, "--pretrained-pkl", w["root"] / "shape.safetensors"), "do not fit"),
    ("eval-evil", lambda w: _eval(w, "evil.pkl"), "evil.pkl"),
    ("eval-missing", lambda w: _eval(w, "nosuch.pkl"), "not found"),
    ("eval-truncation-nan", lambda w: _eval(w, "good.safetensors", "--truncation-psi", "nan"), "--truncation-psi"),
]

GENERATE_MODELS = [  # (id, model file in the fixture's folder, needle): a broken or hostile --model
    ("model-missing", "nosuch.safetensors", "not found"),
    ("model-nan", "nan.safetensors", "NaN"),
    ("model-garbage", "garbage.safetensors", "garbage"),
    ("model-shape", "shape.safetensors", "do not fit"),
    ("meta-version", "version.safetensors", "metadata"),
    ("meta-future", "future.safetensors", "format 99"),
    ("meta-no-configs", "noconfigs.safetensors", "metadata"),
    ("meta-bad-json", "badjson.safetensors", "metadata"),
    ("config-res-65536", "res65536.safetensors", "img_resolution"),
    ("config-huge-channels", "channels.safetensors", "channel_max"),
    ("config-res-string", "resstr.safetensors", "img_resolution"),
    ("official-no-z-dim", "official", "z_dim"),
    ("model-evil", "evil.pkl", "evil.pkl"),
]
GENERATE_FLAGS = [  # (id, flags beside a good model (a path: in the fixture's folder), needle)
    ("truncation-nan", ["--truncation-psi", "nan"], "--truncation-psi"),
    ("ratio-0", ["--ratio", "0"], "--ratio"),
    ("images-num-0", ["--images-num", "0"], "--images-num"),
    ("seeds-negative", ["--seeds", "-3"], "--seeds"),
    ("latents-object", ["--latents", Path("object.npy")], "object.npy"),
    ("latents-nan", ["--latents", Path("nanz.npy")], "NaN"),
    ("latents-shape", ["--latents", Path("z3.npy")], "shape"),
    ("output-dir-is-file", ["--output-dir", Path("afile")], "afile"),
    ("unknown-flag", ["--bogus"], "--bogus"),
]


def _gen_model(model: str):
    return lambda w: _gen(w, "--model", w["root"] / model)


def _gen_flags(flags: list):
    return lambda w: _gen(w, "--model", w["root"] / "good.safetensors",
                          *[w["root"] / f if isinstance(f, Path) else f for f in flags])


GENERATE = ([(i, _gen_model(model), needle) for i, model, needle in GENERATE_MODELS]
            + [(i, _gen_flags(flags), needle) for i, flags, needle in GENERATE_FLAGS])

PREPARE = [
    ("no-task", lambda w: ["--data-dir", w["data"]], "nothing to do"),
    ("images-dir-missing", lambda w: ["--data-dir", w["data"], "--task", "x", "--images-dir", w["root"] / "nosuch"],
     "nosuch"),
    ("resolution-0", lambda w: ["--data-dir", w["data"], "--scenes", "--resolution", "0"], "--resolution"),
    ("ratio-nan", lambda w: ["--data-dir", w["data"], "--task", "x", "--images-dir", w["root"] / "imgs",
                             "--ratio", "nan"], "--ratio"),
    ("task-path", lambda w: ["--data-dir", w["data"], "--task", "../x", "--images-dir", w["root"] / "imgs"],
     "separators"),
    ("data-dir-is-file", lambda w: ["--data-dir", w["root"] / "afile", "--scenes"], "afile"),
    ("replace-different", lambda w: ["--data-dir", w["data"], "--scenes", "--resolution", "8", "--max-images", "8"],
     "different dataset"),
    ("channels-2", lambda w: ["--data-dir", w["data"], "--task", "x", "--images-dir", w["root"] / "imgs",
                              "--channels", "2"], "--channels"),
]

CONVERT = [
    ("missing", lambda w: ["--model", w["root"] / "nosuch.pkl", "--output", w["out"] / "x.safetensors"], "not found"),
    ("evil", lambda w: ["--model", w["root"] / "evil.pkl", "--output", w["out"] / "x.safetensors"], "evil.pkl"),
    ("nan", lambda w: ["--model", w["root"] / "nan.safetensors", "--output", w["out"] / "x.safetensors"], "NaN"),
    ("suffix", lambda w: ["--model", w["root"] / "good.safetensors", "--output", w["out"] / "x.pt"], ".safetensors"),
    ("hostile-config", lambda w: ["--model", w["root"] / "res65536.safetensors", "--output",
                                  w["out"] / "x.safetensors"], "img_resolution"),
]

COMPARE = [
    ("missing", lambda w: [w["root"] / "nosuch", w["root"] / "imgs"], "nosuch"),
    ("num-1", lambda w: [w["root"] / "imgs", w["root"] / "imgs", "--num", "1"], "--num"),
    ("cuda", lambda w: [w["root"] / "imgs", w["root"] / "imgs", "--device", "cuda:7"], "cuda"),
    ("batch-text", lambda w: [w["root"] / "imgs", w["root"] / "imgs", "--batch", "x"], "--batch"),
]


def _mains():
    import convert_model
    import generate
    import prepare_data
    import run_network
    from metrics import compare
    return {"run_network": run_network.main, "generate": generate.main, "prepare_data": prepare_data.main,
            "convert_model": convert_model.main, "compare": compare.main}


CASES = [(tool, case) for tool, cases in (("run_network", RUN_NETWORK), ("generate", GENERATE),
                                          ("prepare_data", PREPARE), ("convert_model", CONVERT),
                                          ("compare", COMPARE)) for case in cases]


@pytest.mark.parametrize("tool,case", CASES, ids=[f"{t}-{c[0]}" for t, c in CASES])
def test_refused_with_one_line(w, capsys, tool, case) -> None:
    if tool == "compare" and case[0] == "cuda" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    _, argv, needle = case
    line = refuse(_mains()[tool], argv(w), w["root"], capsys)
    assert needle.lower() in line.lower(), line


def test_at_least_forty_cases() -> None:
    assert len(CASES) >= 40


def test_truncated_tar_gz_one_line(w) -> None:
    from dnnlib.download import extract
    from dnnlib.util import UserError
    with pytest.raises(UserError, match="corrupt"):
        extract(w["root"] / "trunc.tar.gz", w["root"] / "extracted", progress=False)
    assert not (w["root"] / "extracted").exists() and not (w["root"] / "extracted.partial").exists()


def test_second_identical_command_refused_while_first_holds_the_lock(w, capsys, tmp_path) -> None:
    """Two identical commands at once: the second one stops with one line instead of interleaving."""
    import run_network
    from dnnlib.util import folder_lock
    run = tmp_path / "results" / "t-000"
    run.mkdir(parents=True)
    with folder_lock(run):
        line = refuse(run_network.main, [*TRAIN, "--data-dir", w["data"], "--result-dir", tmp_path / "results"],
                      tmp_path, capsys)
    assert "in use" in line and str(os.getpid()) in line


@pytest.mark.parametrize("script,args", [
    ("run_network.py", ["--train", "--dataset", "scenes", "--g-lr", "nan"]),
    ("generate.py", ["--model", "nosuch.safetensors"]),
    ("prepare_data.py", ["--scenes", "--resolution", "3"]),
    ("convert_model.py", ["--model", "x", "--output", "y.txt"]),
])
def test_scripts_exit_with_one_line(tmp_path, script, args) -> None:
    proc = subprocess.run([sys.executable, str(REPO / script), *args, *(["--data-dir", str(tmp_path)]
                           if script in ("prepare_data.py", "run_network.py") else [])],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert list(tmp_path.iterdir()) == [], "something was written"
