"""Downloads that resume, checksums, and archive extraction that cannot escape its folder.

* `download(url, dest, md5=..., sha256=...)`: streams into `dest.part` and resumes it with an HTTP
  Range request after an interruption; a Google-Drive style "can't scan this file for viruses"
  page is followed to the file; the checksum is verified before `dest.part` becomes `dest`.
* `extract(archive, folder)`: zip and tar (gz/bz2/xz); every member is checked first, and an
  absolute path, a `..` escape, a link pointing outside `folder` or a device file rejects the
  whole archive with a UserError; extraction goes to a temporary folder renamed when complete.
"""
from __future__ import annotations

import functools
import hashlib
import html
import http.client
import http.cookiejar
import os
import re
import shutil
import stat
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from .util import UserError

CHUNK = 1 << 20
USER_AGENT = "ganformer-download/1.0"
EXTRACTED_MARKER = ".extracted"


def file_hash(path: str | os.PathLike, algorithm: str = "md5", progress: bool = False) -> str:
    """Hex digest of a file."""
    h = hashlib.new(algorithm)
    size = os.path.getsize(path)
    with open(path, "rb") as f, _bar(size, f"checking {Path(path).name}", progress and size > (256 << 20)) as bar:
        for block in iter(lambda: f.read(CHUNK * 8), b""):
            h.update(block)
            bar.update(len(block))
    return h.hexdigest()


def verify(path: str | os.PathLike, md5: str | None = None, sha256: str | None = None,
           progress: bool = False) -> tuple[bool, str]:
    """(matches, description of the mismatch). A file with no expected checksum matches."""
    for algo, want in (("md5", md5), ("sha256", sha256)):
        if want:
            got = file_hash(path, algo, progress)
            if got.lower() != want.lower():
                return False, f"{algo} {got}, expected {want}"
    return True, ""


def _stamp(path: Path, md5: str | None, sha256: str | None) -> str:
    st = path.stat()
    return f"{st.st_size} {st.st_mtime_ns} {md5 or '-'} {sha256 or '-'}"


def _verified_before(path: Path, md5: str | None, sha256: str | None) -> bool:
    """True when a `.verified` stamp says this very file (size, mtime) matched these checksums."""
    stamp = path.with_name(path.name + ".verified")
    try:
        return stamp.read_text().strip() == _stamp(path, md5, sha256)
    except OSError:
        return False


def _remember_verified(path: Path, md5: str | None, sha256: str | None) -> None:
    if md5 or sha256:       # a stamp saves re-hashing tens of GB on every run
        path.with_name(path.name + ".verified").write_text(_stamp(path, md5, sha256) + "\n")


def _bar(total: int | None, desc: str, enabled: bool, initial: int = 0):
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                disable=None if enabled else True, dynamic_ncols=True, leave=False)


def _opener() -> urllib.request.OpenerDirector:
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    opener.addheaders = [("User-Agent", USER_AGENT)]
    return opener


def _confirm_url(page: str, url: str, cookies: dict[str, str]) -> str | None:
    """The real download link behind a Google-Drive style confirmation page, if there is one."""
    form = re.search(r'<form[^>]*id="download-form"[^>]*action="([^"]+)"[^>]*>(.*?)</form>', page, re.DOTALL)
    if form:
        fields = re.findall(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"', form.group(2))
        action = urllib.parse.urljoin(url, html.unescape(form.group(1)))
        return action + ("&" if "?" in action else "?") + urllib.parse.urlencode(fields)
    link = re.search(r'href="([^"]*confirm=[0-9A-Za-z_-]+[^"]*)"', page)
    if link:
        return urllib.parse.urljoin(url, html.unescape(link.group(1)))
    token = next((v for k, v in cookies.items() if k.startswith("download_warning")), None)
    if token:
        return url + ("&" if "?" in url else "?") + "confirm=" + urllib.parse.quote(token)
    return None


def _open(opener, url: str, offset: int, timeout: float):
    req = urllib.request.Request(url)
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    return opener.open(req, timeout=timeout)


def _fetch(url: str, part: Path, timeout: float, progress: bool, name: str) -> None:
    """Append the rest of `url` to `part` (resuming at its size when the server allows it)."""
    opener = _opener()
    jar = next(h.cookiejar for h in opener.handlers if isinstance(h, urllib.request.HTTPCookieProcessor))
    for _hop in range(3):
        offset = part.stat().st_size if part.exists() else 0
        try:
            resp = _open(opener, url, offset, timeout)
        except urllib.error.HTTPError as e:
            if e.code == 416 and offset:          # nothing left past our offset: the part is whole
                return
            raise
        with resp:
            if "text/html" in resp.headers.get("Content-Type", "") and not name.lower().endswith((".html", ".htm")):
                page = resp.read(1 << 20).decode("utf-8", "replace")
                nxt = _confirm_url(page, resp.geturl(), {c.name: c.value for c in jar})
                if nxt is None:
                    raise UserError(f"{url} returned a web page instead of {name} (quota exceeded or link moved?)")
                url = nxt
                continue
            append = offset and resp.status == 206
            length = resp.headers.get("Content-Length")
            total = (int(length) + (offset if append else 0)) if length else None
            with open(part, "ab" if append else "wb") as f, \
                    _bar(total, name, progress, initial=offset if append else 0) as bar:
                for block in iter(functools.partial(resp.read, CHUNK), b""):
                    f.write(block)
                    bar.update(len(block))
            if total is not None and part.stat().st_size < total:
                raise ConnectionError(f"connection closed at {part.stat().st_size} of {total} bytes")
            return
    raise UserError(f"{url}: too many confirmation pages")


def download(url: str, dest: str | os.PathLike, *, md5: str | None = None, sha256: str | None = None,
             retries: int = 3, timeout: float = 60.0, progress: bool = True) -> Path:
    """Download `url` to `dest` unless a file with the right checksum is there; return `dest`.

    Interrupted downloads resume from `dest.part` (also across runs). A checksum mismatch deletes
    the download and raises a UserError, so the next run starts afresh.
    """
    dest = Path(dest)
    if dest.exists():
        if _verified_before(dest, md5, sha256) or verify(dest, md5, sha256, progress)[0]:
            _remember_verified(dest, md5, sha256)
            return dest
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _fetch(url, part, timeout, progress, dest.name)
            break
        except UserError:
            raise
        except (OSError, http.client.HTTPException) as e:  # HTTP errors, timeouts, resets, short reads
            if isinstance(e, urllib.error.HTTPError) and e.code in (401, 403, 404, 410):
                raise UserError(f"cannot download {url}: HTTP {e.code} {e.reason}") from None
            if attempt == retries:
                reason = getattr(e, "reason", None) or e
                raise UserError(f"cannot download {url} after {retries + 1} attempts: {reason}") from None
            time.sleep(min(30.0, 2.0 ** attempt))
    ok, why = verify(part, md5, sha256, progress)
    if not ok:
        part.unlink()
        raise UserError(f"checksum mismatch for {dest.name} from {url}: {why}; the download was deleted")
    os.replace(part, dest)
    _remember_verified(dest, md5, sha256)
    return dest


# ---------------------------------------------------------------------------------------------
# Extraction

def _inside(name: str, what: str, archive: Path) -> PurePosixPath:
    """The member path, normalised; a UserError if it is absolute or climbs out of the folder."""
    p = name.replace("\\", "/")
    if p.startswith("/") or re.match(r"^[A-Za-z]:", p):
        raise UserError(f"unsafe archive {archive.name}: {what} {name!r} has an absolute path")
    parts: list[str] = []
    for part in PurePosixPath(p).parts:
        if part == "..":
            if not parts:
                raise UserError(f"unsafe archive {archive.name}: {what} {name!r} escapes the target folder")
            parts.pop()
        elif part not in (".", ""):
            parts.append(part)
    return PurePosixPath(*parts)


def _link_inside(member: str, target: str, archive: Path, hard: bool) -> None:
    if target.startswith("/") or re.match(r"^[A-Za-z]:", target):
        raise UserError(f"unsafe archive {archive.name}: link {member!r} points to absolute {target!r}")
    base = "" if hard else str(PurePosixPath(_inside(member, "link", archive)).parent)
    _inside(f"{base}/{target}" if base not in ("", ".") else target, f"link {member!r} ->", archive)


def check_zip(zf: zipfile.ZipFile, archive: Path) -> None:
    for info in zf.infolist():
        _inside(info.filename, "member", archive)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            _link_inside(info.filename, zf.read(info).decode("utf-8", "replace"), archive, hard=False)


def check_tar(tf: tarfile.TarFile, archive: Path) -> None:
    for m in tf.getmembers():
        _inside(m.name, "member", archive)
        if m.issym() or m.islnk():
            _link_inside(m.name, m.linkname, archive, hard=m.islnk())
        elif not (m.isfile() or m.isdir()):
            raise UserError(f"unsafe archive {archive.name}: member {m.name!r} is a device or fifo")


def extract(archive: str | os.PathLike, folder: str | os.PathLike, progress: bool = True) -> Path:
    """Extract a zip/tar archive into `folder` (skipped if a previous extraction completed)."""
    archive, folder = Path(archive), Path(folder)
    marker = folder / EXTRACTED_MARKER
    stamp = f"{archive.name} {archive.stat().st_size} {archive.stat().st_mtime_ns}"
    if marker.exists() and marker.read_text().strip() == stamp:
        return folder
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, tmp, progress)
        elif _is_tar(archive):
            _extract_tar(archive, tmp, progress)
        else:
            raise UserError(f"{archive} is not a zip or tar archive")
        (tmp / EXTRACTED_MARKER).write_text(stamp + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _is_tar(archive: Path) -> bool:
    try:
        return tarfile.is_tarfile(archive)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:     # a truncated .tar.gz fails already here
        raise UserError(f"corrupt archive {archive}: {e}") from None


def _extract_zip(archive: Path, dest: Path, progress: bool) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            check_zip(zf, archive)
            infos = zf.infolist()
            with _bar(sum(i.file_size for i in infos), f"extracting {archive.name}", progress) as bar:
                for info in infos:
                    zf.extract(info, dest)
                    bar.update(info.file_size)
    except (zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"corrupt archive {archive}: {e}") from None


def _extract_tar(archive: Path, dest: Path, progress: bool) -> None:
    try:
        with tarfile.open(archive) as tf:
            check_tar(tf, archive)
            members = tf.getmembers()
            with _bar(sum(m.size for m in members), f"extracting {archive.name}", progress) as bar:
                # Members were checked above; the "data" filter (when Python has it) adds a second guard.
                kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                for m in members:
                    tf.extract(m, dest, **kwargs)
                    bar.update(m.size)
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise UserError(f"corrupt or unsafe archive {archive}: {e}") from None
