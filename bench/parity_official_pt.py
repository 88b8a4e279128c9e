#!/usr/bin/env python
"""Print and save the largest errors against every official PyTorch reference folder.

Usage: python bench/parity_official_pt.py [--ref ../shared/reference/official-pytorch] [--out FILE]
Image/logit errors are relative to the reference tensor's largest absolute value; attention maps absolute.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from training.importers.official_pt import load_reference_folder  # noqa: E402


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def measure(folder: Path, perturbed: bool) -> dict[str, float]:
    inputs = torch.load(folder / "inputs.pt", weights_only=True)
    ref = torch.load(folder / ("outputs_perturbed.pt" if perturbed else "outputs.pt"), weights_only=True)
    nets = load_reference_folder(folder, overrides=perturbed)
    G, D = nets["G"], nets["D"]
    res: dict[str, float] = {"img": 0.0, "ws": 0.0, "att": 0.0}
    with torch.no_grad():
        for psi, tag in ((1.0, "psi1"), (0.7, "psi0p7")):
            ws = G.map(inputs["z"], inputs["c"], truncation_psi=psi)
            img, maps = G.synthesize(ws, noise_mode="const")
            res["ws"] = max(res["ws"], rel(ws, ref[f"ws_{tag}"]))
            res["img"] = max(res["img"], rel(img, ref[f"img_{tag}_const"]))
            for j, m in enumerate(maps):
                if f"att_{tag}_const.layer{j}" in ref:
                    r = ref[f"att_{tag}_const.layer{j}"]
                    res["att"] = max(res["att"], (m.reshape(r.shape) - r).abs().max().item())
        res["img"] = max(res["img"], rel(G(inputs["z"], noise_mode="none"), ref["img_psi1_none"]),
                         rel(G(inputs["z"], noise_mode="const", fused_modconv=False), ref["img_psi1_const_unfused"]))
        res["d_logits"] = max(rel(D(inputs["d_img"]), ref["d_logits_real"]), rel(D(ref["img_psi1_const"]), ref["d_logits_fake"]))
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ref", default=str(Path(__file__).resolve().parents[2] / "shared/reference/official-pytorch"))
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results/parity-official-pytorch-cpu.json"))
    args = p.parse_args()
    torch.set_num_threads(2)
    rows = []
    for folder in sorted(Path(args.ref).iterdir()):
        for perturbed in (False, True):
            if folder.is_dir() and (folder / ("outputs_perturbed.pt" if perturbed else "outputs.pt")).exists():
                r = measure(folder, perturbed)
                rows.append({"folder": folder.name, "weights": "perturbed" if perturbed else "plain", **r})
                print(f"{folder.name:28s} {rows[-1]['weights']:9s} " + "  ".join(f"{k} {v:.2e}" for k, v in r.items()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"device": "cpu", "torch": torch.__version__, "machine": platform.machine(),
                                          "command": "python bench/parity_official_pt.py", "rows": rows}, indent=1))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
