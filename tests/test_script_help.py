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

