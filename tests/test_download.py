"""Downloads (resume, checksums, confirmation pages), safe extraction, and the catalog end to end.

Everything is served by a local HTTP server on 127.0.0.1; nothing leaves the machine.
"""
import dataclasses
import hashlib
import io
import tarfile
import threading
import urllib.parse
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import numpy as np
import PIL.Image
import pytest

from dnnlib import download as dl
from dnnlib.util import UserError
from training.data import catalog, sources
from test_prepare_data import run as _main
from training.data.dataset import ImageDataset


class _Handler(BaseHTTPRequestHandler):
    files: ClassVar[dict] = {}            # name -> body, shared by the module's tests
    log: ClassVar[list] = []              # (path, Range header) of every request
    dropped: ClassVar[set] = set()

    def log_message(self, *args):
        pass

    def _send(self, body: bytes, ctype="application/octet-stream", honour_range=True):
        rng = self.headers.get("Range") if honour_range else None
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        if start >= len(body) and rng:
            self.send_response(416)
            self.end_headers()
            return
        self.send_response(206 if rng else 200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        kind, _, name = url.path.strip("/").partition("/")
        self.log.append((url.path, self.headers.get("Range")))
        if kind == "uc" and "confirm" not in query:          # Google-Drive style warning page
            page = (f'<html><body>too large to scan<form id="download-form" action="/uc" method="get">'
                    f'<input type="hidden" name="id" value="{query["id"]}">'
                    f'<input type="hidden" name="confirm" value="t">'
                    f'</form></body></html>')
            return self._send(page.encode(), "text/html; charset=utf-8")
        name = query["id"] if kind == "uc" else name
        if name not in self.files:
            self.send_error(404)
            return
        body = self.files[name]
        if kind == "drop" and name not in self.dropped:        # die half-way through, once
            self.dropped.add(name)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.close()
            return
        self._send(body, honour_range=kind != "norange")


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _md5(b):
    return hashlib.md5(b).hexdigest()


def test_download_verify_and_mismatch(server, tmp_path):
    body = bytes(range(256)) * 300
    _Handler.files["a.bin"] = body
    out = dl.download(f"{server}/files/a.bin", tmp_path / "a.bin", md5=_md5(body), progress=False)
    assert out.read_bytes() == body
    n = len(_Handler.log)
    dl.download(f"{server}/files/a.bin", tmp_path / "a.bin", md5=_md5(body), progress=False)
    assert len(_Handler.log) == n                      # verified file: no request
    with pytest.raises(UserError, match="checksum mismatch"):
        dl.download(f"{server}/files/a.bin", tmp_path / "b.bin", md5="0" * 32, progress=False)
    assert not (tmp_path / "b.bin").exists() and not (tmp_path / "b.bin.part").exists()
    with pytest.raises(UserError, match="HTTP 404"):
        dl.download(f"{server}/files/missing", tmp_path / "c.bin", progress=False)


def test_download_resumes_with_range(server, tmp_path):
    body = np.random.default_rng(0).bytes(100_000)
    _Handler.files["r.bin"] = body
    part = tmp_path / "r.bin.part"
    part.write_bytes(body[:30_000])                    # left by an interrupted run
    dl.download(f"{server}/files/r.bin", tmp_path / "r.bin", sha256=hashlib.sha256(body).hexdigest(), progress=False)
    assert (tmp_path / "r.bin").read_bytes() == body and ("/files/r.bin", "bytes=30000-") in _Handler.log
    # A server that ignores Range sends everything again: the part restarts.
    part = tmp_path / "s.bin.part"
    part.write_bytes(b"junk")
    dl.download(f"{server}/norange/r.bin", tmp_path / "s.bin", md5=_md5(body), progress=False)
    assert (tmp_path / "s.bin").read_bytes() == body
    # A connection that dies half-way is retried and resumed.
    dl.download(f"{server}/drop/r.bin", tmp_path / "t.bin", md5=_md5(body), progress=False)
    assert (tmp_path / "t.bin").read_bytes() == body and ("/drop/r.bin", "bytes=50000-") in _Handler.log


def test_download_follows_confirmation_page(server, tmp_path):
    _Handler.files["big.zip"] = b"PK-not-really" * 100
    out = dl.download(f"{server}/uc?id=big.zip", tmp_path / "big.zip", md5=_md5(_Handler.files["big.zip"]),
                      progress=False)
    assert out.read_bytes() == _Handler.files["big.zip"]


def _zip(members: dict, symlinks: dict | None = None) -> bytes:
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)
            z.writestr(info, target)
    return b.getvalue()


def _tar(members: list) -> bytes:
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w:gz") as t:
        for name, kind, arg in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(arg)
                t.addfile(info, io.BytesIO(arg))
            else:
                info.type = {"sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE, "dev": tarfile.CHRTYPE}[kind]
                info.linkname = arg
                t.addfile(info)
    return b.getvalue()


@pytest.mark.parametrize("archive, suffix", [
    (_zip({"ok.txt": "x", "../evil.txt": "pwned"}), "zip"),
    (_zip({"/abs/evil.txt": "pwned"}), "zip"),
    (_zip({"ok.txt": "x"}, symlinks={"link": "../../etc/passwd"}), "zip"),
    (_tar([("a/../../evil.txt", "file", b"pwned")]), "tar.gz"),
    (_tar([("link", "sym", "/etc/passwd")]), "tar.gz"),
    (_tar([("d/link", "sym", "../../outside")]), "tar.gz"),
    (_tar([("hard", "hard", "../outside")]), "tar.gz"),
    (_tar([("dev", "dev", "")]), "tar.gz"),
])
def test_extract_rejects_malicious_members(tmp_path, archive, suffix):
    path = tmp_path / f"bad.{suffix}"
    path.write_bytes(archive)
    with pytest.raises(UserError, match="unsafe archive"):
        dl.extract(path, tmp_path / "out" / "x", progress=False)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "evil.txt").exists()
    assert not (tmp_path / "out" / "x").exists()


def test_extract_safe_archives(tmp_path):
    (tmp_path / "a.zip").write_bytes(_zip({"d/one.txt": "1", "d/./two.txt": "2"}))
    out = dl.extract(tmp_path / "a.zip", tmp_path / "za", progress=False)
    assert (out / "d" / "one.txt").read_text() == "1" and (out / "d" / "two.txt").read_text() == "2"
    (tmp_path / "b.tar.gz").write_bytes(_tar([("d/f.txt", "file", b"x"), ("d/l", "sym", "f.txt")]))
    out = dl.extract(tmp_path / "b.tar.gz", tmp_path / "tb", progress=False)
    assert (out / "d" / "l").read_text() == "x"
    (out / "d" / "f.txt").write_text("changed")                 # a completed extraction is reused
    assert (dl.extract(tmp_path / "b.tar.gz", tmp_path / "tb", progress=False) / "d" / "f.txt").read_text() == "changed"


# ---- the catalog, served locally with small archives laid out like the real ones ----

def _padded(n, ratio, seed):
    """8x8 images as the authors' TFRecords hold them: content of aspect `ratio` padded black."""
    a = np.random.default_rng(seed).integers(1, 256, size=(n, 8, 8, 3), dtype=np.uint8)
    h = round(8 * ratio)
    a[:, : (8 - h) // 2] = 0
    a[:, (8 - h) // 2 + h:] = 0
    return a


def _tfrecords_files(prefix, arrays, shards):
    files = {}
    for r, imgs in ((3, arrays), (2, arrays[:, ::2, ::2])):     # two LODs, the reader keeps r03
        for s in range(shards):
            recs = [sources.encode_example({"shape": [3, *a.shape[:2]], "data": [a.transpose(2, 0, 1).tobytes()]})
                    for a in imgs[s::shards]]
            files[f"{prefix}-r{r:02d}.tfrecords{s + 1}of{shards}"] = sources.frame_records(recs)
    return files


def _lmdb_zip(tmp_path, arrays):
    lmdb = pytest.importorskip("lmdb")
    db = tmp_path / "bedroom_train_lmdb"
    with lmdb.open(str(db), map_size=1 << 24) as env, env.begin(write=True) as txn:
        for i, a in enumerate(arrays):
            b = io.BytesIO()
            PIL.Image.fromarray(a).save(b, format="WEBP", lossless=True)
            txn.put(f"{i:040x}".encode(), b.getvalue())
    return _zip({f"bedroom_train_lmdb/{p.name}": p.read_bytes() for p in db.iterdir()})


@pytest.fixture()
def local_catalog(server, tmp_path, monkeypatch):
    imgs = {"ffhq": _padded(3, 1.0, 0), "clevr": _padded(4, 0.75, 1), "cityscapes": _padded(5, 0.5, 2),
            "bedrooms": np.random.default_rng(3).integers(0, 256, size=(3, 12, 16, 3), dtype=np.uint8)}
    bodies = {
        "ffhq": _tfrecords_files("ffhq", imgs["ffhq"], 1)["ffhq-r03.tfrecords1of1"],
        "clevr": _zip(_tfrecords_files("clevr", imgs["clevr"], 2)),
        "cityscapes": _zip(_tfrecords_files("cityscapes", imgs["cityscapes"], 3)),
        "bedrooms": _lmdb_zip(tmp_path, imgs["bedrooms"]),
    }
    entries = {}
    for name, e in catalog.CATALOG.items():
        _Handler.files[e.filename] = bodies[name]
        url = f"{server}/uc?id={e.filename}" if e.url.startswith(catalog.GDRIVE) else f"{server}/files/{e.filename}"
        entries[name] = dataclasses.replace(e, url=url, md5=_md5(bodies[name]))
    monkeypatch.setattr(catalog, "CATALOG", entries)
    return imgs


def test_catalog_end_to_end(local_catalog, tmp_path, capsys):
    assert _main("--ffhq", "--cityscapes", "--clevr", "--bedrooms", "--data-dir", tmp_path / "d") == 0
    out = capsys.readouterr().out
    assert "done: 4 datasets" in out
    order = {"ffhq": [0, 1, 2], "clevr": [0, 2, 1, 3], "cityscapes": [0, 3, 1, 4, 2]}    # round-robin shards
    for name, idx in order.items():
        ds = ImageDataset(tmp_path / "d" / name)
        assert ds.ratio == catalog.CATALOG[name].ratio
        # The authors' padded squares go through crop + pad unchanged.
        assert np.array_equal(ds.get_batch(range(len(ds)))[0].numpy(), local_catalog[name][idx].transpose(0, 3, 1, 2))
    bed = ImageDataset(tmp_path / "d" / "bedrooms")
    assert len(bed) == 3 and bed.resolution == 16 and len(bed.manifest["shards"]) == 3    # 64 shards, capped
    # Running again finds everything in place.
    assert _main("--clevr", "--data-dir", tmp_path / "d") == 0
    assert "already prepared" in capsys.readouterr().out


def test_catalog_checksum_mismatch_and_malicious_archive(local_catalog, tmp_path, capsys, monkeypatch):
    bad = dict(catalog.CATALOG)
    bad["ffhq"] = dataclasses.replace(bad["ffhq"], md5="f" * 32)
    _Handler.files["evil.zip"] = _zip({"../../escaped.txt": "pwned"})
    bad["clevr"] = dataclasses.replace(bad["clevr"], filename="evil.zip", md5=_md5(_Handler.files["evil.zip"]),
                                       url=bad["clevr"].url.replace("clevr.zip", "evil.zip"))
    monkeypatch.setattr(catalog, "CATALOG", bad)
    assert _main("--ffhq", "--data-dir", tmp_path / "d") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "checksum mismatch" in err
    ffhq = tmp_path / "d" / "ffhq"
    assert not list(ffhq.rglob("*.part")) and not (ffhq / "manifest.json").exists()
    assert _main("--clevr", "--data-dir", tmp_path / "d") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unsafe archive" in err
    assert not list(tmp_path.rglob("escaped.txt"))


def test_catalog_offline_says_where_to_put_the_file_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    import socket
    with socket.socket() as s:                           # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    entry = dataclasses.replace(catalog.CATALOG["ffhq"], url=f"http://127.0.0.1:{port}/ffhq-r08.tfrecords1of1")
    monkeypatch.setattr(catalog, "CATALOG", {**catalog.CATALOG, "ffhq": entry})
    monkeypatch.setattr(dl.time, "sleep", lambda s: None)
    assert _main("--ffhq", "--data-dir", tmp_path / "d") == 2
    err = capsys.readouterr().err.strip()
    dest = (tmp_path / "d" / "ffhq" / "downloads" / "ffhq-r08.tfrecords1of1").resolve()
    assert len(err.splitlines()) == 1 and "FFHQ: cannot download" in err
    assert f"to install it by hand, download {entry.url} (md5 {entry.md5}) and save it as {dest}," in err
    assert list((tmp_path / "d").iterdir()) == []          # no empty downloads/ (nor ffhq/) folder left behind
