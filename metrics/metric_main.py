"""Metric registry and evaluation driver.

``compute_metrics(names, gen_fn, real_source, num_images, device)`` evaluates several metrics with
one pass over the real images (skipped when their statistics are cached) and one pass over the
generator, sharing features between metrics that use the same network. The generator is a plain
callable ``gen_fn(batch_size) -> float images [B, C, H, W] in [-1, 1]`` (or an ImageSource of
uint8 fakes); nothing here imports the training code.

Each requested metric yields a :class:`MetricResult` with status ``ok``, ``unavailable`` (its network
is missing: the message says how to supply it) or ``invalid`` (e.g. the generator produced NaN).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from dnnlib import util
from dnnlib.precision import full_fp32

from . import fid, inception_score, kid, ppl, precision_recall
from .feature_networks import FeatureNetwork, NetworkUnavailable, load_network
from .metric_utils import (FeatureStats, GenFn, ImageSource, InvalidGeneratorOutput, Timer, as_image_source,
                           count_tag, extract_features, generator_batches, load_cached_stats, stats_cache_path,
                           take_images)


@dataclasses.dataclass
class MetricOptions:
    """Knobs of an evaluation; the defaults follow the official code (spec §11)."""

    batch_size: int = 64                 # images per generator / feature-network batch
    ratio: float | None = None           # dataset height/width ratio; rows are centre-cropped to it
    seed: int = 0                        # KID subsets and PPL paths
    network_paths: dict[str, str] = dataclasses.field(default_factory=dict)  # kind -> weights file
    cache: bool = True                   # cache real statistics (needs a cache_key on the source)
    cache_dir: str | None = None         # default: dnnlib.util.cache_dir('metrics')
    progress: bool = True                # tqdm bars with images/s
    fid_method: str = "sqrtm"            # 'sqrtm' as the official code, or 'eigh' (same value, faster)
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    pr_k: int = 3                        # neighbourhood size of the PR manifolds
    pr_batch_size: int = 5000            # rows/cols per distance block
    pr_fallback: bool = True             # 'pr' without VGG16 -> 'pr_inception' (named as such)
    is_splits: int = 10
    ppl_epsilon: float = 1e-4
    ppl_batch_size: int = 2
    allow_fewer_reals: bool = False      # use all reals when fewer than requested instead of failing


@dataclasses.dataclass
class MetricResult:
    """Outcome of one metric."""

    metric: str                                     # registry name, e.g. 'fid'
    status: str = "ok"                              # 'ok' | 'unavailable' | 'invalid'
    results: dict[str, float] = dataclasses.field(default_factory=dict)  # e.g. {'fid50k': 12.3}
    message: str = ""                               # one line when not ok, or a note
    network: str | None = None                      # feature network id used
    num_fake: int = 0
    num_real: int = 0
    total_time: float = 0.0                         # seconds for the whole evaluation call

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


MetricFn = Callable[[FeatureStats | None, FeatureStats, MetricOptions, torch.device, str], dict[str, float]]


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """A registered metric: which network, what it keeps of reals and fakes, how it is computed."""

    name: str
    network: str           # feature network kind (see feature_networks.NETWORKS)
    real: str | None       # None | 'mean_cov' | 'all'
    fake: str | None       # None (PPL) | 'mean_cov' | 'all'
    compute: MetricFn | None  # None for PPL, which drives its own sampling
    summary: str


_REGISTRY: dict[str, MetricSpec] = {}


def register(spec: MetricSpec) -> MetricSpec:
    assert spec.name not in _REGISTRY, spec.name
    _REGISTRY[spec.name] = spec
    return spec


def list_metrics() -> list[str]:
    """Names accepted by --metrics."""
    return list(_REGISTRY)


def parse_metric_names(names: str | Sequence[str]) -> list[str]:
    """'fid,kid' or ['fid', 'kid'] -> validated unique names; unknown names raise UserError."""
    items = names.split(",") if isinstance(names, str) else list(names)
    out = []
    for name in (n.strip() for n in items):
        if not name:
            continue
        if name not in _REGISTRY:
            raise util.UserError(f"unknown metric '{name}'; choose from {', '.join(_REGISTRY)}")
        if name not in out:
            out.append(name)
    if not out:
        raise util.UserError(f"no metrics given; choose from {', '.join(_REGISTRY)}")
    return out


# ----------------------------------------------------------------------------------------------
# The metrics (spec §11). Result names follow the official PyTorch code: <name><count>[_<field>].

def _fid(real, fake, opts, device, tag):
    return {f"fid{tag}": fid.compute_fid(real, fake, method=opts.fid_method)}


def _kid(real, fake, opts, device, tag):
    value = kid.compute_kid(real.get_all(), fake.get_all(), opts.kid_subsets, opts.kid_subset_size,
                            seed=opts.seed, device=device)
    return {f"kid{tag}": value}


def _pr(prefix: str) -> MetricFn:
    def compute(real, fake, opts, device, tag):
        precision, recall = precision_recall.compute_pr(real.get_all(), fake.get_all(), k=opts.pr_k,
                                                        row_batch_size=opts.pr_batch_size,
                                                        col_batch_size=opts.pr_batch_size, device=device)
        return {f"{prefix}{tag}_precision": precision, f"{prefix}{tag}_recall": recall}
    return compute


def _is(real, fake, opts, device, tag):
    mean, std = inception_score.inception_score(fake.get_all(), num_splits=opts.is_splits)
    return {f"is{tag}_mean": mean, f"is{tag}_std": std}


register(MetricSpec("fid", "inception", "mean_cov", "mean_cov", _fid, "Fréchet Inception Distance"))
register(MetricSpec("kid", "inception", "all", "all", _kid, "Kernel Inception Distance"))
register(MetricSpec("pr", "vgg16", "all", "all", _pr("pr"), "precision/recall, VGG16 features"))
register(MetricSpec("pr_inception", "inception", "all", "all", _pr("pr_inception"),
                    "precision/recall on Inception features (not comparable to 'pr')"))
register(MetricSpec("is", "inception_logits", None, "all", _is, "Inception Score"))
for _space in ("z", "w"):
    for _sampling in ("full", "end"):
        register(MetricSpec(f"ppl_{_space}{_sampling}", "vgg16", None, None, None,
                            f"perceptual path length, {_space} space, {_sampling} sampling"))


# ----------------------------------------------------------------------------------------------
# The driver.

def _resolve(names: list[str], device: torch.device, opts: MetricOptions, ppl_generator: object | None,
             results: dict[str, MetricResult]) -> tuple[list[MetricSpec], dict[str, FeatureNetwork]]:
    """Load the networks the metrics need; metrics whose network is missing become 'unavailable'."""
    specs, nets, missing = [], {}, {}
    for name in names:
        spec = _REGISTRY[name]
        if spec.network not in nets and spec.network not in missing:
            try:
                nets[spec.network] = load_network(spec.network, device, opts.network_paths.get(spec.network))
            except NetworkUnavailable as e:
                missing[spec.network] = str(e)
        if spec.network in missing:
            if name == "pr" and opts.pr_fallback and "pr_inception" not in names:
                note = "VGG16 unavailable: Inception features instead, not comparable to 'pr'"
                names.append("pr_inception")
                results["pr_inception"] = MetricResult("pr_inception", message=note)
            results[name] = MetricResult(name, "unavailable", message=missing[spec.network])
            continue
        if spec.compute is None and ppl_generator is None:
            results[name] = MetricResult(name, "unavailable",
                                         message="PPL needs a generator with mapping/synthesis (ppl_generator)")
            continue
        specs.append(spec)
    used = {s.network for s in specs}
    return specs, {k: v for k, v in nets.items() if k in used}


def _real_stats(specs: list[MetricSpec], nets: Mapping[str, FeatureNetwork], real: ImageSource | None,
                num_real: int, opts: MetricOptions) -> tuple[dict[str, FeatureStats], int]:
    """Statistics of the reals per network kind, from the cache or one pass over the source."""
    needs: dict[str, set[str]] = {}
    for spec in specs:
        if spec.real is not None:
            needs.setdefault(spec.network, set()).add(spec.real)
    if not needs:
        return {}, 0
    if real is None:
        raise util.UserError("these metrics need real images, but none were given")
    key = real.cache_key if opts.cache else None
    stats, todo = {}, {}
    for kind, captures in needs.items():
        cached = load_cached_stats(key, num_real, opts.ratio, nets[kind].net_id, "all" in captures, opts.cache_dir)
        if cached is not None:
            stats[kind] = cached
        else:
            todo[kind] = FeatureStats(capture_all="all" in captures, capture_mean_cov="mean_cov" in captures)
    if not todo:
        return stats, next(iter(stats.values())).num_items
    batches = take_images(real, num_real, allow_fewer=opts.allow_fewer_reals)
    seen = extract_features(batches, {k: nets[k] for k in todo}, todo, num_real, opts.ratio,
                            desc=f"{real.name} [{', '.join(todo)}]", progress=opts.progress)
    if seen < 2:
        raise util.UserError(f"{real.name} has {seen} images; metrics need at least 2")
    for kind, st in todo.items():
        if key is not None and seen == num_real:
            st.save(stats_cache_path(key, seen, opts.ratio, nets[kind].net_id, st.capture_all, opts.cache_dir))
    stats.update(todo)
    return stats, seen


def _fake_stats(specs: list[MetricSpec], nets: Mapping[str, FeatureNetwork], fake: GenFn | ImageSource | None,
                num_fake: int, opts: MetricOptions) -> dict[str, FeatureStats]:
    """Statistics of the fakes per network kind, from one pass over the generator or source."""
    todo: dict[str, FeatureStats] = {}
    for spec in specs:
        if spec.fake is None:
            continue
        st = todo.setdefault(spec.network, FeatureStats())
        st.capture_all |= spec.fake == "all"
        st.capture_mean_cov |= spec.fake == "mean_cov"
    if not todo:
        return {}
    if fake is None:
        raise util.UserError("these metrics need generated images, but no generator was given")
    if isinstance(fake, ImageSource):
        batches: Iterable[torch.Tensor] = take_images(fake, num_fake)
        name = fake.name
    else:
        batches, name = generator_batches(fake, num_fake, opts.batch_size), "generated"
    extract_features(batches, {k: nets[k] for k in todo}, todo, num_fake, opts.ratio,
                     desc=f"{name} [{', '.join(todo)}]", progress=opts.progress)
    return todo


def _run_ppl(spec: MetricSpec, ppl_generator: ppl.PathGenerator, vgg: FeatureNetwork, num: int,
             device: torch.device, opts: MetricOptions) -> dict[str, float]:
    space, sampling = spec.name[4], spec.name[5:]
    value = ppl.compute_ppl(ppl_generator, vgg.lpips, num, space=space, sampling=sampling,
                            epsilon=opts.ppl_epsilon, batch_size=opts.ppl_batch_size, device=device,
                            seed=opts.seed, progress=opts.progress)
    return {spec.name: value}


def compute_metrics(names: str | Sequence[str], gen_fn: GenFn | ImageSource | None,
                    real_source: ImageSource | Iterable[torch.Tensor] | None, num_images: int,
                    device: str | torch.device = "cpu", opts: MetricOptions | None = None, *,
                    num_real: int | None = None,
                    ppl_generator: ppl.PathGenerator | None = None) -> dict[str, MetricResult]:
    """Evaluate `names` ('fid,kid,pr,is', ...) on `num_images` fakes against `num_real` reals.

    gen_fn: ``gen_fn(batch_size) -> float [B, C, H, W]`` in [-1, 1] (quantised to uint8 like real
        images, never truncated here), an ImageSource of uint8 fakes (folder-vs-folder), or None
        when only ppl_* metrics are requested.
    real_source: uint8 [B, C, H, W] batches, or an ImageSource with a cache_key for the stats cache.
    num_real: reals to use (default `num_images`); too few raise UserError unless
        opts.allow_fewer_reals.
    ppl_generator: latent-space access for the ppl_* metrics (see metrics.ppl.PathGenerator).

    Returns name -> MetricResult, in request order (plus 'pr_inception' when 'pr' fell back).
    Raises util.UserError for unknown metric names and too few images; missing networks and
    invalid generator output are reported in the results instead.
    """
    opts = opts if opts is not None else MetricOptions()
    device = torch.device(device)
    timer = Timer()
    names = parse_metric_names(names)
    num_real = num_images if num_real is None else num_real
    if num_images < 2 or num_real < 2:
        raise util.UserError(f"need at least 2 images on each side, got {num_images} fakes and {num_real} reals")
    real = as_image_source(real_source, "real images") if real_source is not None else None
    results: dict[str, MetricResult] = {}
    specs, nets = _resolve(names, device, opts, ppl_generator, results)
    real_stats, seen_real = _real_stats(specs, nets, real, num_real, opts)
    try:
        fake_stats = _fake_stats(specs, nets, gen_fn, num_images, opts)
        error = None
    except InvalidGeneratorOutput as e:
        fake_stats, error = {}, str(e)
    tag = count_tag(num_images)
    for spec in specs:
        res = results.setdefault(spec.name, MetricResult(spec.name))
        res.network, res.num_fake, res.num_real = nets[spec.network].net_id, num_images, seen_real
        try:
            # full float32: PPL divides differences of 1e-4 steps by eps^2, and PR's distances set its radii
            with full_fp32():
                if spec.compute is None:
                    assert ppl_generator is not None
                    res.results = _run_ppl(spec, ppl_generator, nets[spec.network], num_images, device, opts)
                elif error is not None:
                    raise InvalidGeneratorOutput(error)
                else:
                    res.results = spec.compute(real_stats.get(spec.network), fake_stats[spec.network], opts, device,
                                               tag)
            if not all(math.isfinite(v) for v in res.results.values()):
                res.status, res.message = "invalid", "result is not finite"
        except (InvalidGeneratorOutput, ValueError, FloatingPointError, np.linalg.LinAlgError) as e:
            res.status, res.message = "invalid", str(e).splitlines()[0] if str(e) else type(e).__name__
            res.results = {}
    for res in results.values():
        res.total_time = timer()
    order = names + [n for n in results if n not in names]
    return {n: results[n] for n in order if n in results}


# ----------------------------------------------------------------------------------------------
# Reporting.

def format_time(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h {s // 60 % 60:02d}m {s % 60:02d}s" if s >= 3600 else (
        f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s")


def format_result(res: MetricResult, snapshot: str | None = None) -> str:
    """One line: '<snapshot>  time 1m 05s  fid50k 12.3456', or '<metric> unavailable: ...'."""
    head = f"{(snapshot or '-'):<30s} time {format_time(res.total_time):<10s}"
    if not res.ok:
        return f"{head} {res.metric} {res.status}: {res.message}"
    nums = "".join(f" {k} {v:10.4f}" for k, v in res.results.items())
    return head + nums + (f"  ({res.message})" if res.message else "")


def append_results(results: Mapping[str, MetricResult], run_dir: str | os.PathLike,
                   snapshot: str | None = None) -> None:
    """Append each result as a line to ``metric-<name>.txt`` and as JSON to ``metrics.jsonl``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.time()
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as jsonl:
        for res in results.values():
            with open(run_dir / f"metric-{res.metric}.txt", "a", encoding="utf-8") as txt:
                txt.write(format_result(res, snapshot) + "\n")
            jsonl.write(json.dumps(dict(res.to_dict(), snapshot=snapshot, timestamp=stamp)) + "\n")


def scalars(results: Mapping[str, MetricResult]) -> dict[str, float]:
    """TensorBoard/stats scalars 'Metrics/<result name>' of the successful results."""
    return {f"Metrics/{k}": v for res in results.values() if res.ok for k, v in res.results.items()}
