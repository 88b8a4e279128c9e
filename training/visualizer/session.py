"""The visualiser's model session: one loaded generator (following a run folder) and its rendered views.

Everything here is synchronous and guarded by one lock: the web app runs these calls in worker threads,
one at a time, so the event loop never waits on the model and two requests never share it.
"""
from __future__ import annotations

import base64
import io
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from dnnlib.util import UserError
from training.checkpoint import latest_snapshot, load_generator
from training.sampling import crop_ratio, to_uint8, z_from_seeds
from training.visualizer.projection import decode_image, find_projector, run_projection
from training.visualize import attention_images, colorize, mixing_ws, palette, synthesize

MAX_SEED = 2 ** 32 - 1
SIZES = (0, 64, 128, 256, 512, 1024)      # display sizes offered by the page; 0 = the model's own resolution
NOISE_MODES = ("const", "random", "none")
VIEWS = ("hard_blend", "soft_blend", "hard", "soft")
FOLLOW_EVERY_S = 2.0                      # how often a run folder is checked for a newer snapshot


# ---------------------------------------------------------------------------------------------------
# Request parsing: every field checked, one readable message per bad value.

def _number(data: dict, key: str, kind: type, lo: float, hi: float, default: Any = None) -> Any:
    value = data.get(key, default)
    if value is None or value == "":
        if default is None:
            raise UserError(f"{key} is required")
        value = default
    try:
        num = kind(value) if kind is float else int(str(value).strip())
    except (TypeError, ValueError):
        raise UserError(f"{key} must be {'an integer' if kind is int else 'a number'}, got {value!r}") from None
    if not lo <= num <= hi:
        raise UserError(f"{key} must be in {lo}..{hi}, got {num}")
    return num


@dataclass
class RenderRequest:
    seed: int
    psi: float = 0.7
    noise: str = "const"
    size: int = 0                                   # display size in pixels; 0 = native
    class_idx: Optional[int] = None
    component_seeds: list[int] = field(default_factory=list)   # one per latent (locals, then global)
    mix_seed: Optional[int] = None                  # style mixing: slots lo..hi-1 come from this seed
    mix_lo: int = 0
    mix_hi: int = 0
    layer: int = -1                                 # attention layer shown (-1 = last)
    head: int = 0
    alpha: float = 0.3                              # image weight in the overlay blends

    @classmethod
    def parse(cls, data: Any) -> "RenderRequest":
        if not isinstance(data, dict):
            raise UserError("the request must be a JSON object")
        seed = _number(data, "seed", int, 0, MAX_SEED)
        noise = data.get("noise", "const")
        if noise not in NOISE_MODES:
            raise UserError(f"noise must be one of {', '.join(NOISE_MODES)}, got {noise!r}")
        size = _number(data, "size", int, 0, max(SIZES), 0)
        comps = data.get("component_seeds") or []
        if not isinstance(comps, list):
            raise UserError("component_seeds must be a list of seeds")
        comp_seeds = [_number({"component seed": s}, "component seed", int, 0, MAX_SEED) for s in comps]
        mix = data.get("mix_seed")
        req = cls(seed=seed, psi=_number(data, "psi", float, -2.0, 2.0, 0.7), noise=noise, size=size,
                  class_idx=None if data.get("class") in (None, "") else _number(data, "class", int, 0, 1 << 20),
                  component_seeds=comp_seeds,
                  mix_seed=None if mix in (None, "") else _number(data, "mix_seed", int, 0, MAX_SEED),
                  mix_lo=_number(data, "mix_lo", int, 0, 1 << 10, 0), mix_hi=_number(data, "mix_hi", int, 0, 1 << 10, 0),
                  layer=_number(data, "layer", int, -1, 1 << 10, -1), head=_number(data, "head", int, 0, 1 << 10, 0),
                  alpha=_number(data, "alpha", float, 0.0, 1.0, 0.3))
        if req.mix_seed is not None and req.mix_lo >= req.mix_hi:
            raise UserError(f"style mixing needs a non-empty layer range, got {req.mix_lo}..{req.mix_hi}")
        return req


# ---------------------------------------------------------------------------------------------------
# Images for the page.

def png_data_url(img: np.ndarray, size: int = 0, smooth: bool = True) -> str:
    """An HWC uint8 image as a PNG data URL, resized so its width is `size` (0 = as it is).

    Enlarging replicates pixels (what the model made, nothing invented); shrinking a smooth image filters.
    """
    import PIL.Image

    im = PIL.Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
    if size and size != im.width:
        height = max(1, round(im.height * size / im.width))
        im = im.resize((size, height), PIL.Image.LANCZOS if smooth and size < im.width else PIL.Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def hex_colors(k: int) -> list[str]:
    """The component colours of training/visualize.py's palette as CSS hex strings."""
    return ["#%02x%02x%02x" % tuple(int(round(v * 255)) for v in rgb) for rgb in palette(k).tolist()]


def component_maps(probs: torch.Tensor) -> torch.Tensor:
    """Each component's attention alone, in its colour: [1, K, r, r] -> uint8 [K, r, r, 3].

    Scaled by the layer's largest probability so that weak components stay dim, as they are.
    """
    k = probs.shape[1]
    alone = torch.eye(k, device=probs.device)[:, :, None, None] * probs   # [K (map), K (component), r, r]
    rgb = colorize(alone / probs.max().clamp(min=1e-8))                    # [K, 3, r, r] in [0, 1]
    return to_uint8(rgb * 2 - 1).cpu()


# ---------------------------------------------------------------------------------------------------
# The session.

class ModelSession:
    """A generator loaded from any source generate.py accepts; a run folder is followed as it grows."""

    def __init__(self, source: str, device: torch.device, ratio: float = 1.0):
        if not 0 < ratio <= 1:
            raise UserError(f"--ratio must be in (0, 1], got {ratio}")
        self.lock = threading.Lock()
        self.device, self.ratio = device, ratio
        self.G: Optional[torch.nn.Module] = None
        self.source, self.run_dir, self.snapshot, self.notice = "", None, None, ""
        self.layers: list[dict] = []
        self._checked = 0.0
        self.load(source)

    # -- loading ----------------------------------------------------------------------------------

    def load(self, source: str) -> None:
        """Load a model; on failure the current one stays (the caller shows the message)."""
        from training.importers.official_pt import looks_like_reference_folder

        source = str(source).strip()
        if not source:
            raise UserError("give a model: a checkpoint, a run folder, a reference folder or a pickle")
        path = Path(source)
        run_dir = path if path.is_dir() and not looks_like_reference_folder(path) else None
        snap = latest_snapshot(run_dir) if run_dir is not None else None
        if run_dir is not None and snap is None and not (run_dir / "stats.jsonl").exists():
            raise UserError(f"{source} is a folder with neither a reference model nor network snapshots")
        G = load_generator(snap or source, self.device) if run_dir is None or snap is not None else None
        self.source, self.run_dir, self.snapshot = source, run_dir, snap
        self._use(G, f"waiting for the first snapshot in {run_dir}" if G is None else "")

    def _use(self, G: Optional[torch.nn.Module], notice: str) -> None:
        self.G, self.notice, self.layers = G, notice, []
        self._checked = time.monotonic()
        if G is None:
            return
        z = torch.zeros([1, G.k, G.z_dim], device=self.device)
        _, maps, _ = synthesize(G, z=z, c=self._labels(0 if G.c_dim else None), noise_mode="const")
        self.layers = [{"index": i, "resolution": m.shape[-1], "heads": m.shape[1]} for i, m in enumerate(maps)]

    def follow(self) -> None:
        """Load a run folder's newer snapshot, at most every FOLLOW_EVERY_S seconds."""
        if self.run_dir is None or time.monotonic() - self._checked < FOLLOW_EVERY_S:
            return
        self._checked = time.monotonic()
        snap = latest_snapshot(self.run_dir)
        if snap is None or snap == self.snapshot:
            return
        try:
            G = load_generator(snap, self.device)
        except UserError as e:           # e.g. pruned between listing and reading: keep the current model
            self.notice = f"could not load {snap.name}: {e}"
            return
        self.snapshot = snap
        self._use(G, "")

    def info(self) -> dict:
        G = self.G
        out = {"source": self.source, "run": self.run_dir is not None, "notice": self.notice,
               "snapshot": self.snapshot.name if self.snapshot else None, "ready": G is not None,
               "sizes": list(SIZES), "views": list(VIEWS), "noise_modes": list(NOISE_MODES),
               "projector": find_projector()[1]}       # '' when projection is available, else why not
        if G is not None:
            out.update(resolution=G.img_resolution, ratio=self.ratio, components=G.K, latents=G.k,
                       z_dim=G.z_dim, classes=G.c_dim, num_ws=G.num_ws, layers=self.layers,
                       colors=hex_colors(G.K))
        return out

    # -- rendering --------------------------------------------------------------------------------

    def _require(self) -> torch.nn.Module:
        if self.G is None:
            raise UserError(self.notice or "no model loaded")
        return self.G

    def _labels(self, class_idx: Optional[int]) -> Optional[torch.Tensor]:
        G = self.G
        if not G.c_dim:
            return None
        if class_idx is None or not 0 <= class_idx < G.c_dim:
            raise UserError(f"this model is conditional: choose a class in 0..{G.c_dim - 1}")
        return torch.nn.functional.one_hot(torch.tensor([class_idx]), G.c_dim).float().to(self.device)

    def _z(self, seed: int, component_seeds: list[int]) -> torch.Tensor:
        """z [1, k, d]: latent i from the draw of component_seeds[i] (default: all from `seed`)."""
        G = self.G
        if component_seeds and len(component_seeds) != G.k:
            raise UserError(f"this model has {G.k} latents, got {len(component_seeds)} component seeds")
        seeds = component_seeds or [seed] * G.k
        unique = sorted(set(seeds))
        draws = dict(zip(unique, z_from_seeds(unique, G.k, G.z_dim)))            # one draw per distinct seed
        return torch.stack([draws[s][i] for i, s in enumerate(seeds)])[None].to(self.device)

    def _ws(self, z: torch.Tensor, c: Optional[torch.Tensor], psi: float) -> torch.Tensor:
        return self.G.map(z, c, truncation_psi=psi)                             # [1, K+1, num_ws, d]

    def render(self, req: RenderRequest) -> dict:
        """The image, attention views of one layer and head, and per-component maps, as data URLs."""
        G = self._require()
        t0 = time.perf_counter()
        c = self._labels(req.class_idx)
        ws = self._ws(self._z(req.seed, req.component_seeds), c, req.psi)
        if req.mix_seed is not None:
            hi, lo = min(req.mix_hi, G.num_ws), min(req.mix_lo, G.num_ws)
            other = self._ws(z_from_seeds([req.mix_seed], G.k, G.z_dim).to(self.device), c, req.psi)
            ws = mixing_ws(mixing_ws(ws, other, "layer", cutoffs=[hi]), ws, "layer", cutoffs=[lo])
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(req.seed)      # noise 'random' is reproducible for a given seed
            img, maps, _ = synthesize(G, ws=ws, noise_mode=req.noise)
        return {**self.views(img, maps, req.layer, req.head, req.alpha, req.size),
                "ms": round((time.perf_counter() - t0) * 1000), "snapshot": self.snapshot.name if self.snapshot else None}

    def views(self, img: torch.Tensor, maps: list[torch.Tensor], layer: int, head: int, alpha: float,
              size: int) -> dict:
        """Data URLs of the image and (with attention) the four attention views and component maps."""
        out: dict[str, Any] = {"image": self._url(to_uint8(img)[0].cpu().numpy(), size)}
        if not maps:
            return out
        if not -len(maps) <= layer < len(maps):
            raise UserError(f"layer must be in 0..{len(maps) - 1}, got {layer}")
        m = maps[layer]                                                      # [1, N, K, r, r]
        if head >= m.shape[1]:
            raise UserError(f"head must be in 0..{m.shape[1] - 1} for layer {layer % len(maps)}, got {head}")
        att = attention_images(img, m, alpha=alpha, head=head)
        out["attention"] = {k: self._url(v[0].cpu().numpy(), size, smooth=k.endswith("blend")) for k, v in att.items()}
        probs = m[:, head]                                                   # [1, K, r, r]
        out["components"] = [self._url(cm.numpy(), 0) for cm in component_maps(probs)]
        out["shares"] = [round(float(s), 4) for s in probs[0].float().mean(dim=(1, 2))]
        out["layer"] = layer % len(maps)
        return out

    def project(self, data: bytes, steps: int) -> dict:
        """Project an uploaded image (projector.py) and show the result with its segmentation."""
        G = self._require()
        target = decode_image(data, G.img_resolution)        # a bad upload is reported before anything else
        project, why = find_projector()
        if project is None:
            raise UserError(why)
        t0 = time.perf_counter()
        img, maps = run_projection(project, G, target, steps)
        return {**self.views(img, maps, -1, 0, 0.3, 0), "target": self._url(target, 0),
                "ms": round((time.perf_counter() - t0) * 1000)}

    def _url(self, img: np.ndarray, size: int, smooth: bool = True) -> str:
        return png_data_url(crop_ratio(img, self.ratio), size, smooth)
