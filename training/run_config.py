"""The typed run configuration: what one `run_network.py` command asks for (spec §7).

training/options.py builds a RunConfig from the command line, once; everything downstream (train_cli,
eval_cli, vis_cli) reads this object and never sees argparse. Every default lives in these dataclasses
(or, for the networks, in training/networks/config.py); presets (training/networks/presets.py) replace
defaults, explicit flags replace presets. This module imports no torch, so `--help` stays instant.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from dnnlib.util import UserError, check_number
from training.data import SCENES
from training.data.augment_config import config_from as augment_config

DATASET_RATIO = {"clevr": 0.75, "bedrooms": 188 / 256, "cityscapes": 0.5, "ffhq": 1.0}   # image height / width
# Visualisation types in order of work; a bare --vis makes the seed's default set.
VIS_TYPES = ("images", "latents", "maps", "layer_maps", "interpolations", "noise_var", "style_mix")
DEFAULT_VIS_TYPES = ("images", "latents", "maps", "interpolations", "noise_var")
G_LOSSES = ("logistic_ns", "logistic", "hinge", "wgan", "rpgan")
D_LOSSES = ("logistic", "hinge", "wgan", "rpgan")   # rpgan: relativistic pairing, fake i against real i (R3GAN)


@dataclass
class LossConfig:
    g_loss: str = "logistic_ns"         # Generator loss: logistic_ns / logistic / hinge / wgan / rpgan.
    d_loss: str = "logistic"            # Discriminator loss: logistic / hinge / wgan / rpgan.
    r1_gamma: float = 10.0              # R1 weight (gamma / 2 * |grad D(x)|^2 on reals).
    r2_gamma: Optional[float] = 0.0     # R2 weight (the same penalty on fakes); None = equal to r1_gamma.
    style_mixing: float = 0.9           # Probability of mixing two latents at a random layer slot.
    component_mixing: float = 0.0       # Probability of swapping the latent components [cut:] instead.
    pl_weight: float = 0.0              # Path-length regularisation weight (0 = off).
    pl_decay: float = 0.01
    pl_batch_shrink: int = 2

    def r2_weight(self) -> float:
        return self.r1_gamma if self.r2_gamma is None else self.r2_gamma

    def validate(self) -> None:
        check_number("--gamma", self.r1_gamma, 0)
        check_number("--r2-gamma", self.r2_gamma, 0, optional=True)
        check_number("--style-mixing", self.style_mixing, 0, 1)
        check_number("--component-mixing", self.component_mixing, 0, 1)
        check_number("--pl-weight", self.pl_weight, 0)


@dataclass
class TrainOptions:
    run_dir: str = ""                     # Results of this run (chosen by train_cli: new folder or resume).
    data_dir: str = "datasets"
    dataset: str = SCENES
    resolution: int = 256
    mirror: bool = False                  # Horizontal flips (dataset doubled with mirrored copies).
    max_images: Optional[int] = None      # Train on a fixed subset of this many images.
    batch_size: int = 32                  # Global batch (all ranks together).
    batch_gpu: Optional[int] = None       # Per-rank chunk, gradients accumulate over chunks (None: default_batch_gpu).
    total_kimg: float = 25000             # Training length in thousands of real images.
    kimg_per_tick: float = 8              # Progress line every N kimg.
    snapshot_ticks: int = 3               # Snapshots, samples and metrics every N ticks.
    state_minutes: float = 10.0           # Also a snapshot and training state every N minutes (0 = off).
    status_seconds: float = 10.0          # Status line inside a tick at most every N seconds.
    num_threads: int = 0                  # torch CPU threads per process (0 = leave as is).
    follow_load: bool = False             # Re-choose the CPU threads as other work comes and goes.
    g_lr: float = 0.002
    d_lr: float = 0.002
    g_reg_interval: int = 4
    d_reg_interval: int = 16              # R1 (and R2) every N steps (lazy regularisation).
    adam_beta1: float = 0.0
    adam_beta2: float = 0.99
    ema_kimg: float = 10.0                # EMA half-life.
    ema_rampup: Optional[float] = None    # Half-life <= cur_nimg * rampup early on (None = off).
    seed: int = 0
    mixed_precision: bool = True          # bf16 autocast on GPUs that support it.
    bf16_on_cpu: bool = False             # bf16 autocast on CPU too (tests emulate the GPU path with it).
    compile: bool = False                 # torch.compile G and D for the main phases (R1/PL stay eager).
    truncation_psi: float = 0.75          # For sample grids and visualisations only.
    keep_samples: bool = True             # Keep every sample grid (False = overwrite the latest).
    summarize: bool = True                # TensorBoard event files.
    last_snapshots: int = 10
    grid_size: tuple = (3, 2)             # Sample grid columns x rows.
    blending_alpha: float = 0.3           # Image weight where attention maps are blended with images.
    augment: str = "none"                 # Discriminator augmentation: ada / fixed / none (training/data/augment.py).
    augment_p: float = 0.0                # Its probability (ada: the start value).
    ada_target: float = 0.6               # ADA: wanted mean sign of D(reals).
    ada_kimg: float = 500                 # ADA: p may go from 0 to 1 within this many kimg.
    augment_pipe: str = "bgc"             # Which transforms (bgc, bgcfnc, or a list; see training/data/augment.py).
    loss: LossConfig = field(default_factory=LossConfig)

    def validate(self) -> None:
        """Every number, before anything is written (a one-line UserError naming the flag)."""
        for name, value, lo, lo_open in (
                ("--batch-size", self.batch_size, 1, False),
                ("--total-kimg", self.total_kimg, 0, True), ("--kimg-per-tick", self.kimg_per_tick, 0, True),
                ("--snapshot-ticks", self.snapshot_ticks, 1, False), ("--state-minutes", self.state_minutes, 0, False),
                ("--g-lr", self.g_lr, 0, False), ("--d-lr", self.d_lr, 0, False), ("--ema-kimg", self.ema_kimg, 0, False),
                ("--last-snapshots", self.last_snapshots, 0, False), ("--seed", self.seed, 0, False)):
            check_number(name, value, lo, lo_open=lo_open)
        check_number("--batch-gpu", self.batch_gpu, 1, optional=True)       # None: default_batch_gpu
        check_number("--ema-rampup", self.ema_rampup, 0, lo_open=True, optional=True)
        check_number("--train-images-num", self.max_images, 1, optional=True)
        check_number("--truncation-psi", self.truncation_psi)
        check_number("--blending-alpha", self.blending_alpha, 0, 1)
        check_number("--adam-beta1", self.adam_beta1, 0, 1, hi_open=True)
        check_number("--adam-beta2", self.adam_beta2, 0, 1, hi_open=True)
        check_number("--r1-interval", self.d_reg_interval, 1)
        augment_config(self).validate()
        self.loss.validate()


@dataclass
class VisOptions:
    types: tuple = ()                     # Requested visualisations (VIS_TYPES); empty = none.
    num: int = 100                        # Samples (seeds 0..num-1).
    rich_num: int = 5                     # Samples that also get layer maps and interpolations.
    section_size: int = 100               # Latents drawn at once (memory bound).
    batch_size: Optional[int] = None      # Images per forward pass; None = the training --batch-gpu.
    interpolation_density: int = 8        # Frames per interpolation, end points included.

    def validate(self) -> None:
        if self.num < 1 or self.section_size < 1 or (self.batch_size is not None and self.batch_size < 1) \
                or self.rich_num < 0:
            raise UserError("--vis-num, --vis-section-size and --vis-batch-size must be >= 1, --vis-rich-num >= 0")
        if self.interpolation_density < 2:
            raise UserError(f"--interpolation-density must be >= 2, got {self.interpolation_density}")


@dataclass
class RunConfig:
    mode: str = "summary"                 # train / eval / vis / summary (print the networks the flags describe).
    expname: str = "exp"                  # Run folders are <result_dir>/<expname>-NNN.
    dataset: Optional[str] = None         # A folder under data_dir (or "scenes", built in).
    data_dir: str = "datasets"
    result_dir: str = "results"
    gpus: str = "0"                       # Comma-separated GPU indices.
    resolution: Optional[int] = None      # None = 64 for scenes, else 256 (fine-tuning: the model's).
    ratio: Optional[float] = None         # Image height / width; None = per dataset (DATASET_RATIO).
    pretrained_pkl: Optional[str] = None  # Model to fine-tune or evaluate.
    restart: bool = False                 # New run folder instead of resuming the latest.
    num_threads: Optional[int] = None     # torch CPU threads per process; None = the cores free at start.
    metrics: str = "fid"                  # Comma-separated metrics at snapshots and with --eval; none = skip.
    eval_images_num: int = 50000          # Images per metric.
    preset: Optional[str] = None          # A key of training/networks/presets.PRESETS.
    recipe: Optional[str] = None          # A key of training/networks/presets.RECIPES (training choices only).
    model: dict[str, Any] = field(default_factory=dict)   # Model options: the preset's for the dataset, then flags.
    train: TrainOptions = field(default_factory=TrainOptions)
    vis: VisOptions = field(default_factory=VisOptions)

    def validate(self) -> None:
        """All numbers of the command, checked once when it is parsed (train_cli and eval_cli rely on it)."""
        check_number("--resolution", self.resolution, 4, optional=True)
        if self.resolution is not None and self.resolution & (self.resolution - 1):
            raise UserError(f"--resolution must be a power of two, got {self.resolution}")
        check_number("--ratio", self.ratio, 0, 1, lo_open=True, optional=True)
        check_number("--num-threads", self.num_threads, 1, optional=True)
        check_number("--eval-images-num", self.eval_images_num, 2)
        self.train.validate()
        self.vis.validate()

    def image_resolution(self) -> int:
        if self.resolution is not None:
            return self.resolution
        return 64 if self.dataset == SCENES else 256

    def image_ratio(self) -> float:
        if self.ratio is not None:
            return self.ratio
        return DATASET_RATIO.get((self.dataset or "").lower(), 1.0)

    def network_configs(self, resolution: Optional[int] = None, c_dim: int = 0):
        """(GeneratorConfig, DiscriminatorConfig) from the model options; unset ones keep the dataclass defaults."""
        from training.networks.presets import network_configs

        return network_configs(self.model, resolution or self.image_resolution(), c_dim)
