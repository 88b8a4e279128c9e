"""Official GANformer snapshot pickles, TF or PyTorch, -> our networks (nothing in the file is run)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from training.importers import official_pt, official_tf, safe_pickle


def load_pickle_networks(path: str | Path) -> dict[str, Any]:
    """dict(G, D, G_ema, extra) from an official snapshot pickle of either codebase."""
    data = safe_pickle.safe_load(path)
    if isinstance(data, tuple) and len(data) >= 3 and all(isinstance(x, safe_pickle.TFNetworkStub) for x in data[:3]):
        return official_tf.import_networks(data, Path(path).name)
    return official_pt.import_snapshot(data, path)
