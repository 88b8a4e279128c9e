"""Read network pickles written by other code without executing anything from them.

A pickle can call any importable function while loading. `SafeUnpickler` admits only an explicit
list of globals, each replaced by a harmless stand-in (tensors are rebuilt by `torch.load` with
`weights_only=True`); every other global is refused before anything runs. Persistent modules of the
official PyTorch port (which embed their source code and `exec` it on load) become `ModuleStub`s:
their constructor kwargs and tensors are read, their source is never compiled.
"""
from __future__ import annotations

import collections
import io
import pickle
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from dnnlib.util import UserError

try:
    from numpy._core import multiarray as _np_multiarray
except ImportError:  # numpy < 2
    from numpy.core import multiarray as _np_multiarray


class ModuleStub:
    """Stands in for a pickled module: keeps its class name and its attribute dict."""

    def __init__(self, class_name: str = "", state: Any = None):
        self.class_name, self.state = class_name, state or {}

    def __setstate__(self, state: Any) -> None:   # plain torch.nn modules arrive through BUILD
        self.state = state if isinstance(state, dict) else {}

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """The module tree's parameters and persistent buffers, flattened like a state_dict."""
        out: dict[str, torch.Tensor] = {}
        skip = set(self.state.get("_non_persistent_buffers_set") or ())
        for group in ("_parameters", "_buffers"):
            for name, t in (self.state.get(group) or {}).items():
                if t is not None and name not in skip:
                    out[prefix + name] = t.detach() if isinstance(t, torch.Tensor) else torch.as_tensor(t)
        for name, sub in (self.state.get("_modules") or {}).items():
            if isinstance(sub, ModuleStub):
                out.update(sub.tensors(f"{prefix}{name}."))
        return out

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs") or {})


class TFNetworkStub(dict):
    """Stands in for a TF `dnnlib.tflib.network.Network` (its state is a plain dict)."""

    def __setstate__(self, state: Any) -> None:
        self.update(state if isinstance(state, dict) else {})


class EasyDictStub(dict):
    pass


def _persistent(meta: dict) -> ModuleStub:
    meta = dict(meta)
    return ModuleStub(str(meta.get("class_name", "")), dict(meta.get("state") or {}))


def _storage_from_bytes(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _torch_module_stub(name: str) -> Callable[..., ModuleStub]:
    class _Stub(ModuleStub):
        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(name)
    _Stub.__name__ = name
    return _Stub


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent,
    ("dnnlib", "EasyDict"): EasyDictStub,
    ("dnnlib.util", "EasyDict"): EasyDictStub,
    ("dnnlib.tflib.network", "Network"): TFNetworkStub,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "scalar"): _np_multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _np_multiarray.scalar,
    ("numpy.core.multiarray", "_reconstruct"): _np_multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_multiarray._reconstruct,
    ("numpy", "ndarray"): np.ndarray,
}


# A TensorFlow snapshot references exactly these (README of the official-tf reference data).
_TF_NETWORK = ("dnnlib.tflib.network", "Network")
_TF_GLOBALS = {_TF_NETWORK, ("numpy", "dtype"), ("numpy", "ndarray")} | {
    (m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("scalar", "_reconstruct")}


class RefusedGlobal(pickle.UnpicklingError):
    pass


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals to safe stand-ins.

    Once a TF Network has been named, only the TF globals stay admitted; once a PyTorch one has, the
    TF Network is refused: each kind of pickle gets just the globals it can contain.
    """

    kind: Optional[str] = None        # "tf" / "pt" once recognised

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key == _TF_NETWORK and self.kind != "pt":
            self.kind = "tf"
        elif self.kind == "tf" and key not in _TF_GLOBALS or key == _TF_NETWORK:
            raise RefusedGlobal(f"{module}.{name}", "a TensorFlow" if self.kind == "tf" else "a PyTorch")
        elif key not in _TF_GLOBALS:
            self.kind = "pt"
        target = _ALLOWED.get(key)
        if target is not None:
            return target
        if module.startswith("torch.nn.modules.") and name[:1].isupper():
            return _torch_module_stub(name)
        raise RefusedGlobal(f"{module}.{name}", "a")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not supported")


def safe_load(path: str | Path) -> Any:
    """Unpickle `path` with SafeUnpickler; any problem becomes a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model not found: {path}")
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            if head[:1] != b"\x80" and head != b"PK":
                raise UserError(f"{path} is not a pickle file")
            if head == b"PK":
                raise UserError(f"{path} is a zip archive (torch.save format), not a network pickle; "
                                f"pass the folder holding it with config.json, or a snapshot .pkl")
            return SafeUnpickler(f).load()
    except RefusedGlobal as e:
        raise UserError(f"refusing to load {path}: it references {e.args[0]}, which {e.args[1]} network pickle "
                        f"does not need (nothing from the file was run)") from None
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated/corrupt data surfaces as many exception types
        raise UserError(f"cannot read {path}: damaged or not a network pickle ({type(e).__name__}: {e})") from None
