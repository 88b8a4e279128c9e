"""Import GANformer networks pickled by the official TensorFlow 1.x code, without TensorFlow.

A TF snapshot is the tuple (G, D, Gs) of `dnnlib.tflib.network.Network` states (read by
`safe_pickle`, which never runs code from the file): static constructor kwargs, sub-networks
(`synthesis`, `mapping`) and named NumPy variables. Here the kwargs become our typed configs with the
TF architecture variants switched on (per-component latent normalisation, no global normalisation, the
extra last conv only with attention up to the last block, one k-means weight per iteration) and the
variables are translated by `tf_layout`. Both directions are checked: each of our tensors has exactly
one TF source of the right shape, and each TF variable is used (or is one of the few the TF code
creates but never reads).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from dnnlib.util import UserError
from training.networks.config import AttentionConfig, DiscriminatorConfig, GeneratorConfig, MappingConfig, SynthesisConfig
from training.importers import safe_pickle, tf_layout
from training.importers.state import load_exact
from training.networks import Discriminator, Generator

# Build functions of the current TF code and of the release before its renaming.
GENERATOR_FUNCS = ("Generator", "G_GANformer")
DISCRIMINATOR_FUNCS = ("Discriminator", "D_GANformer")
SUPPORTED_VERSIONS = (2, 3, 4)


@dataclass
class TFNetwork:
    """The parts of a pickled tflib Network that define it."""

    name: str
    func: str
    kwargs: dict
    variables: dict[str, np.ndarray]
    components: dict[str, "TFNetwork"] = field(default_factory=dict)

    def flat_variables(self, prefix: str = "") -> dict[str, np.ndarray]:
        """All variables, sub-network ones prefixed by their component name ("synthesis/...")."""
        out = {prefix + k: v for k, v in self.variables.items()}
        for cname, comp in self.components.items():
            out.update(comp.flat_variables(f"{prefix}{cname}/"))
        return out


def parse_network(stub: Any, where: str) -> TFNetwork:
    """Validate one unpickled Network state (a dict) and return its parts; UserError if malformed."""
    def bad(why: str) -> UserError:
        return UserError(f"{where}: not a usable TensorFlow network ({why})")

    if not isinstance(stub, dict):
        raise bad("its state is not a dict")
    if stub.get("version") not in SUPPORTED_VERSIONS:
        raise bad(f"tflib pickle version {stub.get('version')!r}, expected one of {SUPPORTED_VERSIONS}")
    for key, kind in (("name", str), ("build_func_name", str), ("static_kwargs", dict), ("variables", list)):
        if not isinstance(stub.get(key), kind):
            raise bad(f"missing or malformed {key!r}")
    variables: dict[str, np.ndarray] = {}
    for item in stub["variables"]:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise bad("a variable entry is not a (name, value) pair")
        name, value = item
        if not isinstance(value, (np.ndarray, np.generic)) or np.asarray(value).dtype.kind != "f":
            raise bad(f"variable {name} is not a floating-point array")
        if name in variables:
            raise bad(f"variable {name} appears twice")
        variables[name] = np.asarray(value, dtype=np.float32)
    components = stub.get("components") or {}
    if not isinstance(components, dict):
        raise bad("malformed 'components'")
    return TFNetwork(stub["name"], stub["build_func_name"], dict(stub["static_kwargs"]), variables,
                     {str(k): parse_network(v, f"{where}/{k}") for k, v in components.items()})


# ---------------------------------------------------------------------------------------------------
# Static kwargs -> our configs.

class _Kwargs:
    """Reads TF static kwargs by name (with the older aliases); TF's function default when absent."""

    def __init__(self, kwargs: Mapping[str, Any], where: str):
        self.kw, self.where = dict(kwargs), where

    def get(self, names: str, default: Any) -> Any:
        for name in names.split("|"):
            if name in self.kw:
                return self.kw[name]
        return default

    def require(self, names: str, default: Any, allowed: tuple, what: str) -> Any:
        """A kwarg whose other values select code we do not port: refuse those with one line."""
        value = self.get(names, default)
        if value not in allowed:
            raise UserError(f"{self.where}: TF {names.split('|')[0]}={value!r} ({what}) is not supported by the "
                            f"importer (supported: {', '.join(map(repr, allowed))})")
        return value


def _check_generator_kwargs(kw: _Kwargs) -> None:
    kw.require("transformer", False, (True,), "only GANformer networks have TF snapshots")
    kw.require("label_size|c_dim", 0, (0,), "class-conditional generator")
    kw.require("merge", False, (False,), "k-GAN")
    kw.require("latent_stem|ltnt_stem", False, (False,), "latent stem")
    kw.require("mapping_dim", None, (None,), "mapping width other than w_dim")
    kw.require("mapping_shared_dim", 0, (0,), "shared mapping")
    kw.require("mapping_nonlinearity", "lrelu", ("lrelu",), "mapping activation")
    kw.require("nonlinearity", "lrelu", ("lrelu",), "activation")
    kw.require("normalize_latents", True, (True,), "latent normalisation")
    kw.require("resample_kernel", [1, 3, 3, 1], ([1, 3, 3, 1],), "resampling filter")
    kw.require("crop_ratio", None, (None,), "feature cropping of non-square high-resolution models")
    kw.require("ltnt_gate", False, (False,), "latent gates")
    kw.require("img_gate", False, (False,), "image gates")
    kw.require("iterative", False, (False,), "centroids carried across layers")
    kw.require("img2img", 0, (0,), "image self-attention")
    kw.require("img2ltnt", False, (False,), "bottom-up attention")
    kw.require("ltnt2ltnt", False, (False,), "synthesis latent self-attention")
    kw.require("local_attention", 0, (0,), "local attention")
    kw.require("pos_type", "sinus", ("sinus",), "grid encoding")
    kw.require("fmap_decay", 1.0, (1.0,), "channel decay")
    kw.require("fmap_min", 1, (1,), "minimum channels")


def generator_config(kwargs: Mapping[str, Any], where: str = "G") -> GeneratorConfig:
    """Our GeneratorConfig, with TF behaviour, from the static kwargs of a TF `Generator` network."""
    kw = _Kwargs(kwargs, where)
    _check_generator_kwargs(kw)
    z_dim, w_dim = kw.get("z_dim|latent_size", 512), kw.get("w_dim|dlatent_size", 512)
    if z_dim != w_dim:
        raise UserError(f"{where}: TF z_dim ({z_dim}) != w_dim ({w_dim}) is not supported")
    resnet = kw.get("mapping_resnet", False)
    num_layers = kw.get("mapping_num_layers|mapping_layersnum", 8)
    w_avg_beta = kw.get("w_avg_beta|dlatent_avg_beta", 0.995)
    heads, dropout = kw.get("num_heads", 1), kw.get("attention_dropout", 0.12)
    mapping = MappingConfig(
        num_layers=2 * (num_layers // 2) if resnet else num_layers,   # TF resnet: num_layers // 2 units
        lrmul=kw.get("mapping_lrmul", 0.01),
        w_avg_beta=1.0 if w_avg_beta is None else w_avg_beta,        # TF keeps dlatent_avg even untracked
        resnet=resnet, ltnt2ltnt=kw.get("mapping_ltnt2ltnt", False), use_pos=kw.get("use_pos", False),
        out_layer=resnet,                  # TF's resnet MLP ends with one more lrelu layer; the plain one does not
        normalize_global=False, per_component_norm=True, num_heads=heads, attention_dropout=dropout)
    kmeans, kmeans_iters = kw.get("kmeans", False), kw.get("kmeans_iters", 1)
    attention = AttentionConfig(
        num_heads=heads, norm=kw.get("norm", None), integration=kw.get("integration", "add"),
        kmeans=kmeans, kmeans_iters=kmeans_iters, kmeans_weights_per_iter=kmeans and kmeans_iters > 1,
        attention_dropout=dropout,
        pos_dim=kw.get("pos_dim", None), pos_directions_num=kw.get("pos_directions_num", 2),
        use_pos=kw.get("use_pos", False))
    resolution, end_res = kw.get("resolution", 1024), kw.get("end_res", 20)
    synthesis = SynthesisConfig(
        architecture=kw.get("architecture", "skip"),
        channel_base=2 * kw.get("channel_base|fmap_base", 16 << 10),   # TF: base // 2**(log2 r - 1)
        channel_max=kw.get("channel_max|fmap_max", 512), style=kw.get("style", True),
        local_noise=kw.get("local_noise", True), transformer=True, start_res=kw.get("start_res", 0),
        end_res=end_res, conv_last=int(resolution).bit_length() - 1 <= end_res, tanh=kw.get("tanh", False),
        attention=attention)
    cfg = GeneratorConfig(
        img_resolution=resolution, img_channels=kw.get("num_channels", 3), c_dim=0, z_dim=z_dim,
        components_num=kw.get("components_num", 1), component_dropout=kw.get("component_dropout", 0.0),
        mapping=mapping, synthesis=synthesis)
    try:
        cfg.validate()
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    return cfg


def discriminator_config(kwargs: Mapping[str, Any], where: str = "D") -> DiscriminatorConfig:
    """Our DiscriminatorConfig from the static kwargs of a TF `Discriminator` network."""
    kw = _Kwargs(kwargs, where)
    kw.require("transformer", False, (False,), "discriminator attention")
    kw.require("label_size|c_dim", 0, (0,), "class-conditional discriminator")
    kw.require("nonlinearity", "lrelu", ("lrelu",), "activation")
    kw.require("resample_kernel", [1, 3, 3, 1], ([1, 3, 3, 1],), "resampling filter")
    kw.require("crop_ratio", None, (None,), "feature cropping of non-square high-resolution models")
    kw.require("local_attention", 0, (0,), "local attention")
    kw.require("fmap_decay", 1.0, (1.0,), "channel decay")
    kw.require("fmap_min", 1, (1,), "minimum channels")
    base, cmax = kw.get("channel_base|fmap_base", 16 << 10), kw.get("channel_max|fmap_max", 512)
    if min(base, cmax) != min(base // 2, cmax):
        # TF's Dense0 has channels(1) outputs; ours has the 4x4 width channels(2).
        raise UserError(f"{where}: TF channel_base {base} / channel_max {cmax} give the last dense layer a "
                        f"different width from the 4x4 block, which is not supported")
    group = kw.get("mbstd_group_size", 4)
    cfg = DiscriminatorConfig(
        img_resolution=kw.get("resolution", 1024), img_channels=kw.get("num_channels", 3), c_dim=0,
        architecture=kw.get("architecture", "resnet"), channel_base=2 * base, channel_max=cmax,
        mbstd_group_size=group, mbstd_num_channels=kw.get("mbstd_num_channels|mbstd_num_features", 1)
        if group > 1 else 0)   # TF skips the layer for group sizes <= 1
    cfg.validate()
    return cfg


# ---------------------------------------------------------------------------------------------------
# Whole snapshots.

def build_generator(net: TFNetwork, where: str) -> Generator:
    if net.func not in GENERATOR_FUNCS:
        raise UserError(f"{where}: TensorFlow network built by {net.func!r}, not a GANformer generator "
                        f"({' or '.join(GENERATOR_FUNCS)})")
    if set(net.components) != {"synthesis", "mapping"}:
        raise UserError(f"{where}: TensorFlow generator without its synthesis and mapping networks")
    G = Generator(generator_config(net.kwargs, where))
    load_exact(G, tf_layout.import_state(tf_layout.generator_plan(G), net.flat_variables(), where), where)
    return G.eval().requires_grad_(False)


def build_discriminator(net: TFNetwork, where: str) -> Discriminator:
    if net.func not in DISCRIMINATOR_FUNCS:
        raise UserError(f"{where}: TensorFlow network built by {net.func!r}, not a GANformer discriminator")
    D = Discriminator(discriminator_config(net.kwargs, where))
    load_exact(D, tf_layout.import_state(tf_layout.discriminator_plan(D), net.flat_variables(), where), where)
    return D.eval().requires_grad_(False)


def import_networks(data: tuple, name: str) -> dict[str, Any]:
    """(G, D, Gs) TF network states -> dict(G, D, G_ema, extra) of our networks.

    Like the official loader, anything after the first three entries of the tuple is ignored.
    """
    if not (isinstance(data, tuple) and len(data) >= 3):
        raise UserError(f"{name}: a TensorFlow snapshot is the tuple (G, D, Gs)")
    tf_G, tf_D, tf_Gs = (parse_network(x, f"{name}:{n}") for x, n in zip(data, ("G", "D", "Gs")))
    G_ema = build_generator(tf_Gs, f"{name}:Gs")
    # Run-time defaults of the TF generator: ours takes them as arguments (truncation) or as
    # training options (mixing), so they are kept for the callers that want them; the cutoff is
    # translated to our w slots.
    extra = {"source": "official-tf-pickle"}
    for key, default in (("truncation_psi", 0.7), ("truncation_cutoff", None), ("style_mixing", 0.9),
                         ("component_mixing", 0.0)):
        extra[f"tf_{key}"] = tf_Gs.kwargs.get(key, default)
    extra["tf_truncation_cutoff"] = tf_layout.cutoff_from_tf(extra["tf_truncation_cutoff"], G_ema)
    return {"G": build_generator(tf_G, f"{name}:G"), "D": build_discriminator(tf_D, f"{name}:D"),
            "G_ema": G_ema, "extra": extra}


def load_tf_pickle(path: str | Path) -> dict[str, Any]:
    """Read a TF GANformer snapshot pickle (nothing in it is executed) and import its networks."""
    data = safe_pickle.safe_load(path)
    if not (isinstance(data, tuple) and len(data) >= 3
            and all(isinstance(x, safe_pickle.TFNetworkStub) for x in data[:3])):
        kind = "a PyTorch GANformer snapshot" if isinstance(data, dict) and "G" in data else "something else"
        raise UserError(f"{path} is not a TensorFlow GANformer pickle (it holds {kind}); "
                        f"load it with training.checkpoint.load_networks")
    return import_networks(data, Path(path).name)
