"""Import GANformer networks pickled by the official TensorFlow 1.x code, without TensorFlow.

A TF snapshot is the tuple (G, D, Gs) of `dnnlib.tflib.network.Network` states (read by
`safe_pickle`, which never runs code from the file): static constructor kwargs, sub-networks
(`synthesis`, `mapping`) and named NumPy variables. Here the kwargs become our typed configs with
the TF behaviour switched on (per-component latent normalisation, no global normalisation, the
extra last conv only with the transformer, TF w-slot indexing) and every variable is converted to
our layout. Both directions are checked: each of our tensors has exactly one TF source of the right
shape, and each TF variable is used (or is one of the few the TF code creates but never reads).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np
import torch

from dnnlib.util import UserError
from training.networks.config import AttentionConfig, DiscriminatorConfig, GeneratorConfig, MappingConfig, SynthesisConfig
from training.networks import Discriminator, Generator
from training.importers.official_pt import load_into

# Build functions of the current TF code and of the release before its renaming.
GENERATOR_FUNCS = ("Generator", "G_GANformer")
DISCRIMINATOR_FUNCS = ("Discriminator", "D_GANformer")
SUPPORTED_VERSIONS = (2, 3, 4)

# Our attention projection -> TF dense-layer suffix (`weight_<s>` / `bias_<s>`).
ATT_PROJECTIONS = (("to_queries", "query"), ("to_keys", "key"), ("to_values", "value"),
                   ("from_pos_map", "from_pos"), ("to_pos_map", "to_pos"), ("modulation", "out"))


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
    attention = AttentionConfig(
        num_heads=heads, norm=kw.get("norm", None), integration=kw.get("integration", "add"),
        kmeans=kw.get("kmeans", False), kmeans_iters=kw.get("kmeans_iters", 1), attention_dropout=dropout,
        pos_dim=kw.get("pos_dim", None), pos_directions_num=kw.get("pos_directions_num", 2),
        use_pos=kw.get("use_pos", False))
    synthesis = SynthesisConfig(
        architecture=kw.get("architecture", "skip"),
        channel_base=2 * kw.get("channel_base|fmap_base", 16 << 10),   # TF: base // 2**(log2 r - 1)
        channel_max=kw.get("channel_max|fmap_max", 512), style=kw.get("style", True),
        local_noise=kw.get("local_noise", True), transformer=True, start_res=kw.get("start_res", 0),
        end_res=kw.get("end_res", 20), conv_last="transformer", tf_w_slots=True, tanh=kw.get("tanh", False),
        attention=attention)
    cfg = GeneratorConfig(
        img_resolution=kw.get("resolution", 1024), img_channels=kw.get("num_channels", 3), c_dim=0, z_dim=z_dim,
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
# Variables -> our state dicts.

def _dense_weight(a: np.ndarray) -> np.ndarray:
    return a.T                                      # [in, out] -> [out, in]


def _conv_weight(a: np.ndarray) -> np.ndarray:
    return a.transpose(3, 2, 0, 1)                  # [kh, kw, in, out] -> [out, in, kh, kw]


def _upconv_weight(a: np.ndarray) -> np.ndarray:
    # TF's upsample_conv_2d flips the kernel before its transposed conv; our up-conv does not.
    return _conv_weight(a[::-1, ::-1])


class _Converter:
    """Collects our tensors from TF variables and remembers which variables were used."""

    def __init__(self, variables: Mapping[str, np.ndarray], where: str):
        self.src, self.where = dict(variables), where
        self.used: set[str] = set()
        self.out: dict[str, torch.Tensor] = {}

    def take(self, tf_name: str) -> np.ndarray:
        if tf_name not in self.src:
            raise UserError(f"{self.where}: TensorFlow variable {tf_name} is missing "
                            f"(the pickle does not match its own configuration)")
        self.used.add(tf_name)
        return self.src[tf_name]

    def put(self, ours: str, tf_name: str, fn: Callable[[np.ndarray], np.ndarray] = lambda a: a) -> None:
        # np.array copies into a fresh contiguous array and, unlike ascontiguousarray, keeps 0-d scalars.
        self.out[ours] = torch.from_numpy(np.array(fn(self.take(tf_name)), dtype=np.float32))

    def dense(self, ours: str, tf_weight: str, tf_bias: str, bias_offset: float = 0.0) -> None:
        self.put(f"{ours}.weight", tf_weight, _dense_weight)
        self.put(f"{ours}.bias", tf_bias, lambda a: a + bias_offset)

    def attention(self, ours: str, scope: str, kmeans_iters: int = 0) -> None:
        for mine, theirs in ATT_PROJECTIONS:
            self.dense(f"{ours}.{mine}", f"{scope}/weight_{theirs}", f"{scope}/bias_{theirs}")
        if kmeans_iters:
            self.put(f"{ours}.centroids", f"{scope}/toasgn_init")
            self.put(f"{ours}.att_weight", f"{scope}/iter_0/st_weights")
            # TF learns one weight vector per iteration; our layer shares one, exact only if they agree.
            first = self.src[f"{scope}/iter_0/st_weights"]
            for j in range(1, kmeans_iters):
                if not np.array_equal(self.take(f"{scope}/iter_{j}/st_weights"), first):
                    raise UserError(f"{self.where}: {scope} has different k-means weights per iteration, "
                                    f"which the importer does not support")

    def unused(self) -> list[str]:
        return sorted(set(self.src) - self.used)


def _mapping_tensors(cv: _Converter, G: Generator) -> None:
    cfg = G.cfg.mapping
    mlps = [("mapping.global_mlp", "mapping/global/", G.mapping.global_mlp)]
    if G.K > 0:
        mlps.insert(0, ("mapping.mlp", "mapping/", G.mapping.mlp))
    for ours, scope, mlp in mlps:
        for i in range(mlp.num_units):
            if mlp.self_attention:
                cv.attention(f"{ours}.sa{i}", f"{scope}AttLayer_{i}")
            if cfg.resnet:
                for j in range(2):
                    cv.dense(f"{ours}.l{i}.fc{j}", f"{scope}Dense{i}_{j}/weight", f"{scope}Dense{i}_{j}/bias")
            else:
                cv.dense(f"{ours}.l{i}", f"{scope}Dense{i}/weight", f"{scope}Dense{i}/bias")
        if hasattr(mlp, "out_layer"):
            # TF names the extra layer after the last residual unit's index.
            last = f"{scope}Dense{mlp.num_units - 1}"
            cv.dense(f"{ours}.out_layer", f"{last}/weight", f"{last}/bias")


def _synthesis_layer(cv: _Converter, ours: str, scope: str, layer, noise_idx: Optional[int], up: bool,
                     kmeans_iters: int) -> None:
    cv.put(f"{ours}.weight", f"{scope}/weight", _upconv_weight if up else _conv_weight)
    # The style is y @ mod_weight + mod_bias + 1 at run time: our affine bias holds the +1.
    cv.dense(f"{ours}.affine", f"{scope}/mod_weight", f"{scope}/mod_bias", bias_offset=1.0)
    if layer.bias is not None:
        cv.put(f"{ours}.bias", f"{scope}/bias")
    if hasattr(layer, "noise_const"):
        cv.put(f"{ours}.noise_strength", f"{scope}/noise_strength", lambda a: a.reshape([]))
        cv.put(f"{ours}.noise_const", f"synthesis/noise{noise_idx}", lambda a: a[0, 0])
    if layer.attn is not None:
        cv.attention(f"{ours}.attn", f"{scope}/AttLayer_l2n", kmeans_iters if layer.attn.kmeans else 0)


def _synthesis_tensors(cv: _Converter, G: Generator) -> None:
    syn = G.synthesis
    iters = G.cfg.synthesis.attention.kmeans_iters
    for res in syn.block_resolutions:
        r, block = int(math.log2(res)), getattr(syn, f"b{res}")
        ours, scope = f"synthesis.b{res}", f"synthesis/{res}x{res}"
        if block.is_stem:
            cv.put(f"{ours}.const", f"{scope}/Const/const", lambda a: a[0])
            _synthesis_layer(cv, f"{ours}.conv1", f"{scope}/Conv", block.conv1, 0, False, iters)
        else:
            # TF layer index (and noise variable) of conv0 / conv1 at resolution 2**r: 2r-5 / 2r-4.
            _synthesis_layer(cv, f"{ours}.conv0", f"{scope}/Conv0_up", block.conv0, 2 * r - 5, True, iters)
            _synthesis_layer(cv, f"{ours}.conv1", f"{scope}/Conv1", block.conv1, 2 * r - 4, False, iters)
        if hasattr(block, "conv_last"):
            _synthesis_layer(cv, f"{ours}.conv_last", f"{scope}/ToRGB/extraLayer", block.conv_last, None, False, iters)
        if hasattr(block, "torgb"):
            cv.put(f"{ours}.torgb.weight", f"{scope}/ToRGB/weight", _conv_weight)
            cv.dense(f"{ours}.torgb.affine", f"{scope}/ToRGB/mod_weight", f"{scope}/ToRGB/mod_bias", bias_offset=1.0)
            cv.put(f"{ours}.torgb.bias", f"{scope}/ToRGB/bias")
        if hasattr(block, "skip"):
            cv.put(f"{ours}.skip.weight", f"{scope}/Skip/weight", _upconv_weight)
    # TF creates one noise variable more than it has noisy layers (2R x 2R); it is never read.
    cv.take(f"synthesis/noise{2 * int(math.log2(G.img_resolution)) - 3}")


def generator_state_dict(net: TFNetwork, G: Generator, where: str) -> dict[str, torch.Tensor]:
    cv = _Converter(net.flat_variables(), where)
    cv.put("pos", "ltnt_emb/emb")
    cv.put("mapping.w_avg", "dlatent_avg")
    _mapping_tensors(cv, G)
    _synthesis_tensors(cv, G)
    _no_leftovers(cv)
    return cv.out


def discriminator_state_dict(net: TFNetwork, D: Discriminator, where: str) -> dict[str, torch.Tensor]:
    cv = _Converter(net.flat_variables(), where)
    for res in D.block_resolutions:
        block, scope = getattr(D, f"b{res}"), f"{res}x{res}"
        if hasattr(block, "fromrgb"):
            cv.put(f"b{res}.fromrgb.weight", f"{scope}/FromRGB/weight", _conv_weight)
            cv.put(f"b{res}.fromrgb.bias", f"{scope}/FromRGB/bias")
        for ours, theirs in (("conv0", "Conv0"), ("conv1", "Conv1_down")):
            cv.put(f"b{res}.{ours}.weight", f"{scope}/{theirs}/weight", _conv_weight)   # no flip: a plain conv
            cv.put(f"b{res}.{ours}.bias", f"{scope}/{theirs}/bias")
        if hasattr(block, "skip"):
            cv.put(f"b{res}.skip.weight", f"{scope}/Skip/weight", _conv_weight)
    if hasattr(D.b4, "fromrgb"):
        cv.put("b4.fromrgb.weight", "4x4/FromRGB/weight", _conv_weight)
        cv.put("b4.fromrgb.bias", "4x4/FromRGB/bias")
    cv.put("b4.conv.weight", "4x4/Conv/weight", _conv_weight)
    cv.put("b4.conv.bias", "4x4/Conv/bias")
    cv.dense("b4.fc", "4x4/Dense0/weight", "4x4/Dense0/bias")
    cv.dense("b4.out", "Output/weight", "Output/bias")
    if "ltnt_emb/emb" in cv.src:
        cv.take("ltnt_emb/emb")     # created when use_pos is passed to D, read only by D attention (off)
    _no_leftovers(cv)
    return cv.out


def _no_leftovers(cv: _Converter) -> None:
    left = cv.unused()
    if left:
        more = f" and {len(left) - 3} more" if len(left) > 3 else ""
        raise UserError(f"{cv.where}: TensorFlow variable(s) {', '.join(left[:3])}{more} have no counterpart "
                        f"in the imported network (an unsupported TF option?)")


# ---------------------------------------------------------------------------------------------------
# Whole snapshots.

def build_generator(net: TFNetwork, where: str) -> Generator:
    if net.func not in GENERATOR_FUNCS:
        raise UserError(f"{where}: TensorFlow network built by {net.func!r}, not a GANformer generator "
                        f"({' or '.join(GENERATOR_FUNCS)})")
    if set(net.components) != {"synthesis", "mapping"}:
        raise UserError(f"{where}: TensorFlow generator without its synthesis and mapping networks")
    G = Generator(generator_config(net.kwargs, where))
    load_into(G, generator_state_dict(net, G, where), where)
    return G.eval().requires_grad_(False)


def build_discriminator(net: TFNetwork, where: str) -> Discriminator:
    if net.func not in DISCRIMINATOR_FUNCS:
        raise UserError(f"{where}: TensorFlow network built by {net.func!r}, not a GANformer discriminator")
    D = Discriminator(discriminator_config(net.kwargs, where))
    load_into(D, discriminator_state_dict(net, D, where), where)
    return D.eval().requires_grad_(False)


def import_networks(data: tuple, name: str) -> dict[str, Any]:
    """(G, D, Gs) TF network states -> dict(G, D, G_ema, extra) of our networks.

    Like the official loader, anything after the first three entries of the tuple is ignored.
    """
    if not (isinstance(data, tuple) and len(data) >= 3):
        raise UserError(f"{name}: a TensorFlow snapshot is the tuple (G, D, Gs)")
    tf_G, tf_D, tf_Gs = (parse_network(x, f"{name}:{n}") for x, n in zip(data, ("G", "D", "Gs")))
    # Run-time defaults of the TF generator: ours takes them as arguments (truncation) or as
    # training options (mixing), so they are kept for the callers that want them.
    extra = {"source": "official-tf-pickle"}
    for key, default in (("truncation_psi", 0.7), ("truncation_cutoff", None), ("style_mixing", 0.9),
                         ("component_mixing", 0.0)):
        extra[f"tf_{key}"] = tf_Gs.kwargs.get(key, default)
    return {"G": build_generator(tf_G, f"{name}:G"), "D": build_discriminator(tf_D, f"{name}:D"),
            "G_ema": build_generator(tf_Gs, f"{name}:Gs"), "extra": extra}


def load_tf_pickle(path: str | Path) -> dict[str, Any]:
    """Read a TF GANformer snapshot pickle (nothing in it is executed) and import its networks."""
    from training.importers import safe_pickle

    data = safe_pickle.safe_load(path)
    if not (isinstance(data, tuple) and len(data) >= 3
            and all(isinstance(x, safe_pickle.TFNetworkStub) for x in data[:3])):
        kind = "a PyTorch GANformer snapshot" if isinstance(data, dict) and "G" in data else "something else"
        raise UserError(f"{path} is not a TensorFlow GANformer pickle (it holds {kind}); "
                        f"load it with training.checkpoint.load_networks")
    return import_networks(data, Path(path).name)
