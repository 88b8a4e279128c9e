"""The run_network.py command line (the seed's flags) -> one typed RunConfig, built here and only here.

Every flag defaults to None ("not given"): a given flag beats the preset (--ganformer-default,
--baseline), the preset beats the dataclass default, and `--help` prints that dataclass default, so each
default is written once. Imports no torch: `--help` and flag errors are instant.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Optional, Sequence

from dnnlib.cli import BOOL, FlagParser
from dnnlib.util import UserError
from training.networks.config import ARCHITECTURES, INTEGRATIONS, MERGE_TYPES, POS_TYPES
from training.networks.presets import (BASELINES, MODEL_OPTIONS, RECIPES, field_default, preset_values,
                                      recipe_values)
from training.run_config import (D_LOSSES, DEFAULT_VIS_TYPES, G_LOSSES, VIS_TYPES, LossConfig, RunConfig,
                                 TrainOptions, VisOptions)
_DATACLASSES = {"run": RunConfig, "train": TrainOptions, "loss": LossConfig, "vis": VisOptions}
_NO_DEFAULT = object()

# (group, flag(s), where its value goes, argparse keywords, help). Groups follow the seed README's
# "Command-line Options"; targets: run./train./loss./vis. fields, model. options, or None (handled below).
FLAGS: list[tuple[str, Any, Optional[str], dict, str]] = [
    ("mode", "--train", None, dict(action="store_true"), "train a model (resumes the latest run of --expname)"),
    ("mode", "--eval", None, dict(action="store_true"), "evaluate the latest snapshot of --expname, or --pretrained-pkl"),
    ("mode", "--vis", None, dict(action="store_true"), "visualisations only (the --vis-* options; a default set if none)"),
    ("training", "--expname", "run.expname", {}, "run folder name: <result-dir>/<expname>-NNN"),
    ("training", "--dataset", "run.dataset", {}, "dataset name: a folder under --data-dir, or scenes (built in)"),
    ("training", "--data-dir", "run.data_dir", {}, "datasets root"),
    ("training", "--result-dir", "run.result_dir", {}, "results root"),
    ("training", "--gpus", "run.gpus", {}, "comma-separated GPU indices (one process each)"),
    ("training", "--pretrained-pkl", "run.pretrained_pkl", {}, "model to start from or evaluate: ours, official "
     "PyTorch or TF, or gdrive:<dataset>-snapshot.pkl"),
    ("training", "--restart", "run.restart", dict(action="store_true"), "start a new run folder instead of resuming"),
    ("training", "--resolution", "run.resolution", dict(type=int), "image resolution (64 for scenes, else 256)"),
    ("training", "--ratio", "run.ratio", dict(type=float), "image height/width (per dataset: clevr 0.75, "
     "bedrooms 188/256, cityscapes 0.5, else 1)"),
    ("training", "--gamma", "loss.r1_gamma", dict(type=float), "R1 regularisation weight; explore it on new datasets"),
    ("training", "--truncation-psi", "train.truncation_psi", dict(type=float),
     "image quality/diversity trade-off for samples and visualisations (1 = no truncation)"),
    ("training", "--eval-images-num", "run.eval_images_num", dict(type=int),
     "images per metric; lower it to expedite training"),
    ("training", "--metrics", "run.metrics", {}, "comma-separated metrics at snapshots and with --eval "
     "(fid, kid, pr, is, ppl_wend, ...; none = skip)"),
    ("training", "--keep-samples", "train.keep_samples", BOOL, "keep every sample grid (False: the latest only)"),
    ("training", "--summarize", "train.summarize", BOOL, "write TensorBoard event files"),
    ("training (others)", "--batch-size", "train.batch_size", dict(type=int), "global batch size"),
    ("training (others)", ("--batch-gpu", "--minibatch-size"), "train.batch_gpu", dict(type=int),
     "images per GPU per forward pass (gradients accumulate up to --batch-size); lower it if memory runs out "
     "(default: the largest sensible for the resolution: 32 at 256x256 on a GPU with >= 60 GB, 16 below; "
     "the whole batch on CPU)"),
    ("training (others)", "--total-kimg", "train.total_kimg", dict(type=float), "training length in thousands of real images"),
    ("training (others)", "--kimg-per-tick", "train.kimg_per_tick", dict(type=float), "progress line every N kimg"),
    ("training (others)", "--snapshot-ticks", "train.snapshot_ticks", dict(type=int),
     "snapshots, samples and metrics every N ticks"),
    ("training (others)", "--state-minutes", "train.state_minutes", dict(type=float),
     "also a training state (to resume from) every N minutes, inside ticks too (0 = off)"),
    ("training (others)", "--last-snapshots", "train.last_snapshots", dict(type=int), "keep the N newest --snapshot-ticks "
     "snapshots, and a --state-minutes save only until a newer save exists (0 = keep every save)"),
    ("training (others)", "--g-lr", "train.g_lr", dict(type=float), "generator learning rate"),
    ("training (others)", "--d-lr", "train.d_lr", dict(type=float), "discriminator learning rate"),
    ("training (others)", "--g-loss", "loss.g_loss", dict(choices=G_LOSSES), "generator loss"),
    ("training (others)", "--d-loss", "loss.d_loss", dict(choices=D_LOSSES), "discriminator loss"),
    ("training (others)", "--recipe", "run.recipe", dict(choices=list(RECIPES)),
     "training recipe: faithful (the seed's) or modern (RpGAN loss, R1 + R2, EMA ramp-up); never changes "
     "the networks; explicit flags override its choices"),
    ("training (others)", "--r2-gamma", "loss.r2_gamma", dict(type=float),
     "R2 weight: the R1 penalty on fakes, lazily with R1 (the modern recipe: equal to --gamma)"),
    ("training (others)", "--r1-interval", "train.d_reg_interval", dict(type=int), "R1 (and R2) every N steps"),
    ("training (others)", "--adam-beta1", "train.adam_beta1", dict(type=float), "Adam beta1 of both networks"),
    ("training (others)", "--adam-beta2", "train.adam_beta2", dict(type=float), "Adam beta2 of both networks"),
    ("training (others)", "--pl-weight", "loss.pl_weight", dict(type=float), "path-length regularisation weight"),
    ("training (others)", "--style-mixing", "loss.style_mixing", dict(type=float), "style mixing probability"),
    ("training (others)", "--component-mixing", "loss.component_mixing", dict(type=float),
     "probability of swapping latent components between two samples"),
    ("training (others)", "--ema-kimg", "train.ema_kimg", dict(type=float), "half-life of the generator's moving average"),
    ("training (others)", "--ema-rampup", "train.ema_rampup", dict(type=float),
     "early in training, cap the EMA half-life at cur_kimg * this (e.g. 0.05; default: off)"),
    ("training (others)", "--mirror-augment", "train.mirror", BOOL, "random horizontal flips (preset: ffhq, cityscapes)"),
    ("training (others)", "--train-images-num", "train.max_images", dict(type=int), "train on a subset of this many images"),
    ("training (others)", "--augment", "train.augment", dict(choices=["ada", "fixed", "none"]),
     "discriminator augmentation for small datasets: ada = adaptive p, fixed = --augment-p throughout"),
    ("training (others)", "--augment-p", "train.augment_p", dict(type=float), "augmentation probability (ada: its start)"),
    ("training (others)", "--ada-target", "train.ada_target", dict(type=float), "ADA: wanted mean sign of D(reals)"),
    ("training (others)", "--ada-kimg", "train.ada_kimg", dict(type=float),
     "ADA: p may go from 0 to 1 within this many kimg (lower it for short runs)"),
    ("training (others)", "--augment-pipe", "train.augment_pipe", {}, "augmentations: bgc, bgcfnc, or a list of groups "
     "and transforms (training/data/augment.py)"),
    ("training (others)", "--seed", "train.seed", dict(type=int), "random seed"),
    ("training (others)", "--fp32", None, dict(action="store_true"), "no bf16 mixed precision on the GPU"),
    ("training (others)", "--num-threads", "run.num_threads", dict(type=int),
     "torch CPU threads per process (default: the cores free at start, at least 1)"),
    ("model (most useful)", "--ganformer-default", None, dict(action="store_true"),
     "the GANformer preset, tuned per dataset as in the paper"),
    ("model (most useful)", "--baseline", None, dict(choices=BASELINES), "a baseline preset instead of the GANformer"),
    ("model (most useful)", "--transformer", "model.transformer", BOOL, "bipartite attention in the generator (GANformer)"),
    ("model (most useful)", "--components-num", "model.components_num", dict(type=int),
     "number of local latent components K; 8-16 work well (default: 0, or 16 with --transformer)"),
    ("model (most useful)", "--latent-size", "model.latent_size", dict(type=int),
     "total latent size, divided over the components"),
    ("model (most useful)", "--num-heads", "model.num_heads", dict(type=int), "attention heads"),
    ("model (most useful)", "--integration", "model.integration", dict(choices=INTEGRATIONS),
     "how attended latents modulate image features"),
    ("model (others)", "--g-start-res", "model.g_start_res", dict(type=int), "attention from log2 resolution"),
    ("model (others)", "--g-end-res", "model.g_end_res", dict(type=int), "attention up to (excluding) log2 resolution"),
    ("model (others)", "--kmeans", "model.kmeans", BOOL, "duplex attention: track image-to-latent assignment centroids"),
    ("model (others)", "--kmeans-iters", "model.kmeans_iters", dict(type=int), "k-means iterations per layer"),
    ("model (others)", "--iterative", "model.iterative", BOOL, "carry k-means assignments from layer to layer"),
    ("model (others)", "--img2ltnt", "model.img2ltnt", BOOL, "true duplex: latents first attend to the image"),
    ("model (others)", "--mapping-ltnt2ltnt", "model.mapping_ltnt2ltnt", BOOL,
     "self-attention among the latents in the mapping network"),
    ("model (others)", "--mapping-resnet", "model.mapping_resnet", BOOL, "residual mapping network"),
    ("model (others)", "--mapping-layersnum", "model.mapping_layersnum", dict(type=int), "mapping network depth"),
    ("model (others)", "--mapping-lrmul", "model.mapping_lrmul", dict(type=float), "mapping learning-rate multiplier"),
    ("model (others)", "--use-pos", "model.use_pos", BOOL, "trainable positional encodings of the latents"),
    ("model (others)", "--style", "model.style", BOOL, "global style modulation (StyleGAN2); False turns it off"),
    ("model (others)", "--latent-stem", "model.latent_stem", BOOL, "map the global latent to the 4x4 input, not a constant"),
    ("model (others)", "--local-noise", "model.local_noise", BOOL, "per-layer noise inputs"),
    ("model (others)", "--normalize", "model.normalize", dict(choices=["layer", "instance", "batch"]),
     "feature normalisation in attention (default: none)"),
    ("model (others)", "--ltnt-gate", "model.ltnt_gate", BOOL, "gate attention per latent"),
    ("model (others)", "--img-gate", "model.img_gate", BOOL, "gate attention per image position"),
    ("model (others)", "--attention-dropout", "model.attention_dropout", dict(type=float), "attention dropout rate"),
    ("model (others)", "--component-dropout", "model.component_dropout", dict(type=float),
     "drop local latents from attention during training with this probability"),
    ("model (others)", "--pos-type", "model.pos_type", dict(choices=POS_TYPES), "image grid position encoding"),
    ("model (others)", "--pos-init", "model.pos_init", dict(choices=["uniform", "normal"]),
     "initialisation of trainable position encodings"),
    ("model (others)", "--pos-dim", "model.pos_dim", dict(type=int), "grid encoding width (default: the latent width)"),
    ("model (others)", "--pos-directions-num", "model.pos_directions_num", dict(type=int),
     "spatial directions of the grid encoding"),
    ("model (others)", "--g-arch", "model.g_arch", dict(choices=ARCHITECTURES), "generator architecture"),
    ("model (others)", "--d-arch", "model.d_arch", dict(choices=ARCHITECTURES), "discriminator architecture"),
    ("model (others)", "--tanh", "model.tanh", BOOL, "tanh on the output image"),
    ("model (others)", "--g-img2img", "model.g_img2img", dict(type=int),
     "SAGAN image self-attention at this log2 resolution (0 = off)"),
    ("model (others)", "--merge-layer", "model.merge_layer", dict(type=int), "k-GAN: merge the layers at this log2 resolution"),
    ("model (others)", "--merge-type", "model.merge_type", dict(choices=MERGE_TYPES), "k-GAN merge"),
    ("model (others)", "--channel-base", "model.channel_base", dict(type=int),
     "feature channels at resolution r: min(channel_base // r, channel_max)"),
    ("model (others)", "--channel-max", "model.channel_max", dict(type=int), "most feature channels of any layer"),
    ("model (others)", "--mbstd-group-size", "model.mbstd_group_size", dict(type=int),
     "discriminator minibatch-stddev group size"),
    ("visualization", "--vis-images", "vis_type.images", dict(action="store_true"), "save image samples"),
    ("visualization", "--vis-latents", "vis_type.latents", dict(action="store_true"), "save z and w of each sample (.npy)"),
    ("visualization", "--vis-maps", "vis_type.maps", dict(action="store_true"),
     "attention maps of the last layer (first head), soft and hard, and their blends with the image"),
    ("visualization", "--vis-layer-maps", "vis_type.layer_maps", dict(action="store_true"),
     "hard attention maps of every layer and head"),
    ("visualization", "--vis-interpolations", "vis_type.interpolations", dict(action="store_true"),
     "interpolations between pairs of latents (slerp in z, lerp in w): PNG strips and GIFs"),
    ("visualization", "--vis-noise-var", "vis_type.noise_var", dict(action="store_true"),
     "per-pixel variation caused by the local noise"),
    ("visualization", "--vis-style-mix", "vis_type.style_mix", dict(action="store_true"),
     "layer-mixing and component-mixing tables"),
    ("visualization", "--blending-alpha", "train.blending_alpha", dict(type=float),
     "image weight when blending images and attention maps"),
    ("visualization", "--interpolation-density", "vis.interpolation_density", dict(type=int),
     "frames per interpolation, end points included"),
    ("visualization", "--vis-num", "vis.num", dict(type=int), "number of samples"),
    ("visualization", "--vis-rich-num", "vis.rich_num", dict(type=int), "samples that also get layer maps and interpolations"),
    ("visualization", "--vis-section-size", "vis.section_size", dict(type=int), "latents drawn at once (memory bound)"),
    ("visualization", "--vis-batch-size", "vis.batch_size", dict(type=int), "images per forward pass (default: --batch-gpu)"),
]


def _dest(flags: Any) -> str:
    return (flags[0] if isinstance(flags, tuple) else flags)[2:].replace("-", "_")


# Option name -> target, for flags and for preset keys (a preset may set `gamma`, or `kgan` which has no flag).
TARGETS = {**{name: f"model.{name}" for name in MODEL_OPTIONS},
           **{_dest(flags): target for _, flags, target, _, _ in FLAGS if target}}


def _default_text(target: Optional[str], kw: dict) -> str:
    """' (default: X)' from the dataclass that owns the target; '' for switches and where None means "see the help"."""
    if not target or target.startswith("vis_type.") or kw.get("action") == "store_true":
        return ""
    kind, name = target.split(".")
    if kind == "model":
        paths = MODEL_OPTIONS[name]
        value = field_default(paths[0]) if paths else _NO_DEFAULT
        if name == "latent_size":
            from training.networks.presets import DEFAULT_LATENT_SIZE
            value = DEFAULT_LATENT_SIZE
    else:
        f = {f.name: f for f in dataclasses.fields(_DATACLASSES[kind])}[name]
        value = f.default if f.default is not dataclasses.MISSING else f.default_factory()   # type: ignore[misc]
    if value is None or value is _NO_DEFAULT:
        return ""
    return f" (default: {value})"


def build_parser() -> argparse.ArgumentParser:
    p = FlagParser(prog="run_network.py", usage="%(prog)s [--train | --eval | --vis] [options]", description="Train, evaluate and inspect GANformer models.",
                   epilog="Flags left unset take the preset's value (--ganformer-default, --baseline), else the "
                          "default shown. Boolean flags work bare (--kmeans) or with a value (--kmeans False). "
                          "The seed's underscore spellings (--mapping_ltnt2ltnt) are accepted.")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for group, flags, target, kw, text in FLAGS:
        g = groups.setdefault(group, p.add_argument_group(group))
        names = flags if isinstance(flags, tuple) else (flags,)
        metavar = {int: "N", float: "X"}.get(kw.get("type"))       # type: ignore[call-overload]
        extra = {"metavar": metavar} if metavar else {}
        g.add_argument(*names, default=None, help=text + _default_text(target, kw), **extra, **kw)
    return p


def parse(argv: Optional[Sequence[str]] = None) -> RunConfig:
    """The command line as a RunConfig (flag > preset > default); flag errors exit with one line."""
    return run_config(vars(build_parser().parse_args(argv)))


def run_config(given: dict[str, Any]) -> RunConfig:
    """RunConfig from flag values by option name (None = not given)."""
    given = {k: v for k, v in given.items() if v is not None}
    if given.get("ganformer_default") and given.get("baseline"):
        raise UserError("--ganformer-default and --baseline are mutually exclusive")
    preset = "GANformer" if given.get("ganformer_default") else given.get("baseline")
    run = RunConfig(preset=preset)
    owners = {"run": run, "train": run.train, "loss": run.train.loss, "vis": run.vis}
    chosen = {**preset_values(preset, given.get("dataset")), **recipe_values(given.get("recipe")), **given}
    for name, value in chosen.items():
        target = TARGETS.get(name)
        if target is None or target.startswith("vis_type."):
            continue
        kind, field_name = target.split(".")
        if kind == "model":
            run.model[field_name] = value
        else:
            setattr(owners[kind], field_name, value)
    run.train.mixed_precision = not given.get("fp32", False)
    chosen = tuple(t for t in VIS_TYPES if given.get(f"vis_{t}"))
    if given.get("train"):
        run.mode = "train"
    elif given.get("eval") or given.get("vis"):
        run.mode = "eval" if given.get("eval") else "vis"
        run.vis.types = chosen or (DEFAULT_VIS_TYPES if given.get("vis") else ())
        if run.mode == "vis":
            run.metrics = "none"          # --vis alone: visualisations only
    run.validate()
    return run
