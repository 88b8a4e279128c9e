"""The networks: building blocks (layers, attention), mapping, synthesis, discriminator, their typed configs
and the preset registry. Generator and Discriminator load torch on first use, so that configs and presets
(and with them `--help`) import without it."""
from __future__ import annotations

from typing import Any

__all__ = ["Generator", "Discriminator"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from training.networks import generator
        return getattr(generator, name)
    raise AttributeError(f"module 'training.networks' has no attribute {name!r}")
