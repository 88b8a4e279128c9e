"""`gdrive:` names: resolved to the official locations, downloaded once into the cache, then imported.

Downloads are tested against a local HTTP server on 127.0.0.1 standing in for the official host
(through the mirror variable), never against the network.
"""
from __future__ import annotations

import hashlib
import http.server
import shutil
import socket
import threading

import numpy as np
import pytest
import torch

from conftest import REF_TF
from dnnlib.util import UserError
from training.checkpoint import load_networks
from training.importers import pretrained

SOURCE = REF_TF / "F_clevr_64" / "network-snapshot-000000.pkl"    # the smallest TF snapshot
NAME = "gdrive:clevr-snapshot.pkl"

pytestmark = pytest.mark.skipif(not SOURCE.is_file(), reason=f"reference data not found at {REF_TF}")


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        super().do_GET()

    def log_message(self, *args) -> None:   # keep the test output quiet
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A local server of `served/`; the cache goes to tmp_path/cache."""
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(SOURCE, served / "clevr-snapshot.pkl")
    _Handler.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                            lambda *a, **k: _Handler(*a, directory=str(served), **k))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("GANFORMER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(pretrained.MIRROR_ENV, f"http://127.0.0.1:{httpd.server_address[1]}/")
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_official_names_and_locations() -> None:
    names = pretrained.known_names()
    for ds in ("clevr", "cityscapes", "ffhq", "bedrooms"):
        assert f"gdrive:{ds}-snapshot.pkl" in names
    assert {"gdrive:ffhq-snapshot-1024.pkl", "gdrive:cityscapes-snapshot-2048.pkl"} <= set(names)
    assert pretrained.url_for("gdrive:ffhq-snapshot.pkl") == \
        "https://drive.google.com/uc?id=1-b0vwevUQs6LI_EybdO8XJ5uYSx63vEa"


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UserError) as e:
        load_networks("gdrive:horses-snapshot.pkl")
    msg = str(e.value)
    assert "\n" not in msg and all(name in msg for name in pretrained.known_names())


def test_download_once_then_cached(server, tmp_path) -> None:
    nets = load_networks(NAME)
    assert _Handler.requests == ["/clevr-snapshot.pkl"]
    cached = tmp_path / "cache" / "pretrained" / "clevr-snapshot.pkl"
    assert cached.read_bytes() == SOURCE.read_bytes()
    z = torch.from_numpy(np.load(SOURCE.parent / "inputs.npz")["z"])
    ref = np.load(SOURCE.parent / "outputs.npz")["img_psi1"]
    with torch.no_grad():
        img = nets["G_ema"](z, truncation_psi=1.0, noise_mode="const").numpy()
    assert np.abs(img - ref).max() <= 1e-3 * np.abs(ref).max()
    server.shutdown()                       # from now on only the cache can serve it
    assert set(load_networks(NAME)) >= {"G", "D", "G_ema"}
    assert len(_Handler.requests) == 1


def test_generate_accepts_gdrive_names(server, tmp_path) -> None:
    import generate

    generate.main(["--model", NAME, "--seeds", "0-1", "--output-dir", str(tmp_path / "img")])
    assert sorted(p.name for p in (tmp_path / "img").iterdir()) == ["seed000000.png", "seed000001.png"]


def test_checksum_is_verified(server, tmp_path, monkeypatch) -> None:
    good = hashlib.md5(SOURCE.read_bytes()).hexdigest()
    entry = pretrained.PRETRAINED["clevr-snapshot.pkl"]
    wrong = pretrained.Pretrained(entry.drive_id, "64", "0" * 32)
    monkeypatch.setitem(pretrained.PRETRAINED, "clevr-snapshot.pkl", wrong)
    with pytest.raises(UserError, match="checksum mismatch") as e:
        pretrained.fetch(NAME, progress=False)
    assert "\n" not in str(e.value)
    assert not list((tmp_path / "cache" / "pretrained").iterdir())      # nothing half-trusted is kept
    monkeypatch.setitem(pretrained.PRETRAINED, "clevr-snapshot.pkl", pretrained.Pretrained(entry.drive_id, "64", good))
    assert pretrained.fetch(NAME, progress=False).read_bytes() == SOURCE.read_bytes()


def test_offline_says_where_to_put_the_file(tmp_path, monkeypatch) -> None:
    with socket.socket() as s:              # a port on which nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("GANFORMER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(pretrained.MIRROR_ENV, f"http://127.0.0.1:{port}")
    monkeypatch.setattr(pretrained, "RETRIES", 0)
    with pytest.raises(UserError) as e:
        load_networks(NAME)
    msg, dest = str(e.value), tmp_path / "cache" / "pretrained" / "clevr-snapshot.pkl"
    assert "\n" not in msg and f"http://127.0.0.1:{port}/clevr-snapshot.pkl" in msg and str(dest) in msg
    # Put by hand where the message says: then it loads without any network.
    shutil.copy(SOURCE, dest)
    assert "G_ema" in load_networks(NAME)


def test_first_download_recorded_and_verified_on_later_use(server, tmp_path) -> None:
    """gdrive: files have no published checksum: size and SHA-256 are recorded on first download, and a
    cached file that changed since is refused (one line) instead of being imported."""
    import json

    path = pretrained.fetch(NAME, progress=False)
    rec = json.loads(pretrained.record_path(path).read_text())
    assert rec == {"size": SOURCE.stat().st_size, "sha256": hashlib.sha256(SOURCE.read_bytes()).hexdigest()}
    assert pretrained.fetch(NAME, progress=False) == path           # unchanged: accepted, not downloaded again
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF                                     # same size, one byte flipped
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="changed since its first download") as e:
        load_networks(NAME)
    assert "\n" not in str(e.value) and len(_Handler.requests) == 1
