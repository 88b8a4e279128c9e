"""Loading a translated state dict into one of our networks: every tensor matched exactly once."""
from __future__ import annotations

from typing import Mapping

import torch

from dnnlib.util import UserError


def load_exact(net: torch.nn.Module, sd: Mapping[str, torch.Tensor], what: str) -> None:
    """Copy `sd` (already in our names and layouts) into `net`; a missing, extra or misshapen tensor
    is a one-line UserError naming the first few."""
    own = net.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        raise UserError(f"{what}: state dict does not fit the configuration "
                        f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                        f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''})")
    for name, value in sd.items():
        if tuple(own[name].shape) != tuple(value.shape):
            raise UserError(f"{what}: {name} has shape {list(value.shape)}, expected {list(own[name].shape)}")
    net.load_state_dict(dict(sd))
