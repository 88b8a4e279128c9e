"""generate.py's work (the flags are parsed in generate.py, which imports this only after parsing, so
that `--help` and flag errors come back without loading torch)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from dnnlib.util import UserError, check_number
from training.checkpoint import load_generator
from training.sampling import (crop_ratio, load_latents, parse_seeds, pick_device, save_npy, save_png,
                               to_uint8, z_from_seeds)
from training.visualize import attention_images, has_attention, synthesize


def read_latents(path: str, k: int, dim: int) -> tuple[torch.Tensor, list[str]]:
    """Latents [N, k, dim] and one output name per row, from a file (also one sample [k, dim]) or a folder."""
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.npy"))
        if not files:
            raise UserError(f"no .npy files in {p}")
        try:
            rows = [np.load(f, allow_pickle=False).reshape(-1, k, dim) for f in files]
        except (ValueError, OSError) as e:
            raise UserError(f"latents in {p} are not [{k}, {dim}] per file: {e}") from None
        z = torch.from_numpy(np.concatenate(rows)).float()
        if len(z) != len(files) or not torch.isfinite(z).all():
            raise UserError(f"latents in {p} must hold one finite [{k}, {dim}] array per file")
        return z, [f"sample_{f.stem}.png" for f in files]
    if p.suffix == ".npy" and p.is_file():
        try:
            arr = np.load(p, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as e:        # object arrays (pickles), truncated files
            raise UserError(f"cannot read latents from {p}: {e}") from None
        if tuple(arr.shape) == (k, dim) and arr.dtype.kind in "fiu":   # one sample, as --vis-latents writes it
            z = torch.from_numpy(np.array(arr, np.float32))[None]
            if not torch.isfinite(z).all():
                raise UserError(f"latents in {p} contain NaN or Inf")
            return z, [f"sample_{p.stem}.png"]
    z = load_latents(p, k, dim)
    return z, [f"sample_{i:06d}.png" for i in range(len(z))]


def class_labels(G: torch.nn.Module, class_idx: Optional[int], n: int, device: torch.device) -> Optional[torch.Tensor]:
    """One-hot labels [n, c_dim] for --class, or None for an unconditional model."""
    if G.c_dim == 0:
        if class_idx is not None:
            raise UserError("--class given, but this model is unconditional")
        return None
    if class_idx is None:
        raise UserError(f"this model is conditional: pass --class (0..{G.c_dim - 1})")
    if not 0 <= class_idx < G.c_dim:
        raise UserError(f"--class must be in 0..{G.c_dim - 1}, got {class_idx}")
    return torch.nn.functional.one_hot(torch.full([n], class_idx), G.c_dim).float().to(device)


def check_args(args: argparse.Namespace) -> None:
    if args.images_num < 1:
        raise UserError("--images-num must be >= 1")
    if args.batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    check_number("--ratio", args.ratio, 0, 1, lo_open=True)
    check_number("--blending-alpha", args.blending_alpha, 0, 1)
    check_number("--truncation-psi", args.truncation_psi)
    if args.latents and args.latents_w:
        raise UserError("pass --latents or --latents-w, not both")
    if (args.swap_from is not None) + (args.resample_seed is not None) > 1:
        raise UserError("pass --swap-from or --resample-seed, not both")
    if (args.components is None) != (args.swap_from is None and args.resample_seed is None):
        raise UserError("--components goes with --swap-from or --resample-seed (and they with --components)")
    if args.resample_seed is not None and args.resample_seed < 0:
        raise UserError(f"--resample-seed must be non-negative, got {args.resample_seed}")


def parse_components(text: str, K: int) -> list[int]:
    """'2,5' -> [2, 5]; 'global' names row K. Rows 0..K-1 are the local components."""
    try:
        comps = [K if c.strip() == "global" else int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise UserError(f"--components must be a list like '2,5' or 'global', got {text!r}") from None
    if not comps or any(not 0 <= c <= K for c in comps):
        raise UserError(f"--components must name rows in 0..{K} ({K} = global), got {text!r}")
    return sorted(set(comps))


def swap_components(rows: torch.Tensor, donor: torch.Tensor, components: list[int]) -> torch.Tensor:
    """rows [N, K+1, d] with the chosen component rows taken from donor ([1 or N, K+1, d])."""
    assert rows.ndim == 3 and donor.shape[1:] == rows.shape[1:], (rows.shape, donor.shape)
    out = rows.clone()
    out[:, components] = donor.expand(len(rows), -1, -1)[:, components]
    return out


def donor_latents(G: torch.nn.Module, args: argparse.Namespace, n: int, from_w: bool,
                  device: torch.device) -> torch.Tensor:
    """The latents that --components are taken from: --swap-from's rows or seed --resample-seed's."""
    dim = G.w_dim if from_w else G.z_dim
    if args.swap_from is not None:
        donor, _ = read_latents(args.swap_from, G.k, dim)
        if len(donor) not in (1, n):
            raise UserError(f"--swap-from holds {len(donor)} latents; give 1 or {n} (one per image)")
        return donor
    z = z_from_seeds([args.resample_seed], G.k, G.z_dim)
    if not from_w:
        return z
    c = class_labels(G, args.class_idx, 1, device)
    with torch.no_grad():
        return G.map(z.to(device), c, truncation_psi=args.truncation_psi)[:, :, 0].cpu()


def render_batch(G: torch.nn.Module, rows: torch.Tensor, from_w: bool, c: Optional[torch.Tensor],
                 args: argparse.Namespace, device: torch.device) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Images [B, C, R, R] and attention maps for latent rows [B, K+1, d] (z, or w with from_w)."""
    if from_w:
        # A saved w is one slot (all slots are equal without style mixing): repeat it over the layers.
        ws = rows.unsqueeze(2).repeat(1, 1, G.num_ws, 1).to(device)
        img, maps, _ = synthesize(G, ws=ws, noise_mode=args.noise_mode)
    else:
        img, maps, _ = synthesize(G, z=rows.to(device), c=c, truncation_psi=args.truncation_psi,
                                  noise_mode=args.noise_mode)
    return img, maps


def run(args: argparse.Namespace) -> None:
    check_args(args)
    seeds = parse_seeds(args.seeds) if args.seeds else list(range(args.images_num))
    device = pick_device(args.gpus)
    G = load_generator(args.model, device)
    from_w = bool(args.latents_w)
    if from_w:
        rows, names = read_latents(args.latents_w, G.k, G.w_dim)
    elif args.latents:
        rows, names = read_latents(args.latents, G.k, G.z_dim)
    else:
        rows = z_from_seeds(seeds, G.k, G.z_dim)
        names = [f"seed{s:06d}.png" for s in seeds]
    c_all = None if from_w else class_labels(G, args.class_idx, len(rows), device)
    if args.attention and not has_attention(G):
        raise UserError("--attention: this model has no attention layers")
    originals = donors = None
    if args.components is not None:
        donors = donor_latents(G, args, len(rows), from_w, device).expand(len(rows), -1, -1)
        originals, rows = rows, swap_components(rows, donors, parse_components(args.components, G.K))

    Path(args.output_dir).mkdir(parents=True, exist_ok=True)     # a file in the way fails here, before any work
    raw = []
    done = 0
    torch.manual_seed(0)   # noise_mode=random stays reproducible run to run
    with torch.no_grad(), tqdm(total=len(rows), desc="generating", unit="img") as bar:
        for i in range(0, len(rows), args.batch_size):
            sl = slice(i, i + args.batch_size)
            c = None if c_all is None else c_all[sl]
            img, maps = render_batch(G, rows[sl], from_w, c, args, device)
            if args.save_npy:
                raw.append(img.float().cpu().numpy())
            overlay = compare = None
            if args.attention:
                overlay = attention_images(img, maps[-1], alpha=args.blending_alpha)[f"{args.attention}_blend"].cpu()
            if originals is not None:       # original | donor | edited, side by side
                strip = [render_batch(G, r[sl], from_w, c, args, device)[0] for r in (originals, donors)] + [img]
                compare = [to_uint8(x).cpu().numpy() for x in strip]
            for j, arr in enumerate(to_uint8(img).cpu().numpy()):
                save_png(crop_ratio(arr, args.ratio), f"{args.output_dir}/{names[done]}")
                if overlay is not None:
                    save_png(crop_ratio(overlay[j].numpy(), args.ratio), f"{args.output_dir}/attention/{names[done]}")
                if compare is not None:
                    panels = [crop_ratio(x[j], args.ratio) for x in compare]
                    save_png(np.concatenate(panels, axis=1), f"{args.output_dir}/compare/{names[done]}")
                done += 1
            bar.update(len(img))
    if args.save_npy:
        save_npy(np.concatenate(raw).astype(np.float32), args.save_npy)
    print(f"wrote {done} images to {args.output_dir}" + (f" and raw output to {args.save_npy}" if args.save_npy else ""))
