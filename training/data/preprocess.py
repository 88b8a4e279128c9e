"""Preprocessing of custom images, as the seed's prepare_data.py does it.

An image of any size is turned into a square uint8 array, layout CHW:
1. decode (any Pillow format), apply its EXIF orientation;
2. convert its mode: grey modes (1, L, LA, I, I;16, F) become one channel, everything else
   (RGB, RGBA, P, CMYK, YCbCr, ...) three; alpha is composited over black (the padding colour),
   16-bit and float images are rescaled to 8 bits;
3. crop the largest centred rectangle of aspect `ratio` = height / width;
4. pad it to a centred black square;
5. resize it to a power of two (by default the one nearest to its side) with a Lanczos filter.

`PREPROCESSING_VERSION` (in dataset_writer) changes whenever this output changes.
"""
from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import dataclass

import numpy as np
import PIL.Image
import PIL.ImageOps

GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


class ImageSkipped(Exception):
    """One input item cannot be used; `reason` is a short key for the summary ("unreadable", ...)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def open_image(data: bytes | str | os.PathLike) -> PIL.Image.Image:
    """Decode an encoded image (bytes or a file path), fully, with its EXIF orientation applied."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        if len(data) == 0:
            raise ImageSkipped("empty")
        source = io.BytesIO(data)
    else:
        if os.path.getsize(data) == 0:
            raise ImageSkipped("empty")
        source = data
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")         # EXIF and PNG chunk warnings of damaged files
            img = PIL.Image.open(source)
            img.load()                              # decode now: truncated files fail here
            return PIL.ImageOps.exif_transpose(img)
    except PIL.Image.DecompressionBombError:
        raise ImageSkipped("too large") from None
    except PIL.UnidentifiedImageError:
        raise ImageSkipped("not an image") from None
    except (OSError, ValueError, SyntaxError, EOFError):
        raise ImageSkipped("unreadable") from None


def _to_uint8(a: np.ndarray, sixteen_bit: bool = False) -> np.ndarray:
    """Rescale a pixel array to uint8: 16-bit -> 8-bit, [0, 1] floats -> [0, 255], bool -> {0, 255}.

    uint16/int16 arrays (and `sixteen_bit`) use the 16-bit range; wider integers only when they
    exceed 255.
    """
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.integer):
        if sixteen_bit or a.dtype.itemsize == 2 or (a.size and a.max() > 255):
            a = a.astype(np.float64) / 257.0
        return np.clip(np.rint(a), 0, 255).astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        a = np.nan_to_num(a.astype(np.float64))
        if a.size and a.max() <= 1.0:
            a = a * 255.0
        return np.clip(np.rint(a), 0, 255).astype(np.uint8)
    raise ImageSkipped("unsupported pixel type")


def array_to_image(a: np.ndarray, sixteen_bit: bool = False) -> PIL.Image.Image:
    """A decoded pixel array, [H, W] or [H, W, C] with C in 1..4, as a Pillow image."""
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (2, 3, 4)) or min(a.shape[:2]) < 1:
        raise ImageSkipped("bad array shape")
    mode = "L" if a.ndim == 2 else {2: "LA", 3: "RGB", 4: "RGBA"}[a.shape[2]]
    return PIL.Image.fromarray(np.ascontiguousarray(_to_uint8(a, sixteen_bit)), mode)


def natural_channels(img: PIL.Image.Image) -> int:
    """1 for greyscale images, 3 for colour ones."""
    if img.mode == "P":
        pal = np.asarray(img.getpalette() or [0, 0, 0], np.uint8).reshape(-1, 3)
        return 1 if np.all(pal == pal[:, :1]) else 3
    return 1 if img.mode in GREY_MODES else 3


def to_mode(img: PIL.Image.Image, channels: int) -> PIL.Image.Image:
    """Convert to "L" (channels=1) or "RGB" (channels=3); alpha is composited over black."""
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        img = array_to_image(np.asarray(img), sixteen_bit=img.mode != "F")
    elif img.mode == "1":
        img = img.convert("L")
    elif img.mode in ("La", "RGBa"):
        img = img.convert(img.mode.upper())
    if img.mode in ("LA", "RGBA"):
        a = np.asarray(img).astype(np.float32)
        rgb = a[..., :-1] * (a[..., -1:] / 255.0)
        img = PIL.Image.fromarray(np.rint(rgb).astype(np.uint8).squeeze(-1) if img.mode == "LA"
                                  else np.rint(rgb).astype(np.uint8), "L" if img.mode == "LA" else "RGB")
    target = "L" if channels == 1 else "RGB"
    return img if img.mode == target else img.convert(target)


def crop_max_rectangle(img: PIL.Image.Image, ratio: float | None) -> PIL.Image.Image:
    """The largest centred rectangle of height/width `ratio` (None = keep the image)."""
    if ratio is None:
        return img
    w, h = img.size
    s = min(w, h / ratio)
    cw, ch = s, ratio * s
    box = ((w - cw) // 2, (h - ch) // 2, (w + cw) // 2, (h + ch) // 2)
    box = tuple(round(v) for v in box)
    if box[2] <= box[0] or box[3] <= box[1]:
        raise ImageSkipped("too small")
    return img if box == (0, 0, w, h) else img.crop(box)


def pad_min_square(img: PIL.Image.Image) -> PIL.Image.Image:
    """Pad to the smallest containing square with black, the image centred."""
    w, h = img.size
    if w == h:
        return img
    s = max(w, h)
    out = PIL.Image.new(img.mode, (s, s), 0)
    out.paste(img, (max(0, (h - w) // 2), max(0, (w - h) // 2)))
    return out


def nearest_power_of_two(size: int) -> int:
    return 2 ** max(2, round(math.log2(max(size, 1))))


def square_size(width: int, height: int, ratio: float | None) -> int:
    """Side of the padded square that an image of this size becomes (before resizing)."""
    if ratio is None:
        return max(width, height)
    s = min(width, height / ratio)
    return round(max(s, ratio * s))


@dataclass(frozen=True)
class Preprocessor:
    """Turns one input item (see `image()`) into uint8 [C, R, R]."""
    ratio: float | None         # crop to this height/width first; None = no crop
    resolution: int             # output side, a power of two
    channels: int               # 1 or 3

    def image(self, item) -> PIL.Image.Image:
        """Decode an item: encoded bytes, a file path, a pixel array [H, W(, C)], or an object
        with a `decode()` method returning such an array (records parsed in worker processes)."""
        if item is None:
            raise ImageSkipped("corrupt record")
        if hasattr(item, "decode") and not isinstance(item, (bytes, bytearray, str)):
            try:
                item = item.decode()
            except ValueError:
                raise ImageSkipped("corrupt record") from None
        return array_to_image(item) if isinstance(item, np.ndarray) else open_image(item)

    def __call__(self, item) -> np.ndarray:
        img = to_mode(self.image(item), self.channels)
        img = pad_min_square(crop_max_rectangle(img, self.ratio))
        if img.size != (self.resolution, self.resolution):
            img = img.resize((self.resolution, self.resolution), PIL.Image.Resampling.LANCZOS)
        a = np.asarray(img, dtype=np.uint8)
        return np.ascontiguousarray(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))   # HWC -> CHW
