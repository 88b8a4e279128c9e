"""bench/gpu_check.sh's CPU dry run: every step runs at a tiny size and writes its JSON (the GPU figures come
from the same script on an H100/H200)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO

STEPS = ["env", "build", "ops", "gpu_tests", "kernels_vs_ref", "bf16_vs_fp32", "trainer", "syncs", "bench",
         "bench_compiled", "official"]


def test_gpu_check_dry_run(tmp_path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "GANFORMER_OFFICIAL": str(tmp_path / "no-official")}
    bundle = tmp_path / "bundle" / "gpu-check.json"
    r = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path),
                        "--bundle", str(bundle)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    res = {s: json.loads((tmp_path / f"gpu-{s}-dryrun.json").read_text()) for s in STEPS}
    # the bundle holds the same results, and splits back into the same files
    assert json.loads(bundle.read_text())["steps"] == res
    split = tmp_path / "split"
    r = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--unbundle", str(bundle), "--out", str(split)],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert {p.name: json.loads(p.read_text()) for p in split.iterdir()} == {f"gpu-{s}-dryrun.json": res[s] for s in STEPS}
    assert all(v["status"] == "ok" and v["dry_run"] for v in res.values()), {k: v.get("error") for k, v in res.items()}
    ops = [v for v in res["ops"].values() if isinstance(v, dict)]
    assert res["ops"]["ok"] and len(ops) == 8 and all(v["dtypes_equal"] for v in ops)
    assert all(res["kernels_vs_ref"][p]["grad_rel"] == 0 for p in ("g_main", "d_main", "d_r1"))   # both: reference
    gt = res["gpu_tests"]                                     # on a CPU every GPU test skips
    assert gt["tests"] > 50 and gt["skipped"] == gt["tests"] and gt["failed"] == [] and gt["returncode"] == 0
    assert res["trainer"]["params_finite"] and len(res["trainer"]["sec_per_step"]) == 3
    assert {"no_augment", "augment_bgc_p0.5"} <= set(res["syncs"])
    rows = res["bench"]["rows"]
    assert {r["preset"] for r in rows} == {"GANformer", "StyleGAN2"}
    assert all(r["images_per_sec"] > 0 and r["flops"]["flop_per_image_per_step"] > 0 for r in rows)
    assert "skipped" in res["official"] and "skipped" in res["build"]


def test_gpu_check_refuses_without_gpu_and_bad_steps() -> None:
    r = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--dry-run", "nonsense"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "unknown step" in r.stderr and "Traceback" not in r.stderr


def test_a_step_cut_short_keeps_what_it_measured(tmp_path) -> None:
    """A step past its timeout records status "timeout" and the rows it finished; a step killed from outside
    (the shell's timeout) still gets a record, in its file and in the bundle."""
    gpu_check = str(REPO / "bench" / "gpu_check.py")
    bundle = tmp_path / "b.json"
    r = subprocess.run([sys.executable, "-c", (
        "import sys, time; sys.argv[0] = %r; sys.path.insert(0, %r)\n"
        "import bench_train, gpu_check\n"
        "def slow(argv, rows):\n"
        "    rows.append({'preset': 'first'})\n"
        "    time.sleep(30)\n"
        "bench_train.main = slow\n"
        "sys.exit(gpu_check.main(['--dry-run', 'bench', '--step-timeout', '2', '--out', %r, '--bundle', %r]))")
        % (gpu_check, str(REPO / "bench"), str(tmp_path), str(bundle))],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    res = json.loads((tmp_path / "gpu-bench-dryrun.json").read_text())
    assert res["status"] == "timeout" and res["partial"]["rows"] == [{"preset": "first"}] and res["sec"] < 20
    r = subprocess.run([sys.executable, gpu_check, "official", "--dry-run", "--killed", "124", "--out", str(tmp_path),
                        "--bundle", str(bundle)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    steps = json.loads(bundle.read_text())["steps"]
    assert steps["bench"] == res and steps["official"]["status"] == "killed" and steps["official"]["exit_code"] == 124
    assert json.loads((tmp_path / "gpu-official-dryrun.json").read_text()) == steps["official"]


def test_official_step_dry_run(tmp_path) -> None:
    """The official step on CPU at 16x16, where the official port (git-ignored official/pytorch_version) and
    its reference kwargs are at hand: both sides train and the ratio is recorded."""
    import pytest
    official = REPO / "official" / "pytorch_version"
    config = REPO.parent / "shared" / "reference" / "official-pytorch" / "A_ganformer_default_32" / "config.json"
    if not (official / "training" / "networks.py").is_file() or not config.is_file():
        pytest.skip("needs the official port in official/pytorch_version and ../shared's reference config")
    ref = tmp_path / "reference"
    ref.mkdir()
    (ref / "config.json").write_text(config.read_text())
    r = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--dry-run", "official", "--out",
                        str(tmp_path), "--official-dir", str(official), "--official-reference", str(ref)],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads((tmp_path / "gpu-official-dryrun.json").read_text())
    assert res["status"] == "ok" and res["official_over_ours"] > 0 and res["params_ours"] == res["params_official"]
    assert "--reference" in res["command"] and res["official_ops"] == "ref"


def test_without_cuda_the_env_step_still_records_why(tmp_path) -> None:
    """On a machine whose CUDA does not come up, the check stops at once, in one line, and leaves the
    environment and torch's reason in gpu-env.json for the diagnosis."""
    import torch
    import pytest
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is available here")
    r = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "env", "--out", str(tmp_path)],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "no CUDA device" in r.stderr and "Traceback" not in r.stderr
    env = json.loads((tmp_path / "gpu-env.json").read_text())
    assert env["status"] == "error" and "no CUDA device" in env["error"] and env["torch"] == torch.__version__


def test_unbundle_refuses_a_bad_file_in_one_line(tmp_path) -> None:
    """A bundle naming an unknown step, or not a bundle at all: one line, exit 2, nothing written."""
    cases = {"unknown-step.json": json.dumps({"steps": {"nonsense": {"status": "ok"}}}),
             "not-json.json": "{", "no-steps.json": json.dumps({"rows": []})}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        out = tmp_path / ("out-" + name)
        r = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--unbundle", str(tmp_path / name),
                            "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and "cannot split" in r.stderr and "Traceback" not in r.stderr, (name, r.stderr)
        assert not any(out.iterdir())


def _bench_module(name: str):
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import importlib
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(REPO / "bench"))


def test_builds_run_in_their_own_processes_and_keep_their_logs(tmp_path, monkeypatch) -> None:
    """The build step's jobs (here: stand-ins, one that fails) each end with an exit code, a time and a log."""
    gc = _bench_module("gpu_check")
    monkeypatch.setattr(gc, "_BUILD_OURS", "import sys; print('building {op}'); sys.exit(0 if {op!r} == 'bias_act' else 4)")
    ctx = type("Ctx", (), {"official": str(tmp_path / "no-official")})()
    out = gc._build_all(ctx)
    assert set(out) == {"ours_bias_act", "ours_upfirdn2d"}                  # no official port here: ours only
    assert out["ours_bias_act"]["exit_code"] == 0 and out["ours_upfirdn2d"]["exit_code"] == 4
    assert "building upfirdn2d" in out["ours_upfirdn2d"]["log_tail"]
    assert all(v["sec"] >= 0 for v in out.values())


def test_official_kernels_are_importable_by_name_and_find_pip_headers(tmp_path, monkeypatch) -> None:
    """torch 2.x's extension loader does not register the module; the official port imports it by name."""
    import types
    from torch.utils import cpp_extension
    co = _bench_module("compare_official")
    built = types.ModuleType("stand_in_plugin")
    monkeypatch.setattr(cpp_extension, "load", lambda name, **kw: built)
    original = cpp_extension.load
    monkeypatch.delitem(sys.modules, "stand_in_plugin", raising=False)
    with co.importable_extensions():
        assert cpp_extension.load(name="stand_in_plugin", sources=[]) is built
        import importlib
        assert importlib.import_module("stand_in_plugin") is built
    assert cpp_extension.load is original
    monkeypatch.delitem(sys.modules, "stand_in_plugin")

    # pip's CUDA library headers are offered only where the toolkit lacks them
    toolkit, pip_root = tmp_path / "cuda", tmp_path / "site" / "nvidia"
    (toolkit / "include").mkdir(parents=True)
    (pip_root / "cu13" / "include").mkdir(parents=True)
    (pip_root / "nccl" / "include").mkdir(parents=True)
    (pip_root / "cu13" / "include" / "cusparse.h").write_text("")
    monkeypatch.setitem(sys.modules, "nvidia", types.SimpleNamespace(__path__=[str(pip_root)]))
    assert co._pip_cuda_headers(str(toolkit)) == [str(pip_root / "cu13" / "include")]
    for h in co._LIBRARY_HEADERS:
        (toolkit / "include" / h).write_text("")
    assert co._pip_cuda_headers(str(toolkit)) == []


def test_stale_build_locks_are_removed(tmp_path, monkeypatch) -> None:
    """A build killed at its time limit leaves torch's `lock` file; later builds of that folder would wait forever."""
    gc = _bench_module("gpu_check")
    ours, torchs = tmp_path / "ours", tmp_path / "torch_extensions"
    monkeypatch.setattr(gc.custom_ops, "build_dir_root", lambda: ours)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(torchs))
    locks = [ours / "bias_act_plugin-0123" / "lock", torchs / "py312_cu130" / "upfirdn2d_plugin" / "lock",
             torchs / "py312_cu130" / "upfirdn2d_plugin" / "abcdef" / "lock"]
    kept = [ours / "bias_act_plugin-0123" / "bias_act.o", torchs / "py312_cu130" / "upfirdn2d_plugin" / "build.ninja"]
    for f in locks + kept:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("")
    assert sorted(gc.clear_build_locks()) == sorted(str(f) for f in locks)
    assert not any(f.exists() for f in locks) and all(f.exists() for f in kept)
    assert gc.clear_build_locks() == []
