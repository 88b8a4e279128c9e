"""Our checkpoint format round-trips; official pickles load without running their code."""
from __future__ import annotations

import collections
import pickle
import sys
import types

import pytest
import torch

from conftest import REF_PT
from dnnlib.util import UserError
from training.checkpoint import latest_snapshot, load_networks, save_checkpoint
from training.networks.config import DiscriminatorConfig
from training.networks.presets import build
from training.importers import safe_pickle
from training.networks import Discriminator, Generator


def tiny_nets():
    torch.manual_seed(1)
    G = Generator(build("GANformer", 16, latent_size=32, components_num=4, channel_base=256, channel_max=32)[0])
    D = Discriminator(DiscriminatorConfig(img_resolution=16, channel_base=256, channel_max=32))
    with torch.no_grad():
        G.mapping.w_avg.normal_()
    return G, D


def test_round_trip(tmp_path) -> None:
    G, D = tiny_nets()
    path = tmp_path / "network-snapshot-000012.safetensors"
    save_checkpoint(path, {"G": G, "D": D, "G_ema": G}, extra={"kimg": 12})
    nets = load_networks(path)
    assert nets["extra"] == {"kimg": 12}
    z = torch.randn(2, G.k, G.z_dim)
    for name, ref in (("G", G), ("G_ema", G)):
        out = nets[name].eval()
        assert out.cfg == ref.cfg
        with torch.no_grad():
            assert torch.equal(out(z, truncation_psi=0.6, noise_mode="const"),
                               ref.eval()(z, truncation_psi=0.6, noise_mode="const"))
    x = torch.randn(4, 3, 16, 16)
    assert torch.equal(nets["D"].eval()(x), D.eval()(x))
    assert latest_snapshot(tmp_path) == path
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def _adam_after_one_step(net: torch.nn.Module) -> torch.optim.Adam:
    opt = torch.optim.Adam(net.parameters())
    sum(p.square().sum() for p in net.parameters()).backward()
    opt.step()
    return opt


def test_snapshot_stores_each_network_once(tmp_path) -> None:
    """Release = G_ema + config; training state = G, D, optimisers, counters; resume reads both, and
    fine-tuning from the release finds G and D in the state beside it."""
    from safetensors import safe_open
    from training import snapshots

    G, D = tiny_nets()
    G_ema = Generator(G.cfg)
    opts = {"G": _adam_after_one_step(G), "D": _adam_after_one_step(D)}
    snapshots.save_snapshot(tmp_path, "000004", G, D, G_ema, opts, {"cur_nimg": 4000}, extra={"kimg": 4.0})
    names = {}
    for f in ("network-snapshot-000004", "training-state-000004"):
        with safe_open(str(tmp_path / f"{f}.safetensors"), framework="pt") as h:
            names[f] = {k.partition(".")[0] for k in h.keys()}
    assert names["network-snapshot-000004"] == {"G_ema"}
    assert names["training-state-000004"] == {"G", "D", "opt_G", "opt_D"}
    nets, configs, opt_states, counters = snapshots.load_state(tmp_path / "training-state-000004.safetensors")
    assert set(nets) == {"G", "D", "G_ema"} and counters == {"cur_nimg": 4000}
    for name, net in (("G", G), ("D", D), ("G_ema", G_ema)):
        assert all(torch.equal(v, nets[name][k]) for k, v in net.state_dict().items())
    assert torch.equal(opt_states["G"]["state"][0]["exp_avg"], opts["G"].state_dict()["state"][0]["exp_avg"])
    loaded = load_networks(tmp_path / "network-snapshot-000004.safetensors")
    assert {"G", "D", "G_ema"} <= set(loaded) and loaded["extra"] == {"kimg": 4.0}
    (tmp_path / "network-snapshot-000004.safetensors").unlink()
    with pytest.raises(UserError, match="network-snapshot-000004"):
        snapshots.load_state(tmp_path / "training-state-000004.safetensors")


def test_files_written_the_old_way_still_load(tmp_path) -> None:
    """Before one writer, states held G, D and G_ema, and releases held G_ema, G and D."""
    from training import snapshots

    G, D = tiny_nets()
    opts = {"G": _adam_after_one_step(G), "D": _adam_after_one_step(D)}
    snapshots.save_state(tmp_path / "training-state-000002.safetensors", {"G": G, "D": D, "G_ema": G}, opts,
                         {"cur_nimg": 2000})
    nets, _, _, counters = snapshots.load_state(tmp_path / "training-state-000002.safetensors")   # no release needed
    assert set(nets) == {"G", "D", "G_ema"} and counters["cur_nimg"] == 2000
    save_checkpoint(tmp_path / "network-snapshot-000002.safetensors", {"G_ema": G, "G": G, "D": D})
    assert {"G", "D", "G_ema"} <= set(load_networks(tmp_path))


def test_corrupt_checkpoint_is_refused(tmp_path) -> None:
    G, D = tiny_nets()
    path = tmp_path / "net.safetensors"
    save_checkpoint(path, {"G": G})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError):
        load_networks(path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError):
        load_networks(path)


def test_failed_write_leaves_old_file(tmp_path, monkeypatch) -> None:
    G, _ = tiny_nets()
    path = tmp_path / "net.safetensors"
    save_checkpoint(path, {"G": G})
    before = path.read_bytes()
    import safetensors.torch as st

    def boom(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(st, "save_file", boom)
    with pytest.raises(RuntimeError):
        save_checkpoint(path, {"G": G})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["net.safetensors"]


# --- official PyTorch pickles ------------------------------------------------------------------------

@pytest.fixture
def fake_official_modules(monkeypatch):
    """Install stand-ins for the official `torch_utils.persistence` so that pickles in its format can be made."""
    tu = types.ModuleType("torch_utils")
    pers = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):   # never called by our loader: it substitutes its own
        raise AssertionError("official reconstruction must not run")
    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    pers._reconstruct_persistent_obj = _reconstruct_persistent_obj
    tu.persistence = pers
    monkeypatch.setitem(sys.modules, "torch_utils", tu)
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", pers)
    return pers


class _Persistent:
    """Pickles like an official persistent module: (_reconstruct_persistent_obj, (meta,))."""

    def __init__(self, class_name, state):
        self.class_name, self.state = class_name, state

    def __reduce__(self):
        from torch_utils.persistence import _reconstruct_persistent_obj
        meta = dict(type="class", version=6, module_src="raise SystemExit('source must never run')",
                    class_name=self.class_name, state=self.state)
        return (_reconstruct_persistent_obj, (meta,))


def _nest(flat: dict, class_name: str, kwargs: dict) -> _Persistent:
    """Turn a flat official state dict into a tree of persistent modules."""
    tree: dict = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value

    def build(node, cls, init_kwargs=None):
        params, buffers, modules = collections.OrderedDict(), collections.OrderedDict(), collections.OrderedDict()
        for key, value in node.items():
            if isinstance(value, dict):
                modules[key] = build(value, "Sub")
            elif key in ("w_avg", "noise_const", "grid_pos", "resample_kernel"):
                buffers[key] = value
            else:
                params[key] = torch.nn.Parameter(value, requires_grad=False)
        state = {"_parameters": params, "_buffers": buffers, "_modules": modules, "training": False,
                 "_non_persistent_buffers_set": set()}
        if init_kwargs is not None:
            state["_init_kwargs"] = init_kwargs
            state["_init_args"] = ()
        return _Persistent(cls, state)
    return build(tree, class_name, kwargs)


@pytest.mark.skipif(not REF_PT.is_dir(), reason=f"reference data not found at {REF_PT}")
def test_official_pickle_loads_without_running_code(tmp_path, fake_official_modules) -> None:
    import json
    folder = REF_PT / "A_ganformer_default_32"
    cfg = json.loads((folder / "config.json").read_text())
    G_sd = torch.load(folder / "G_state.pt", weights_only=True)
    D_sd = torch.load(folder / "D_state.pt", weights_only=True)
    data = {"G": _nest(G_sd, "Generator", cfg["G_kwargs"]), "D": _nest(D_sd, "Discriminator", cfg["D_kwargs"]),
            "Gs": _nest(G_sd, "Generator", cfg["G_kwargs"]), "dataset_args": {}}
    path = tmp_path / "network-snapshot-000000.pkl"
    path.write_bytes(pickle.dumps(data))
    nets = load_networks(path)
    inputs = torch.load(folder / "inputs.pt", weights_only=True)
    ref = torch.load(folder / "outputs.pt", weights_only=True)
    with torch.no_grad():
        img = nets["G_ema"](inputs["z"], noise_mode="const")
        logits = nets["D"](inputs["d_img"])
    assert (img - ref["img_psi1_const"]).abs().max() <= 1e-4 * ref["img_psi1_const"].abs().max()
    assert (logits - ref["d_logits_real"]).abs().max() <= 1e-4 * ref["d_logits_real"].abs().max()


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned > /dev/null",))


def test_malicious_pickle_is_refused(tmp_path, monkeypatch) -> None:
    ran = []
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G": _Evil()}))
    monkeypatch.setattr("os.system", lambda *a: ran.append(a))
    with pytest.raises(UserError, match="refusing to load"):
        load_networks(path)
    assert not ran


def test_wrong_kind_of_pickle(tmp_path) -> None:
    path = tmp_path / "list.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(UserError, match="not a GANformer PyTorch snapshot"):
        load_networks(path)
    trunc = tmp_path / "trunc.pkl"
    trunc.write_bytes(pickle.dumps({"a": list(range(1000))})[:50])
    with pytest.raises(UserError, match="damaged"):
        load_networks(trunc)
    torch.save({"x": torch.ones(1)}, tmp_path / "zip.pkl")
    with pytest.raises(UserError, match="zip archive"):
        load_networks(tmp_path / "zip.pkl")


def test_tf_pickle_is_recognised(tmp_path) -> None:
    tf_stub = types.ModuleType("dnnlib.tflib.network")

    class Network:
        def __reduce__(self):
            return (Network, (), {"version": 4, "name": "G"})

    Network.__module__ = "dnnlib.tflib.network"
    Network.__qualname__ = "Network"
    tf_stub.Network = Network
    sys.modules["dnnlib.tflib.network"] = tf_stub
    try:
        data = pickle.dumps((Network(), Network(), Network()))
    finally:
        del sys.modules["dnnlib.tflib.network"]
    path = tmp_path / "tf.pkl"
    path.write_bytes(data)
    with pytest.raises(UserError, match="TensorFlow"):
        load_networks(path)
    assert isinstance(safe_pickle.safe_load(path)[0], safe_pickle.TFNetworkStub)
