"""Command-line parsing shared by the scripts: one-line errors with a did-you-mean, the seed's spellings.

Imports nothing heavy, so that `--help` and flag errors come back at once.
"""
from __future__ import annotations

import argparse
import difflib
import re
import sys
from typing import NoReturn, Optional, Sequence


def str2bool(v: str) -> bool:
    if v.lower() in ("true", "1", "yes", "y"):
        return True
    if v.lower() in ("false", "0", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (True/False), got {v!r}")


# A boolean flag that also works as a bare switch: `--kmeans`, `--kmeans True`, `--kmeans False`.
BOOL = dict(type=str2bool, nargs="?", const=True, metavar="BOOL")


def dashed(argv: Sequence[str]) -> list[str]:
    """The seed's underscore spellings of flag names (`--mapping_ltnt2ltnt`) as their dashed form."""
    out = []
    for a in argv:
        if a.startswith("--") and "_" in a.partition("=")[0]:
            name, eq, value = a.partition("=")
            a = name.replace("_", "-") + eq + value
        out.append(a)
    return out


# Flags that several scripts share (generate.py, visualizer.py, projector.py), each declared and explained once.
SHARED_FLAGS: dict[str, dict] = {
    "--model": dict(required=True, default=argparse.SUPPRESS,
                    help="the model: our .safetensors checkpoint, a run folder (its latest snapshot; visualizer.py "
                         "follows new ones), an official PyTorch reference folder, an official PyTorch or TF "
                         "network-snapshot-*.pkl, or a released model by name (gdrive:<dataset>-snapshot.pkl)"),
    "--gpus": dict(default="0", help="comma-separated GPU indices (the first is used); the CPU if there is no GPU"),
    "--ratio": dict(type=float, default=1.0, help="crop images to height/width = ratio (CLEVR 0.75, Bedrooms "
                    "188/256, Cityscapes 0.5, FFHQ 1.0)"),
}


def add_shared_flags(parser: argparse.ArgumentParser, *names: str) -> None:
    """Add the named SHARED_FLAGS to a parser."""
    for name in names:
        parser.add_argument(name, **SHARED_FLAGS[name])


class FlagParser(argparse.ArgumentParser):
    """argparse with one-line errors: an unknown flag names the closest known one, not the whole usage."""

    def error(self, message: str) -> NoReturn:
        m = re.match(r"unrecognized arguments: (\S+)", message)
        if m:
            bad = m.group(1).partition("=")[0]
            if bad.startswith("-"):
                close = difflib.get_close_matches(bad, list(self._option_string_actions), n=1, cutoff=0.6)
                message = f"unknown flag {bad}" + (f" (did you mean {close[0]}?)" if close else " (see --help)")
            else:
                message = f"unexpected argument {bad!r} (see --help)"
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)

    def parse_args(self, args: Optional[Sequence[str]] = None, namespace=None):  # type: ignore[override]
        return super().parse_args(dashed(sys.argv[1:] if args is None else args), namespace)
