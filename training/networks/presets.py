"""The one preset registry: the GANformer and its baselines as values of the seed's options (spec §7).

A preset is a dict of option values, option names being the seed's flag names with underscores
(`components_num` for --components-num). Its keys are the command line's choices: `--ganformer-default`
selects "GANformer", `--baseline NAME` selects NAME. An explicit flag always wins over the preset; an
option neither sets keeps its dataclass default (training/networks/config.py). Some presets are tuned per
dataset as in the paper (DATASET_PRESETS), including training options such as `gamma`.

`network_configs` turns option values into the typed G and D configs; the CLI, the tests and the README
all build networks through it.
"""
from __future__ import annotations

from typing import Any, Optional

from dnnlib.util import UserError
from training.networks.config import (DiscriminatorConfig, GeneratorConfig, channels_at)

PRESETS: dict[str, dict[str, Any]] = {
    # Generative Adversarial Transformers: K local latents + a global one, k-means duplex attention.
    "GANformer": dict(transformer=True, components_num=16, latent_size=512, normalize="layer", integration="mul",
                      kmeans=True, use_pos=True, mapping_ltnt2ltnt=True, mapping_resnet=True, g_arch="resnet"),
    "StyleGAN2": {},                                       # the dataclass defaults are StyleGAN2
    "GAN": dict(style=False, latent_stem=True),             # no style modulation: z enters at the 4x4 stem
    "kGAN": dict(kgan=True, components_num=8, merge_layer=5, merge_type="softmax"),
    "SAGAN": dict(style=False, latent_stem=True, g_img2img=5),   # image self-attention at 32x32
}
BASELINES = tuple(name for name in PRESETS if name != "GANformer")

# The paper's per-dataset settings of a preset (R1 weight, flips, CLEVR's smaller latents).
DATASET_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "GANformer": {
        "ffhq": dict(gamma=10, mirror_augment=True),
        "cityscapes": dict(gamma=20, mirror_augment=True),
        "clevr": dict(gamma=40, components_num=8, latent_size=128, mapping_ltnt2ltnt=False, style=False),
        "bedrooms": dict(gamma=100),
    },
}

# Training recipes (`--recipe NAME`): values of training options only (loss, regularisation, optimiser,
# EMA), never of MODEL_OPTIONS, so a recipe never changes a network. They apply over the preset (and its
# per-dataset settings), under explicit flags. "faithful" is the seed's training, i.e. no change.
RECIPES: dict[str, dict[str, Any]] = {
    "faithful": {},
    # R3GAN's loss and regularisation (relativistic pairing; R1 and R2 of equal weight, lazily) with the
    # StyleGAN2-ADA EMA ramp-up. The R1 weight stays the preset's (or --gamma): it is per dataset.
    "modern": dict(g_loss="rpgan", d_loss="rpgan", r2_gamma=None, ema_rampup=0.05),
}


def recipe_values(recipe: Optional[str]) -> dict[str, Any]:
    """The training option values of `recipe` (None = none)."""
    if recipe is None:
        return {}
    if recipe not in RECIPES:
        raise UserError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    return dict(RECIPES[recipe])


# Model options and the config fields each one sets ("G." / "D." + dotted path).
MODEL_OPTIONS: dict[str, tuple[str, ...]] = {
    "transformer": ("G.synthesis.transformer",),
    "kgan": ("G.synthesis.kgan",),
    "num_heads": ("G.synthesis.attention.num_heads", "G.mapping.num_heads"),
    "normalize": ("G.synthesis.attention.norm",),
    "integration": ("G.synthesis.attention.integration",),
    "kmeans": ("G.synthesis.attention.kmeans",),
    "kmeans_iters": ("G.synthesis.attention.kmeans_iters",),
    "iterative": ("G.synthesis.attention.iterative",),
    "img2ltnt": ("G.synthesis.attention.img2ltnt",),
    "use_pos": ("G.synthesis.attention.use_pos", "G.mapping.use_pos"),
    "attention_dropout": ("G.synthesis.attention.attention_dropout", "G.mapping.attention_dropout"),
    "ltnt_gate": ("G.synthesis.attention.ltnt_gate",),
    "img_gate": ("G.synthesis.attention.img_gate",),
    "pos_dim": ("G.synthesis.attention.pos_dim",),
    "pos_type": ("G.synthesis.attention.pos_type",),
    "pos_init": ("G.synthesis.attention.pos_init",),
    "pos_directions_num": ("G.synthesis.attention.pos_directions_num",),
    "mapping_ltnt2ltnt": ("G.mapping.ltnt2ltnt",),
    "mapping_resnet": ("G.mapping.resnet",),
    "mapping_layersnum": ("G.mapping.num_layers",),
    "mapping_lrmul": ("G.mapping.lrmul",),
    "style": ("G.synthesis.style",),
    "latent_stem": ("G.synthesis.latent_stem",),
    "local_noise": ("G.synthesis.local_noise",),
    "g_start_res": ("G.synthesis.start_res",),
    "g_end_res": ("G.synthesis.end_res",),
    "g_arch": ("G.synthesis.architecture",),
    "tanh": ("G.synthesis.tanh",),
    "g_img2img": ("G.synthesis.img2img_res",),
    "merge_layer": ("G.synthesis.merge_res",),
    "merge_type": ("G.synthesis.merge_type",),
    "component_dropout": ("G.component_dropout",),
    "channel_base": ("G.synthesis.channel_base", "D.channel_base"),
    "channel_max": ("G.synthesis.channel_max", "D.channel_max"),
    "d_arch": ("D.architecture",),
    "mbstd_group_size": ("D.mbstd_group_size",),
    # components_num and latent_size set G.components_num and G.z_dim together (see network_configs).
    "components_num": (),
    "latent_size": (),
}
DEFAULT_COMPONENTS = 16     # K when --transformer / k-GAN is on and neither preset nor flag gives one
DEFAULT_LATENT_SIZE = GeneratorConfig().z_dim   # total latent size, divided over the K components


def field_default(path: str) -> Any:
    """The dataclass default of a config field path such as 'G.synthesis.attention.kmeans'."""
    net, *parts = path.split(".")
    obj: Any = GeneratorConfig() if net == "G" else DiscriminatorConfig()
    for p in parts:
        obj = getattr(obj, p)
    return obj


def preset_values(preset: Optional[str], dataset: Optional[str] = None) -> dict[str, Any]:
    """The option values of `preset` (None = no preset), with its per-dataset settings for `dataset`."""
    if preset is None:
        return {}
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    per_dataset = DATASET_PRESETS.get(preset, {}).get((dataset or "").lower(), {})
    return {**PRESETS[preset], **per_dataset}


def network_configs(options: dict[str, Any], resolution: int,
                    c_dim: int = 0) -> tuple[GeneratorConfig, DiscriminatorConfig]:
    """G and D configs from model option values (a preset's, overridden by flags); unset options keep the
    dataclass defaults. Unknown options and inconsistent combinations are a UserError."""
    unknown = sorted(set(options) - set(MODEL_OPTIONS))
    if unknown:
        raise UserError(f"unknown model option(s): {', '.join(unknown)}")
    G, D = GeneratorConfig(img_resolution=resolution, c_dim=c_dim), DiscriminatorConfig(img_resolution=resolution,
                                                                                          c_dim=c_dim)
    for name, value in options.items():
        for path in MODEL_OPTIONS[name]:
            net, *parents, leaf = path.split(".")
            obj: Any = G if net == "G" else D
            for p in parents:
                obj = getattr(obj, p)
            setattr(obj, leaf, value)
    syn = G.synthesis
    K = options.get("components_num")
    if K is None:
        K = DEFAULT_COMPONENTS if (syn.transformer or syn.kgan) else 0
    if K > 0 and not (syn.transformer or syn.kgan):
        raise UserError("--components-num needs --transformer (or --baseline kGAN)")
    latent = options.get("latent_size")
    latent = DEFAULT_LATENT_SIZE if latent is None else latent
    if K > 0 and latent % K:
        raise UserError(f"--latent-size {latent} is not divisible by --components-num {K}")
    G.components_num, G.z_dim = K, latent // max(K, 1)
    heads = syn.attention.num_heads
    if heads < 1 or (G.mapping.ltnt2ltnt and G.z_dim % heads):
        raise UserError(f"--num-heads {heads} must divide the per-component latent size {G.z_dim}")
    G.validate(), D.validate()
    _check_heads(G)
    return G, D


def _check_heads(G: GeneratorConfig) -> None:
    """Every attention layer's channel count must split over the heads."""
    syn, heads = G.synthesis, G.synthesis.attention.num_heads
    if not syn.transformer:
        return
    for log2 in range(max(2, syn.start_res), min(syn.end_res, G.img_resolution.bit_length())):
        ch = channels_at(2 ** log2, syn.channel_base, syn.channel_max)
        if ch % heads:
            raise UserError(f"--num-heads {heads} does not divide the {ch} channels at {2 ** log2}x{2 ** log2}")


def build(preset: Optional[str], resolution: int, dataset: Optional[str] = None, c_dim: int = 0,
          **options: Any) -> tuple[GeneratorConfig, DiscriminatorConfig]:
    """The configs `run_network.py --ganformer-default/--baseline <preset> --dataset <dataset>` builds,
    with `options` standing for explicit flags (e.g. components_num=4, channel_base=256)."""
    values = {k: v for k, v in preset_values(preset, dataset).items() if k in MODEL_OPTIONS}
    return network_configs({**values, **options}, resolution, c_dim)
