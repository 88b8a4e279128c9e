"""What a training run folder shows while it grows: curves from stats.jsonl and the newest sample grids."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Optional

from training.checkpoint import KIMG_RE

GRIDS = ("fakes", "attention", "reals")  # training_loop: <name>-<kimg_tag|latest>.png, and reals.png
GRID_RE = re.compile(rf"^(fakes|attention)-(?:{KIMG_RE}|latest)\.png$")      # group 2: kimg, None for latest
SKIP_KEYS = ("timestamp", "kimg")
MAX_POINTS = 1000                        # curves are thinned to at most this many points


def read_stats(run_dir: str | Path, max_points: int = MAX_POINTS) -> dict:
    """{'kimg': [...], 'series': {key: [value or None, ...]}} from stats.jsonl (half-written lines skipped)."""
    path = Path(run_dir) / "stats.jsonl"
    records = []
    if path.is_file():
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue                         # the line being written right now, or damage
                if isinstance(rec, dict) and isinstance(rec.get("kimg"), (int, float)):
                    records.append(rec)
    keep = list(range(0, len(records), max(1, math.ceil(len(records) / max_points))))
    if keep and keep[-1] != len(records) - 1:
        keep.append(len(records) - 1)                # always show the newest point
    records = [records[i] for i in keep]
    keys = sorted({k for r in records for k, v in r.items() if k not in SKIP_KEYS and _finite(v)})
    return {"kimg": [r["kimg"] for r in records],
            "series": {k: [r[k] if _finite(r.get(k)) else None for r in records] for k in keys}}


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def latest_grid(run_dir: str | Path, name: str) -> Optional[Path]:
    """The newest `<name>-*.png` of a run folder (the last written; then by kimg), or None; reals.png as it is."""
    if name == "reals":
        path = Path(run_dir) / "reals.png"
        return path if path.is_file() else None
    best = None
    for p in Path(run_dir).glob(f"{name}-*.png"):
        m = GRID_RE.match(p.name)
        if m and m.group(1) == name:
            key = (p.stat().st_mtime, math.inf if m.group(2) is None else float(m.group(2)))
            best = max(best, (key, p)) if best else (key, p)
    return best[1] if best else None


def run_summary(run_dir: str | Path) -> dict:
    """Stats and the names (with change times, for cache busting) of the newest grids."""
    grids = {}
    for name in GRIDS:
        p = latest_grid(run_dir, name)
        if p is not None:
            grids[name] = {"file": p.name, "mtime": p.stat().st_mtime}
    return {"stats": read_stats(run_dir), "grids": grids}
