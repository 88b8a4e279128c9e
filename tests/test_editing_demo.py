"""bench/editing_demo.py: one swap per component, the global latent and all local ones, a montage and figures."""
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import editing_demo  # noqa: E402
from test_generate import tiny_ganformer_checkpoint  # noqa: E402


def test_editing_demo_montage_and_figures(tmp_path, one_thread) -> None:
    model = str(tiny_ganformer_checkpoint(tmp_path / "net.safetensors"))        # K = 4, 16x16
    out = tmp_path / "demo.png"
    result = editing_demo.main(["--model", model, "--seeds", "0-1", "--donor-seed", "5", "--out", str(out)])
    figures = result["mean_abs_pixel_change_per_swap"]
    assert list(figures) == ["0", "1", "2", "3", "global", "all local"]
    assert all(v >= 0 for v in figures.values()) and figures["global"] > 0
    assert json.loads(out.with_suffix(".json").read_text()) == result
    montage = np.asarray(Image.open(out))
    # rows: originals, donor, 6 swaps; columns: the 2 seeds (16 px tiles at 3x, 2 px gaps, 90 px labels)
    assert montage.shape == (8 * (48 + 2), 90 + 2 * (48 + 2), 3)
    assert len(result["generate_commands"]) == 6
