"""The seed's run_network.py flags -> typed network configs (spec §7).

Every model flag defaults to None, meaning "take the preset's value": --ganformer-default and
--baseline set presets; an explicit flag always wins.
"""
from __future__ import annotations

import argparse
from typing import Any, Optional

from dnnlib.util import UserError
from training.networks.config import (AttentionConfig, DiscriminatorConfig, GeneratorConfig, MappingConfig, SynthesisConfig,
                     channels_at)

DATASET_GAMMA = {"ffhq": 10, "cityscapes": 20, "clevr": 40, "bedrooms": 100}
DATASET_RATIO = {"clevr": 0.75, "bedrooms": 188 / 256, "cityscapes": 0.5, "ffhq": 1.0}
BASELINES = ("GAN", "StyleGAN2", "kGAN", "SAGAN")


def str2bool(v: str) -> bool:
    if v.lower() in ("true", "1", "yes", "y"):
        return True
    if v.lower() in ("false", "0", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (True/False), got {v!r}")


def add_model_flags(p: argparse.ArgumentParser) -> None:
    """Model flags with the seed's names. Booleans take an optional value: `--kmeans` or `--kmeans False`."""
    b = dict(type=str2bool, nargs="?", const=True, default=None)
    g = p.add_argument_group("model")
    g.add_argument("--ganformer-default", action="store_true", help="the GANformer's default configuration")
    g.add_argument("--baseline", choices=BASELINES, default=None, help="a baseline model instead of the GANformer")
    g.add_argument("--transformer", **b, help="bipartite attention in the generator (GANformer)")
    g.add_argument("--components-num", type=int, default=None, help="number of local latent components K")
    g.add_argument("--latent-size", type=int, default=None, help="total latent size, divided over the components")
    g.add_argument("--num-heads", type=int, default=None, help="attention heads")
    g.add_argument("--normalize", choices=["layer", "instance", "batch"], default=None, help="feature norm in attention")
    g.add_argument("--integration", choices=["add", "mul", "both"], default=None, help="attention integration")
    g.add_argument("--kmeans", **b, help="k-means (centroid) attention")
    g.add_argument("--kmeans-iters", type=int, default=None, help="k-means iterations per layer")
    g.add_argument("--iterative", **b, help="carry k-means assignments across layers")
    g.add_argument("--img2ltnt", **b, help="true duplex: latents attend to the image first (bottom-up)")
    g.add_argument("--use-pos", **b, help="learned latent position embeddings")
    g.add_argument("--mapping-ltnt2ltnt", **b, help="self-attention among latents in the mapping network")
    g.add_argument("--mapping-resnet", **b, help="residual mapping network")
    g.add_argument("--mapping-layersnum", type=int, default=None, help="mapping depth")
    g.add_argument("--mapping-lrmul", type=float, default=None, help="mapping learning-rate multiplier")
    g.add_argument("--style", **b, help="global style modulation (StyleGAN)")
    g.add_argument("--latent-stem", **b, help="map the global latent to the 4x4 input instead of a constant")
    g.add_argument("--local-noise", **b, help="per-layer noise")
    g.add_argument("--g-start-res", type=int, default=None, help="attention from log2 resolution")
    g.add_argument("--g-end-res", type=int, default=None, help="attention up to (excluding) log2 resolution")
    g.add_argument("--g-arch", choices=["orig", "skip", "resnet"], default=None, help="generator architecture")
    g.add_argument("--d-arch", choices=["orig", "skip", "resnet"], default=None, help="discriminator architecture")
    g.add_argument("--tanh", **b, help="tanh on the output image")
    g.add_argument("--ltnt-gate", **b, help="gate attention per latent")
    g.add_argument("--img-gate", **b, help="gate attention per image position")
    g.add_argument("--pos-dim", type=int, default=None, help="grid encoding width (default: latent width)")
    g.add_argument("--pos-type", choices=["sinus", "linear", "trainable", "trainable2d"], default=None)
    g.add_argument("--pos-init", choices=["uniform", "normal"], default=None)
    g.add_argument("--pos-directions-num", type=int, default=None)
    g.add_argument("--attention-dropout", type=float, default=None)
    g.add_argument("--component-dropout", type=float, default=None)
    g.add_argument("--g-img2img", type=int, default=None, help="SAGAN image self-attention at this log2 resolution")
    g.add_argument("--merge-layer", type=int, default=None, help="k-GAN merge log2 resolution")
    g.add_argument("--merge-type", choices=["sum", "softmax", "max", "leaves"], default=None)
    g.add_argument("--channel-base", type=int, default=None, help="channels(r) = min(channel_base // r, channel_max)")
    g.add_argument("--channel-max", type=int, default=None)
    g.add_argument("--mbstd-group-size", type=int, default=None, help="minibatch-stddev group size")


def preset_values(args: argparse.Namespace) -> dict[str, Any]:
    """The flag values that --ganformer-default / --baseline imply for args.dataset (spec §7)."""
    dataset = (getattr(args, "dataset", None) or "").lower()
    if args.ganformer_default and args.baseline:
        raise UserError("--ganformer-default and --baseline are mutually exclusive")
    if args.ganformer_default:
        clevr = dataset == "clevr"
        return dict(transformer=True, components_num=8 if clevr else 16, latent_size=128 if clevr else 512,
                    normalize="layer", integration="mul", kmeans=True, use_pos=True, mapping_ltnt2ltnt=not clevr,
                    style=not clevr, g_arch="resnet", mapping_resnet=True)
    if args.baseline == "GAN":
        return dict(style=False, latent_stem=True)
    if args.baseline == "kGAN":
        return dict(components_num=8, merge_layer=5, merge_type="softmax")
    if args.baseline == "SAGAN":
        return dict(style=False, latent_stem=True, g_img2img=5)
    return {}


def resolve(args: argparse.Namespace, resolution: int, c_dim: int = 0) -> tuple[GeneratorConfig, DiscriminatorConfig]:
    """Build the G and D configs from flags (explicit flag > preset value > default)."""
    pre = preset_values(args)
    v = lambda name, default=None: getattr(args, name) if getattr(args, name, None) is not None else pre.get(name, default)
    transformer = v("transformer", False)
    kgan = args.baseline == "kGAN"
    K = v("components_num", 0 if not (transformer or kgan) else 16)
    if not (transformer or kgan) and K > 0:
        raise UserError("--components-num needs --transformer (or --baseline kGAN)")
    latent = v("latent_size", 512)
    if K > 0 and latent % K:
        raise UserError(f"--latent-size {latent} is not divisible by --components-num {K}")
    z_dim = latent // K if K > 0 else latent
    heads = v("num_heads", 1)
    if heads < 1 or (v("mapping_ltnt2ltnt", False) and z_dim % heads):
        raise UserError(f"--num-heads {heads} must divide the per-component latent size {z_dim}")
    attention = AttentionConfig(
        num_heads=heads, norm=v("normalize"), integration=v("integration", "add"), kmeans=v("kmeans", False),
        kmeans_iters=v("kmeans_iters", 1), iterative=v("iterative", False), img2ltnt=v("img2ltnt", False),
        attention_dropout=v("attention_dropout", 0.12), ltnt_gate=v("ltnt_gate", False), img_gate=v("img_gate", False),
        pos_type=v("pos_type", "sinus"), pos_init=v("pos_init", "uniform"), pos_dim=v("pos_dim"),
        pos_directions_num=v("pos_directions_num", 2), use_pos=v("use_pos", False))
    base, cmax = v("channel_base", 32768), v("channel_max", 512)
    synthesis = SynthesisConfig(
        architecture=v("g_arch", "skip"), channel_base=base, channel_max=cmax, style=v("style", True),
        latent_stem=v("latent_stem", False), local_noise=v("local_noise", True), transformer=transformer,
        start_res=v("g_start_res", 0), end_res=v("g_end_res", 8), img2img_res=v("g_img2img", 0) or 0,
        kgan=kgan, merge_res=v("merge_layer", 5), merge_type=v("merge_type", "softmax"), tanh=v("tanh", False),
        attention=attention)
    mapping = MappingConfig(num_layers=v("mapping_layersnum", 8), lrmul=v("mapping_lrmul", 0.01),
                            resnet=v("mapping_resnet", False), ltnt2ltnt=v("mapping_ltnt2ltnt", False),
                            use_pos=v("use_pos", False), num_heads=heads,
                            attention_dropout=v("attention_dropout", 0.12))
    G = GeneratorConfig(img_resolution=resolution, c_dim=c_dim, z_dim=z_dim, components_num=K,
                        component_dropout=v("component_dropout", 0.0), mapping=mapping, synthesis=synthesis)
    D = DiscriminatorConfig(img_resolution=resolution, c_dim=c_dim, architecture=v("d_arch", "resnet"),
                            channel_base=base, channel_max=cmax, mbstd_group_size=v("mbstd_group_size", 4))
    G.validate(), D.validate()
    if transformer:
        for log2 in range(max(2, synthesis.start_res), min(synthesis.end_res, resolution.bit_length() - 1) + 1):
            if log2 < synthesis.end_res and channels_at(2 ** log2, base, cmax) % heads:
                raise UserError(f"--num-heads {heads} does not divide the {channels_at(2 ** log2, base, cmax)} "
                                f"channels at {2 ** log2}x{2 ** log2}")
    return G, D


def dataset_gamma(args: argparse.Namespace) -> float:
    """R1 weight: explicit --gamma, else the per-dataset value under --ganformer-default, else 10."""
    if getattr(args, "gamma", None) is not None:
        return args.gamma
    if args.ganformer_default:
        return DATASET_GAMMA.get((args.dataset or "").lower(), 10)
    return 10


def dataset_ratio(args: argparse.Namespace) -> float:
    if getattr(args, "ratio", None) is not None:
        return args.ratio
    return DATASET_RATIO.get((getattr(args, "dataset", None) or "").lower(), 1.0)


def mirror_default(args: argparse.Namespace) -> Optional[bool]:
    if getattr(args, "mirror_augment", None) is not None:
        return args.mirror_augment
    return bool(args.ganformer_default and (args.dataset or "").lower() in ("cityscapes", "ffhq"))
