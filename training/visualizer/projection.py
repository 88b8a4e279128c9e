"""Uploaded images: decoding, and projection into the generator through projector.py when it is present.

projector.py (the top-level script) provides `project(G, target, steps=...)`; the visualiser only calls
it, so projection has one implementation. Without it the page says so instead of failing.
"""
from __future__ import annotations

import importlib
import io
from typing import Any, Callable, Optional

import numpy as np
import torch

from dnnlib.util import UserError

MAX_UPLOAD_BYTES = 32 << 20
NOT_AVAILABLE = "projection is not available: this checkout has no projector.py (it provides project(G, image, steps=...))"


def decode_image(data: bytes, resolution: int) -> np.ndarray:
    """Uploaded bytes -> uint8 [R, R, 3]: the largest centred square, resized to the model's resolution."""
    import PIL.Image

    if not data:
        raise UserError("the upload is empty: choose an image file")
    if len(data) > MAX_UPLOAD_BYTES:
        raise UserError(f"the upload is larger than {MAX_UPLOAD_BYTES >> 20} MB")
    try:
        with PIL.Image.open(io.BytesIO(data)) as im:
            im.load()
            rgb = im.convert("RGB")
    except (PIL.UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise UserError(f"the upload is not an image ({type(e).__name__}): choose a PNG or JPEG file") from None
    side = min(rgb.size)
    left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
    square = rgb.crop((left, top, left + side, top + side)).resize((resolution, resolution), PIL.Image.LANCZOS)
    return np.asarray(square, dtype=np.uint8)


def find_projector() -> tuple[Optional[Callable[..., Any]], str]:
    """(project function, '') when projector.py provides one, else (None, why not)."""
    try:
        module = importlib.import_module("projector")
    except ModuleNotFoundError as e:
        if e.name == "projector":
            return None, NOT_AVAILABLE
        return None, f"projection is not available: projector.py needs the package {e.name}"
    fn = getattr(module, "project", None)
    if not callable(fn):
        return None, "projection is not available: projector.py has no project(G, image, steps=...) function"
    return fn, ""


def final_ws(result: Any, G: torch.nn.Module) -> torch.Tensor:
    """The projected ws [1, K+1, num_ws, d] from what project() returns (ws, a ws history, or a dict/tuple)."""
    if isinstance(result, dict):
        result = result.get("ws", result.get("w"))
    elif isinstance(result, (tuple, list)):
        result = result[0]
    if not isinstance(result, torch.Tensor):
        raise UserError(f"projector.project returned {type(result).__name__}, not a ws tensor")
    shape = (G.k, G.num_ws, G.w_dim)
    if result.ndim == 3 and tuple(result.shape) == shape:
        result = result[None]
    if result.ndim != 4 or tuple(result.shape[1:]) != shape:
        raise UserError(f"projector.project returned shape {list(result.shape)}, expected [N, {', '.join(map(str, shape))}]")
    return result[-1:].float()          # a history of steps ends with the final ws
