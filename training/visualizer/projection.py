"""Uploaded images: decoding, and projection into the generator through projector.py when it is present.

projector.py (the top-level script) provides `project(G, target, num_steps=...)`; the visualiser only
calls it, so projection has one implementation. Without it the page says so instead of failing.
"""
from __future__ import annotations

import importlib
import inspect
import io
from typing import Any, Callable, Optional

import numpy as np
import torch

from dnnlib.util import UserError

MAX_UPLOAD_BYTES = 32 << 20
NOT_AVAILABLE = "projection is not available: this checkout has no projector.py (it provides project(G, image, num_steps=...))"


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
        return None, "projection is not available: projector.py has no project(G, image, num_steps=...) function"
    return fn, ""


def run_projection(project: Callable[..., Any], G: torch.nn.Module, target: np.ndarray, steps: int
                   ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Project uint8 [R, R, 3] and return (image [1, C, R, R] in [-1, 1], attention maps [1, 1, K, r, r] or []).

    projector.project(G, target [C, R, R] in [-1, 1], num_steps=...) returns a Projection with the
    reconstruction `image` [C, R, R] and the last attention layer's `segmentation` [K, r, r].
    """
    device = next(G.parameters()).device
    x = torch.from_numpy(target).permute(2, 0, 1).float().to(device) / 127.5 - 1
    accepted = inspect.signature(project).parameters
    options = {k: v for k, v in (("progress", False), ("z_fit_steps", 0)) if k in accepted}   # no z needed here
    steps_name = "num_steps" if "num_steps" in accepted else "steps"
    result = project(G, x, **{steps_name: steps}, **options)
    image, seg = getattr(result, "image", None), getattr(result, "segmentation", None)
    if not isinstance(image, torch.Tensor) or tuple(image.shape) != tuple(x.shape):
        raise UserError(f"projector.project returned no reconstruction image of shape {list(x.shape)}")
    return image[None].float(), ([] if seg is None else [seg[None, None].float()])
