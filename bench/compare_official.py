#!/usr/bin/env python
"""Side-by-side speed of our networks and the official GANformer PyTorch port, same process and weights.

The official code is not part of this repository: export `pytorch_version/` of dorarad/gansformer to a
folder of your own and pass it as --official-dir (modules it imports only for plotting and downloads,
seaborn and gdown, may be stubbed with empty modules in --stubs). Each measured step is one G loss
(softplus(-D(G(z)))) forward and backward, in train mode, alternating ours and theirs.

  python bench/compare_official.py --official-dir /tmp/official/pytorch_version --stubs /tmp/stubs \
      --reference ../shared/reference/official-pytorch/A_ganformer_default_32
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def _import_official(official_dir: str, stubs: str | None):
    """Import the official networks module under its own `training`/`dnnlib` names, then restore ours."""
    ours = {k: sys.modules.pop(k) for k in list(sys.modules) if k.split(".")[0] in ("training", "dnnlib")}
    sys.path[:0] = [p for p in (stubs, official_dir) if p]
    try:
        nets = importlib.import_module("training.networks")
    finally:
        for p in (stubs, official_dir):
            if p:
                sys.path.remove(p)
        theirs = {k: sys.modules.pop(k) for k in list(sys.modules) if k.split(".")[0] in ("training", "dnnlib")}
        sys.modules.update(ours)
    return nets, theirs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--official-dir", required=True)
    p.add_argument("--stubs", default=None)
    p.add_argument("--reference", required=True, help="an official-pytorch reference folder (kwargs + weights)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    sys.path.insert(0, str(REPO))
    from training.importers.official_pt import load_reference_folder
    device = torch.device(args.device)
    ours = load_reference_folder(args.reference)
    official, _ = _import_official(args.official_dir, args.stubs)
    cfg = json.loads((Path(args.reference) / "config.json").read_text())
    gk = {k: v for k, v in cfg["G_kwargs"].items() if k not in ("reg_interval", "opt_args")}
    dk = {k: v for k, v in cfg["D_kwargs"].items() if k not in ("reg_interval", "opt_args", "mapping_kwargs")}
    G_off, D_off = official.Generator(**gk), official.Discriminator(**dk)
    G_off.load_state_dict(torch.load(Path(args.reference) / "G_state.pt", weights_only=True))
    D_off.load_state_dict(torch.load(Path(args.reference) / "D_state.pt", weights_only=True))
    pairs = {"ours": (ours["G"].requires_grad_(True), ours["D"].requires_grad_(True)), "official": (G_off, D_off)}
    z = torch.randn([args.batch, *G_off.input_shape[1:]], device=device)
    c = torch.zeros([args.batch, 0], device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step(name: str) -> None:
        G, D = pairs[name]
        img = G(z, c)[0] if name == "official" else G(z, c)
        torch.nn.functional.softplus(-D(img, c)).mean().backward()

    for name, (G, D) in pairs.items():
        G.to(device).train(), D.to(device).train()
        step(name)
    times = {name: 0.0 for name in pairs}
    for _ in range(args.steps):
        for name in pairs:
            sync()
            t = time.perf_counter()
            step(name)
            sync()
            times[name] += time.perf_counter() - t
    per = {k: v / args.steps for k, v in times.items()}
    ratio = per["official"] / per["ours"]
    print(f"{Path(args.reference).name} batch {args.batch} on {device}: ours {per['ours'] * 1000:.1f} ms/step, "
          f"official {per['official'] * 1000:.1f} ms/step, official/ours = {ratio:.2f}")
    out = Path(args.out or REPO / f"bench/results/compare-official-{device.type}.json")
    out.write_text(json.dumps({"reference": Path(args.reference).name, "batch": args.batch, "device": str(device),
                               "torch": torch.__version__, "threads": torch.get_num_threads(),
                               "sec_per_step": per, "official_over_ours": ratio,
                               "command": " ".join(sys.argv)}, indent=1))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
