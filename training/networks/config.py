"""Typed network configurations and their JSON (de)serialisation (presets: training/networks/presets.py).

A configuration fully determines a network's architecture; it is saved beside the weights as JSON.
Unknown keys are an error, never silently ignored.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, Optional, TypeVar

from dnnlib.util import UserError

T = TypeVar("T")

NORMS = (None, "layer", "instance", "batch")
INTEGRATIONS = ("add", "mul", "both")
ARCHITECTURES = ("orig", "skip", "resnet")
POS_TYPES = ("sinus", "linear", "trainable", "trainable2d")
MERGE_TYPES = ("sum", "softmax", "max", "leaves")


@dataclass
class AttentionConfig:
    """The bipartite attention layer between image features and latents (spec §5)."""

    num_heads: int = 1                  # Attention heads N; the layer width must be divisible by N.
    norm: Optional[str] = None          # Feature normalisation before integration: layer/instance/batch/None.
    integration: str = "add"            # How attended values modulate the features: add/mul/both.
    kmeans: bool = False                # k-means "duplex" attention: logits against centroids, not keys.
    kmeans_iters: int = 1               # k-means refinement iterations per layer.
    kmeans_weights_per_iter: bool = False  # Architectural: a logit weight per iteration (TF), not one shared (PyTorch port).
    iterative: bool = False             # Carry centroid assignments from layer to layer (experimental).
    attention_dropout: float = 0.12     # Split into two dropouts of half the rate (cells, whole latents).
    ltnt_gate: bool = False             # Sigmoid gate per latent (a latent may send nothing).
    img_gate: bool = False              # Sigmoid gate per image position (a position may receive nothing).
    pos_type: str = "sinus"             # Image grid encoding: sinus/linear/trainable/trainable2d.
    pos_init: str = "uniform"           # Init of trainable encodings: uniform/normal.
    pos_dim: Optional[int] = None       # Grid encoding width; None = latent width d.
    pos_directions_num: int = 2         # Number of spatial directions of the grid encoding.
    use_pos: bool = False               # Add learned latent position embeddings to the keys.
    img2ltnt: bool = False              # True duplex: latents first attend to the image (bottom-up update).

    def validate(self) -> None:
        _check_choice("norm", self.norm, NORMS)
        _check_choice("integration", self.integration, INTEGRATIONS)
        _check_choice("pos_type", self.pos_type, POS_TYPES)
        _check_choice("pos_init", self.pos_init, ("uniform", "normal"))
        if self.num_heads < 1:
            raise UserError(f"num_heads must be >= 1, got {self.num_heads}")
        if self.kmeans_iters < 1:
            raise UserError(f"kmeans_iters must be >= 1, got {self.kmeans_iters}")
        if self.img2ltnt and self.kmeans:
            raise UserError("true duplex attention (img2ltnt) compares positions with the updated latents as keys; "
                            "turn k-means off (--kmeans False) to use it")
        if self.pos_dim is not None and self.pos_dim % (2 * self.pos_directions_num):
            raise UserError(f"--pos-dim {self.pos_dim} must be divisible by 2 x --pos-directions-num "
                            f"({2 * self.pos_directions_num})")
        if not 0 <= self.attention_dropout < 1:
            raise UserError(f"attention_dropout must be in [0, 1), got {self.attention_dropout}")


@dataclass
class MappingConfig:
    """The mapping network z -> w (spec §3)."""

    num_layers: int = 8                 # Depth of each MLP (resnet: num_layers // 2 residual units).
    layer_dim: Optional[int] = None     # Hidden width; None = w_dim.
    lrmul: float = 0.01                 # Learning-rate multiplier of the MLP layers.
    w_avg_beta: Optional[float] = 0.995 # Decay of the tracked average w; None = no tracking (no truncation).
    resnet: bool = False                # Residual MLP units.
    ltnt2ltnt: bool = False             # Self-attention among the local latents before each unit.
    use_pos: bool = False               # Latent position embeddings in that self-attention.
    # The next three are architectural (the official PyTorch port and the TF code differ in them): the
    # first adds a layer with its own weights, the other two are non-linear functions of z that no
    # weight translation can reproduce.
    out_layer: bool = True              # Final FC layer after the MLP (PyTorch port: always; TF: resnet only).
    normalize_global: bool = True       # Pixel-normalise the global latent (PyTorch port; TF: no).
    per_component_norm: bool = False    # Normalise each local latent on its own (TF) instead of jointly (PyTorch port).
    num_heads: int = 1                  # Heads of the latent self-attention.
    attention_dropout: float = 0.12     # Dropout of the latent self-attention.


@dataclass
class SynthesisConfig:
    """The synthesis network w -> image (spec §4)."""

    architecture: str = "skip"          # Generator blocks: orig/skip/resnet.
    channel_base: int = 32768           # Channels at resolution r: min(channel_base // r, channel_max).
    channel_max: int = 512
    style: bool = True                  # Global style modulation (StyleGAN); False = plain convolutions.
    latent_stem: bool = False           # Map the global latent to the 4x4 input (GAN) instead of a constant.
    local_noise: bool = True            # Per-layer noise inputs.
    transformer: bool = False           # Bipartite attention in the synthesis layers (GANformer).
    start_res: int = 0                  # Attention in blocks with start_res <= log2(r) < end_res.
    end_res: int = 8
    conv_last: bool = True              # Architectural: an extra conv (own weights) at the last block (PyTorch
                                        # port: always; TF: only with attention up to the last block).
    img2img_res: int = 0                # SAGAN: image self-attention at 2**img2img_res (0 = off).
    kgan: bool = False                  # k-GAN: each latent renders its own features, merged at merge_res.
    merge_res: int = 5                  # k-GAN merge resolution (log2).
    merge_type: str = "softmax"         # k-GAN merge: sum/softmax/max/leaves.
    tanh: bool = False                  # tanh on the output image.
    attention: AttentionConfig = field(default_factory=AttentionConfig)

    def validate(self) -> None:
        _check_choice("architecture", self.architecture, ARCHITECTURES)
        _check_choice("merge_type", self.merge_type, MERGE_TYPES)
        if not isinstance(self.conv_last, bool):
            raise UserError(f"conv_last must be true or false, got {self.conv_last!r}")
        self.attention.validate()


@dataclass
class GeneratorConfig:
    """The generator: mapping + synthesis. `components_num` local latents plus one global one."""

    img_resolution: int = 256
    img_channels: int = 3
    c_dim: int = 0                      # Label dimension (0 = unconditional).
    z_dim: int = 512                    # Width d of each latent component (z and w).
    components_num: int = 0             # Local latent components K (the global one is extra).
    component_dropout: float = 0.0      # Drop local latents from attention during training.
    mapping: MappingConfig = field(default_factory=MappingConfig)
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)

    @property
    def k(self) -> int:
        """Number of latent rows in z and w: K local components plus the global one."""
        return self.components_num + 1

    def validate(self) -> None:
        for name, value, lo, hi in (("latent size per component", self.z_dim, 1, 1 << 14),
                                    ("components_num", self.components_num, 0, 1024),
                                    ("mapping layers", self.mapping.num_layers, 1, 64),
                                    ("mapping layer_dim", self.mapping.layer_dim or 1, 1, 1 << 14)):
            _check_int(name, value, lo, hi)
        syn = self.synthesis
        check_sizes(self.img_resolution, self.img_channels, self.c_dim, syn.channel_base, syn.channel_max,
                    mapping_params=self.mapping.num_layers * max(self.mapping.layer_dim or 0, self.z_dim) ** 2)
        r = self.img_resolution
        if self.synthesis.transformer and self.components_num < 1:
            raise UserError("the transformer needs --components-num >= 1")
        if self.mapping.ltnt2ltnt and self.components_num < 1:
            raise UserError("--mapping-ltnt2ltnt needs --components-num >= 1")
        syn, log2_res = self.synthesis, r.bit_length() - 1
        if syn.kgan and (syn.transformer or self.components_num < 2):
            raise UserError("k-GAN needs --components-num >= 2 and no --transformer")
        if syn.transformer and not any(syn.start_res <= l < syn.end_res for l in range(2, log2_res + 1)):
            raise UserError(f"--g-start-res {syn.start_res} / --g-end-res {syn.end_res} leave no attention layer "
                            f"at resolution {r} (attention runs where start <= log2(res) < end)")
        if syn.img2img_res and not 2 <= syn.img2img_res <= log2_res:
            raise UserError(f"--g-img2img {syn.img2img_res} is outside the generator's resolutions 4..{r} (log2 2..{log2_res})")
        if syn.transformer and syn.attention.pos_dim is None and self.z_dim % (2 * syn.attention.pos_directions_num):
            raise UserError(f"the grid encoding width (the latent size per component, {self.z_dim}) must be divisible by "
                            f"{2 * syn.attention.pos_directions_num}; set --pos-dim")
        self.synthesis.validate()


@dataclass
class DiscriminatorConfig:
    """The discriminator (spec §6)."""

    img_resolution: int = 256
    img_channels: int = 3
    c_dim: int = 0
    architecture: str = "resnet"        # orig/skip/resnet.
    channel_base: int = 32768
    channel_max: int = 512
    mbstd_group_size: Optional[int] = 4 # Minibatch-stddev group; None = whole minibatch.
    mbstd_num_channels: int = 1         # 0 disables the minibatch-stddev layer.

    def validate(self) -> None:
        _check_choice("architecture", self.architecture, ARCHITECTURES)
        check_sizes(self.img_resolution, self.img_channels, self.c_dim, self.channel_base, self.channel_max)


MAX_RESOLUTION = 1 << 13
MAX_PARAMS = 2_000_000_000          # refuse configs that would allocate more than ~8 GB of float32 weights


def _check_int(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise UserError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")


def check_sizes(resolution: Any, channels: Any, c_dim: Any, base: Any, cmax: Any, mapping_params: int = 0) -> None:
    """Bound a network's size before anything is allocated (configs may come from untrusted files)."""
    _check_int("img_resolution", resolution, 4, MAX_RESOLUTION)
    if resolution & (resolution - 1):
        raise UserError(f"resolution must be a power of two >= 4, got {resolution}")
    _check_int("img_channels", channels, 1, 4)
    _check_int("c_dim", c_dim, 0, 1 << 16)
    _check_int("channel_base", base, 1, 1 << 24)
    _check_int("channel_max", cmax, 1, 1 << 14)
    if channels_at(resolution, base, cmax) < 1:
        raise UserError(f"channel_base {base} leaves no channels at resolution {resolution}")
    params = mapping_params + sum(18 * channels_at(1 << l, base, cmax) ** 2 for l in range(2, resolution.bit_length()))
    if params > MAX_PARAMS:
        raise UserError(f"this configuration would have about {params / 1e9:.1f} billion parameters; refusing to build it")


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise UserError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")


# ---------------------------------------------------------------------------------------------------
# (De)serialisation.

def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(cls: type[T], data: dict, where: str = "") -> T:
    """Build dataclass `cls` from a dict; nested dataclasses recurse; unknown keys are a UserError."""
    if not isinstance(data, dict):
        raise UserError(f"config{where} must be an object, got {type(data).__name__}")
    if cls is GeneratorConfig:
        data = _migrate_generator(data)
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise UserError(f"unknown config key(s) in {cls.__name__}{where}: {', '.join(unknown)}")
    kwargs = {}
    for name, value in data.items():
        sub = _nested_type(known[name])
        kwargs[name] = from_dict(sub, value, f"{where}.{name}") if sub is not None else value
    return cls(**kwargs)


def _migrate_generator(data: dict) -> dict:
    """Generator configs saved before the TF w-slot layout moved to the TF importer and conv_last
    became a bool ("always" / "never" / "transformer": with attention up to the last block)."""
    syn = data.get("synthesis")
    if not isinstance(syn, dict) or not ("tf_w_slots" in syn or isinstance(syn.get("conv_last"), str)):
        return data
    syn = {k: v for k, v in syn.items() if k != "tf_w_slots"}
    rule, log2_res = syn.get("conv_last", True), int(data.get("img_resolution", 256)).bit_length() - 1
    if isinstance(rule, str):
        syn["conv_last"] = rule == "always" or (rule == "transformer" and bool(syn.get("transformer"))
                                                and log2_res <= syn.get("end_res", 8))
    return dict(data, synthesis=syn)


def _nested_type(f: dataclasses.Field) -> Optional[type]:
    for cls in (AttentionConfig, MappingConfig, SynthesisConfig):
        if f.type in (cls, cls.__name__):
            return cls
    return None


def channels_at(res: int, base: int, cmax: int) -> int:
    """Feature channels at resolution `res` (spec §4)."""
    return int(min(base // res, cmax))
