"""`--help` and flag errors of the scripts come back before torch (or numpy) is imported: nothing is timed,
the test looks at what the script's process imported."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO

PROBE = """
import runpy, sys
sys.argv = [{script!r}, *{args!r}]
try:
    runpy.run_path({script!r}, run_name="__main__")
except SystemExit as e:
    print("EXIT", e.code)
print("HEAVY", sorted(m for m in ("torch", "numpy") if m in sys.modules))
"""


@pytest.mark.parametrize("script", ["run_network.py", "generate.py", "visualizer.py"])
@pytest.mark.parametrize("args,code", [(["--help"], 0), (["--no-such-flag"], 2)])
def test_help_and_flag_errors_import_no_torch(script, args, code) -> None:
    out = subprocess.run([sys.executable, "-c", PROBE.format(script=script, args=args)], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert f"EXIT {code}\n" in out.stdout, out.stdout + out.stderr
    assert out.stdout.rstrip().endswith("HEAVY []"), out.stdout[-300:]
    if code == 0:
        assert "--help" in out.stdout and "usage:" in out.stdout
    else:
        assert "error:" in out.stderr and out.stderr.count("\n") == 1, out.stderr      # one line


def test_generate_and_visualizer_share_one_definition_of_model_gpus_ratio() -> None:
    import generate
    import visualizer
    from dnnlib.cli import SHARED_FLAGS

    for script in (generate, visualizer):
        actions = script.build_parser()._option_string_actions
        for name, spec in SHARED_FLAGS.items():
            assert actions[name].help == spec["help"] and actions[name].required == spec.get("required", False)
        args = script.parse_args(["--model", "m", "--gpus", "1", "--ratio", "0.75"])
        assert (args.model, args.gpus, args.ratio) == ("m", "1", 0.75)
