"""bench/gpu_check.sh's CPU dry run: every step runs at a tiny size and writes its JSON (the GPU figures come
from the same script on an H100/H200)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO

STEPS = ["env", "build", "ops", "kernels_vs_ref", "bf16_vs_fp32", "trainer", "syncs", "bench", "bench_compiled",
         "official"]


def test_gpu_check_dry_run(tmp_path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "GANFORMER_OFFICIAL": str(tmp_path / "no-official")}
    r = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    res = {s: json.loads((tmp_path / f"gpu-{s}-dryrun.json").read_text()) for s in STEPS}
    assert all(v["status"] == "ok" and v["dry_run"] for v in res.values()), {k: v.get("error") for k, v in res.items()}
    ops = [v for v in res["ops"].values() if isinstance(v, dict)]
    assert res["ops"]["ok"] and len(ops) == 8 and all(v["dtypes_equal"] for v in ops)
    assert all(res["kernels_vs_ref"][p]["grad_rel"] == 0 for p in ("g_main", "d_main", "d_r1"))   # both: reference
    assert res["trainer"]["params_finite"] and len(res["trainer"]["sec_per_step"]) == 3
    assert "per_step" in res["syncs"]
    rows = res["bench"]["rows"]
    assert {r["preset"] for r in rows} == {"GANformer", "StyleGAN2"}
    assert all(r["images_per_sec"] > 0 and r["flops"]["flop_per_image_per_step"] > 0 for r in rows)
    assert "skipped" in res["official"] and "skipped" in res["build"]


def test_gpu_check_refuses_without_gpu_and_bad_steps() -> None:
    r = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--dry-run", "nonsense"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "unknown step" in r.stderr and "Traceback" not in r.stderr
