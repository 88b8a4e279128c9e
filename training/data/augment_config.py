"""The options of discriminator augmentation (training/data/augment.py) and their validation.

Free of torch, so that training/run_config.py can check the flags when the command is parsed, before
any dataset or network work.
"""
from __future__ import annotations

from dataclasses import dataclass

from dnnlib.util import UserError, check_number

MODES = ("ada", "fixed", "none")
GROUPS = {"blit": ("xflip", "rotate90", "xint"), "geom": ("scale", "rotate", "aniso", "xfrac"),
          "color": ("brightness", "contrast", "lumaflip", "hue", "saturation"), "filter": ("filter",),
          "noise": ("noise",), "cutout": ("cutout",)}
TRANSFORMS = tuple(t for ts in GROUPS.values() for t in ts)
PIPES = {"bg": "blit,geom", "bgc": "blit,geom,color", "bgcf": "blit,geom,color,filter",
         "bgcfn": "blit,geom,color,filter,noise", "bgcfnc": "blit,geom,color,filter,noise,cutout"}


def parse_pipe(pipe: str) -> frozenset[str]:
    """The transforms of a pipe: a PIPES preset, or a comma-separated list of groups and transform names."""
    names = set()
    for part in PIPES.get(pipe, pipe).split(","):
        part = part.strip()
        if part not in GROUPS and part not in TRANSFORMS:
            raise UserError(f"--augment-pipe: unknown part {part!r}; use a preset ({', '.join(PIPES)}) or a list "
                            f"of groups ({', '.join(GROUPS)}) and transforms ({', '.join(TRANSFORMS)})")
        names.update(GROUPS.get(part, (part,)))
    return frozenset(names)


@dataclass
class AugmentConfig:
    mode: str = "none"          # 'ada' (adaptive p), 'fixed' (p = augment_p), 'none'.
    p: float = 0.0              # The probability of each transform (the start value for 'ada').
    target: float = 0.6         # ADA: wanted E[sign(D(real))].
    kimg: float = 500           # ADA: p can move from 0 to 1 within this many thousand images.
    interval: int = 4           # ADA: adjust p every this many steps.
    pipe: str = "bgc"           # Which transforms: a PIPES preset or a list of groups/transforms.

    def validate(self) -> None:
        """A one-line UserError naming the flag; run_config.TrainOptions.validate() calls it at parse time."""
        if self.mode not in MODES:
            raise UserError(f"--augment must be one of {', '.join(MODES)}, got {self.mode!r}")
        parse_pipe(self.pipe)
        check_number("--augment-p", self.p, 0, 1)
        check_number("--ada-target", self.target, 0, 1, lo_open=True, hi_open=True)
        check_number("--ada-kimg", self.kimg, 0, lo_open=True)
        if isinstance(self.interval, bool) or not isinstance(self.interval, int) or self.interval < 1:
            raise UserError(f"ADA interval must be an integer >= 1, got {self.interval!r}")


def config_from(opts) -> AugmentConfig:
    """The config from anything with the flags' attribute names (augment, augment_p, ada_target, ada_kimg,
    augment_pipe): parsed arguments or the training options."""
    return AugmentConfig(mode=opts.augment, p=opts.augment_p, target=opts.ada_target, kimg=opts.ada_kimg,
                         pipe=opts.augment_pipe)
