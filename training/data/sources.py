"""Readers of the input formats of `prepare_data.py --format`: png, jpg, npy, hdf5, lmdb, tfrecords, tfds
(and stylegan-zip, in `training.data.stylegan`).

Every reader is a `Source`: a deterministic sequence of items, each with a key (used to match a
labels file), and a payload that `training.data.preprocess.Preprocessor` accepts (a file path, encoded
bytes, or a pixel array [H, W(, C)]). `items(start)` resumes at a position cheaply.

TFRecords (written by the TF GANformer/StyleGAN2 `dataset_tool.py`) are read without TensorFlow:
records are framed as `uint64 length, uint32 masked CRC32C(length), data, uint32 masked
CRC32C(data)`, and `data` is a serialized `tf.train.Example` with features `shape` (int64 x3,
CHW) and `data` (raw uint8 bytes), decoded here by a minimal protobuf parser.
"""
from __future__ import annotations

import glob
import hashlib
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dnnlib.util import UserError

IMAGE_EXTENSIONS = {
    "png": (".png",),
    "jpg": (".jpg", ".jpeg"),
    None: (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"),
}
FORMATS = ("png", "jpg", "npy", "hdf5", "lmdb", "tfrecords", "tfds", "stylegan-zip")


@dataclass
class Item:
    index: int          # position in the source
    key: str            # name for labels files: relative path, database key, or the index
    payload: Any        # path (str), encoded bytes, or pixel array [H, W(, C)]
    label: int | None = None    # a label the source itself carries (npy/hdf5/tfrecords/tfds)


class Source:
    """A deterministic sequence of input items."""
    description: dict            # what was read, for the manifest and the resume fingerprint
    class_names: list[str] | None = None    # set when the source carries its own labels
    ignored: int = 0             # files present but not of the requested format

    def __len__(self) -> int:
        raise NotImplementedError

    def items(self, start: int = 0) -> Iterator[Item]:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# Image folders (png, jpg)

class ImageFolder(Source):
    """Image files under a folder, searched recursively, in sorted path order."""

    def __init__(self, root: str | os.PathLike, fmt: str | None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"--images-dir {root} is not a folder")
        exts = IMAGE_EXTENSIONS[fmt]
        self.files: list[str] = []
        digest = hashlib.sha1()
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            for name in sorted(filenames):
                rel = os.path.relpath(os.path.join(dirpath, name), self.root).replace(os.sep, "/")
                if not name.lower().endswith(exts):
                    self.ignored += 1
                    continue
                st = os.lstat(os.path.join(dirpath, name))      # a dangling link fails later, as a skip
                digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
                self.files.append(rel)
        if not self.files:
            raise UserError(f"no {'/'.join(exts)} files found under {root}")
        self.description = {"format": fmt or "images", "path": str(self.root.resolve()),
                            "files": len(self.files), "listing_sha1": digest.hexdigest()}

    def __len__(self) -> int:
        return len(self.files)

    def items(self, start: int = 0) -> Iterator[Item]:
        for i in range(start, len(self.files)):
            yield Item(i, self.files[i], str(self.root / self.files[i]))


# ---------------------------------------------------------------------------------------------
# Arrays (npy, hdf5)

def _layout(shape: tuple, where: str) -> str:
    """"NHW", "NCHW" or "NHWC" for an image array of this shape."""
    if len(shape) == 3:
        return "NHW"
    if len(shape) == 4:
        if shape[1] in (1, 2, 3, 4) and shape[3] not in (1, 2, 3, 4):
            return "NCHW"
        if shape[3] in (1, 2, 3, 4):
            return "NHWC"
        if shape[1] in (1, 2, 3, 4):
            return "NCHW"
    raise UserError(f"{where}: expected images [N, H, W], [N, C, H, W] or [N, H, W, C], got shape {list(shape)}")


def _int_labels(labels: np.ndarray, n: int, where: str) -> tuple[np.ndarray, list[str]] | None:
    """Class indices from int labels [N] or one-hot rows [N, K]; None (with a note) otherwise."""
    labels = np.asarray(labels)
    one_hot = np.all((labels == 0) | (labels == 1)) and np.all(labels.sum(-1) == 1)
    if labels.ndim == 2 and labels.shape[1] > 0 and one_hot:
        labels = labels.argmax(1)
    if labels.ndim != 1 or len(labels) < n or not np.all(np.mod(labels, 1) == 0) or labels.min(initial=0) < 0:
        print(f"note: ignoring labels in {where}: only class indices or one-hot rows are supported")
        return None
    labels = labels.astype(np.int64)
    k = int(labels.max(initial=-1)) + 1
    return labels, [str(i) for i in range(k)]


class ArraySource(Source):
    """Images in an array-like [N, ...] (numpy memmap or HDF5 dataset), optionally with labels."""

    def __init__(self, data, layout: str, description: dict, labels=None):
        self.data, self.layout, self.description = data, layout, description
        if labels is not None:
            self.labels, self.class_names = labels

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def items(self, start: int = 0) -> Iterator[Item]:
        for i in range(start, len(self)):
            a = np.asarray(self.data[i])
            if self.layout == "NCHW":
                a = a.transpose(1, 2, 0)
            label = int(self.labels[i]) if self.class_names is not None else None
            yield Item(i, str(i), a, label)


def _single_file(path: Path, exts: tuple[str, ...], what: str) -> Path:
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in exts and not p.stem.endswith("-labels"))
        if len(found) != 1:
            raise UserError(f"--images-dir {path}: expected one {what} file there, found {len(found)}")
        return found[0]
    if not path.is_file():
        raise UserError(f"--images-dir {path} does not exist")
    return path


def _side_labels(path: Path, n: int) -> tuple[np.ndarray, list[str]] | None:
    """Labels in `<stem>-labels.npy` next to a data file (the seed's convention)."""
    side = path.with_name(path.stem + "-labels.npy")
    return _int_labels(np.load(side), n, str(side)) if side.is_file() else None


def open_npy(path: str | os.PathLike) -> ArraySource:
    path = _single_file(Path(path), (".npy",), ".npy")
    try:
        data = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path} as a .npy array: {e}") from None
    layout = _layout(data.shape, str(path))
    desc = {"format": "npy", "path": str(path.resolve()), "shape": list(data.shape), "size": path.stat().st_size,
            "mtime_ns": path.stat().st_mtime_ns}
    return ArraySource(data, layout, desc, _side_labels(path, data.shape[0]))


def _import_h5py():
    try:
        import h5py
    except ImportError:
        raise UserError("reading HDF5 needs h5py: pip install h5py") from None
    return h5py


def open_hdf5(path: str | os.PathLike) -> ArraySource:
    """The image dataset of an HDF5 file: among keys "data*" (StyleGAN's `data4x4` ... `data1024x1024`)
    the largest; else "images"/"image"/"imgs"/"x"; else the largest 3-D/4-D dataset."""
    h5py = _import_h5py()
    path = _single_file(Path(path), (".h5", ".hdf5", ".hdf"), "HDF5")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise UserError(f"cannot read {path} as HDF5: {e}") from None
    found: dict[str, Any] = {}
    f.visititems(lambda k, v: found.__setitem__(k, v) if isinstance(v, h5py.Dataset) and v.ndim in (3, 4) else None)
    if not found:
        raise UserError(f"{path}: no 3-D or 4-D image dataset inside")
    data_keys = [k for k in found if k.split("/")[-1].startswith("data")]
    named = [k for k in found if k.split("/")[-1] in ("images", "image", "imgs", "x")]
    key = max(data_keys or named or found, key=lambda k: int(np.prod(found[k].shape[1:])))
    data = found[key]
    labels = None
    if "labels" in f and isinstance(f["labels"], h5py.Dataset):
        labels = _int_labels(f["labels"][()], data.shape[0], f"{path}:labels")
    labels = labels or _side_labels(path, data.shape[0])
    desc = {"format": "hdf5", "path": str(path.resolve()), "key": key, "shape": list(data.shape),
            "size": path.stat().st_size, "mtime_ns": path.stat().st_mtime_ns}
    return ArraySource(data, _layout(data.shape, f"{path}:{key}"), desc, labels)


# ---------------------------------------------------------------------------------------------
# LMDB (LSUN)

class LmdbSource(Source):
    """An LMDB database of encoded images (LSUN: key = image id, value = webp/jpeg bytes)."""

    def __init__(self, path: str | os.PathLike):
        try:
            import lmdb
        except ImportError:
            raise UserError("reading LMDB needs the lmdb package: pip install lmdb") from None
        self.path = Path(path)
        if not (self.path / "data.mdb").is_file():
            raise UserError(f"--images-dir {path} is not an LMDB database (no data.mdb)")
        try:
            self.env = lmdb.open(str(self.path), readonly=True, lock=False, readahead=False, max_readers=64)
        except lmdb.Error as e:
            raise UserError(f"cannot open LMDB database {path}: {e}") from None
        self.entries = int(self.env.stat()["entries"])
        st = (self.path / "data.mdb").stat()
        self.description = {"format": "lmdb", "path": str(self.path.resolve()), "entries": self.entries,
                            "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def __len__(self) -> int:
        return self.entries

    def items(self, start: int = 0) -> Iterator[Item]:
        with self.env.begin(write=False) as txn:
            cursor = txn.cursor()
            if not cursor.first():
                return
            for _ in range(start):              # hop to `start` without copying values
                if not cursor.next():
                    return
            for i, (key, value) in enumerate(cursor, start=start):
                yield Item(i, key.decode("utf-8", "replace"), bytes(value))


# ---------------------------------------------------------------------------------------------
# TFRecords

def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli); pure Python, used for record headers and small records."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    """The CRC that TFRecord framing stores: CRC-32C rotated right by 15 bits plus a constant."""
    return _masked(crc32c(data))


def _fast_crc():
    """A compiled CRC-32C, if one is installed (then record payloads are verified too)."""
    for module, fn in (("google_crc32c", "value"), ("crc32c", "crc32c")):
        try:
            return getattr(__import__(module), fn)
        except (ImportError, AttributeError):
            pass
    return None


def read_records(path: str | os.PathLike, start: int = 0, verify: bool = True) -> Iterator[bytes | None]:
    """Records of one TFRecord file, from record `start`; None for a record whose data is corrupt.

    A damaged header or a truncated tail ends the file (nothing after it can be located).
    """
    fast = _fast_crc() if verify else None
    with open(path, "rb") as f:
        i = 0
        while True:
            head = f.read(12)
            if len(head) < 12:
                if head:
                    yield None          # truncated header
                return
            length, = struct.unpack("<Q", head[:8])
            if struct.unpack("<I", head[8:])[0] != masked_crc(head[:8]):
                yield None
                return
            if i < start:
                f.seek(length + 4, os.SEEK_CUR)
                i += 1
                continue
            data, foot = f.read(length), f.read(4)
            if len(data) < length or len(foot) < 4:
                yield None
                return
            ok = fast is None or struct.unpack("<I", foot)[0] == _masked(fast(data))
            yield data if ok else None
            i += 1


def frame_records(records: list[bytes]) -> bytes:
    """TFRecord file contents (for tests and tools; pure Python CRCs, so keep records small)."""
    out = []
    for r in records:
        head = struct.pack("<Q", len(r))
        out.append(head + struct.pack("<I", masked_crc(head)) + r + struct.pack("<I", masked_crc(r)))
    return b"".join(out)


def write_records(path: str | os.PathLike, records: list[bytes]) -> None:
    Path(path).write_bytes(frame_records(records))


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("bad varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of a protobuf message; length-delimited values as bytes."""
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            n, pos = _varint(buf, pos)
            if pos + n > len(buf):
                raise ValueError("truncated field")
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield field, wire, value


def parse_example(record: bytes) -> dict[str, list]:
    """A serialized tf.train.Example as {feature name: list of values (bytes, float or int)}."""
    out: dict[str, list] = {}
    for f1, _, features in _fields(record):                 # Example.features = 1
        if f1 != 1:
            continue
        for f2, _, entry in _fields(features):              # Features.feature = 1 (map entry)
            if f2 != 1:
                continue
            name, feature = "", b""
            for f3, _, v in _fields(entry):
                if f3 == 1:
                    name = v.decode("utf-8")
                elif f3 == 2:
                    feature = v
            out[name] = _feature_values(feature)
    return out


def _feature_values(feature: bytes) -> list:
    """Values of a Feature: bytes_list = 1, float_list = 2, int64_list = 3 (packed or not)."""
    values: list = []
    for kind, _, lst in _fields(feature):
        for _, wire, v in _fields(lst):
            if kind == 1:
                values.append(v)
            elif kind == 2:
                values.extend(struct.unpack(f"<{len(v) // 4}f", v) if wire == 2 else struct.unpack("<f", v))
            elif kind == 3:
                if wire == 2:
                    pos = 0
                    while pos < len(v):
                        x, pos = _varint(v, pos)
                        values.append(x - (1 << 64) if x >> 63 else x)
                else:
                    values.append(v - (1 << 64) if v >> 63 else v)
    return values


def encode_example(features: dict[str, list]) -> bytes:
    """Serialize a tf.train.Example (ints -> int64_list, bytes -> bytes_list); for tests and tools."""
    def key(field: int, wire: int) -> bytes:
        return encode_varint(field << 3 | wire)

    def ld(field: int, payload: bytes) -> bytes:
        return key(field, 2) + encode_varint(len(payload)) + payload

    entries = b""
    for name, values in features.items():
        if all(isinstance(v, (bytes, bytearray)) for v in values):
            feature = ld(1, b"".join(ld(1, bytes(v)) for v in values))
        else:
            feature = ld(3, ld(1, b"".join(encode_varint(int(v) & ((1 << 64) - 1)) for v in values)))
        entries += ld(1, ld(1, name.encode()) + ld(2, feature))
    return ld(1, entries)


def encode_varint(x: int) -> bytes:
    out = bytearray()
    while True:
        b = x & 0x7F
        x >>= 7
        out.append(b | (0x80 if x else 0))
        if not x:
            return bytes(out)


class TFRecordImage:
    """A raw record payload; decoded into an HWC array by `decode()` (in worker processes)."""
    __slots__ = ("record",)

    def __init__(self, record: bytes):
        self.record = record

    def decode(self) -> np.ndarray:
        ex = parse_example(self.record)
        shape, data = ex.get("shape"), ex.get("data")
        if not shape or not data or len(shape) != 3 or int(np.prod(shape)) != len(data[0]):
            raise ValueError("record is not an image example")
        return np.frombuffer(data[0], np.uint8).reshape(shape).transpose(1, 2, 0)   # CHW -> HWC


_LOD_RE = re.compile(r"-r(\d+)\.tfrecords")
_SHARD_RE = re.compile(r"tfrecords(\d+)of(\d+)$")


def _tfrecord_files(path: Path) -> list[Path]:
    """The files of the highest resolution among `*.tfrecords*` files (TF tools write one set per LOD)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise UserError(f"--images-dir {path} does not exist")
    files = [Path(p) for p in glob.glob(str(path / "**" / "*.tfrecords*"), recursive=True) if Path(p).is_file()]
    if not files:
        raise UserError(f"no *.tfrecords files found under {path}")
    top = max(_number(_LOD_RE, p.name, -1) for p in files)
    chosen = [p for p in files if _number(_LOD_RE, p.name, -1) == top]
    return sorted(chosen, key=lambda p: (str(p.parent), _SHARD_RE.sub("", p.name), _number(_SHARD_RE, p.name, 0)))


def _number(pattern: re.Pattern, name: str, default: int) -> int:
    m = pattern.search(name)
    return int(m.group(1)) if m else default


class TFRecordSource(Source):
    """Images in TFRecord files of the TF GANformer/StyleGAN2 tools (optionally `*-rxx.labels`)."""

    def __init__(self, path: str | os.PathLike):
        self.files = _tfrecord_files(Path(path))
        self.counts = [sum(1 for _ in _record_offsets(p)) for p in self.files]
        self.description = {"format": "tfrecords", "files": [str(p.resolve()) for p in self.files],
                            "sizes": [p.stat().st_size for p in self.files], "records": sum(self.counts)}
        guess = sorted(self.files[0].parent.glob("*.labels"))
        if guess:
            labels = _int_labels(np.load(guess[0]), len(self), str(guess[0]))
            if labels is not None:
                self.labels, self.class_names = labels

    def __len__(self) -> int:
        return sum(self.counts)

    def items(self, start: int = 0) -> Iterator[Item]:
        base = 0
        for path, count in zip(self.files, self.counts):
            if start < base + count:
                for i, rec in enumerate(read_records(path, max(0, start - base)), start=max(start, base)):
                    label = int(self.labels[i]) if self.class_names is not None and i < len(self.labels) else None
                    yield Item(i, str(i), TFRecordImage(rec) if rec is not None else None, label)
            base += count


def _record_offsets(path: Path) -> Iterator[int]:
    """Offsets of the records of a TFRecord file, found by hopping over the length headers."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        pos = 0
        while pos + 12 <= size:
            f.seek(pos)
            length, = struct.unpack("<Q", f.read(8))
            if pos + 16 + length > size:
                yield pos                    # truncated last record: reported as skipped when read
                return
            yield pos
            pos += 16 + length


# ---------------------------------------------------------------------------------------------
# TensorFlow Datasets

class TfdsSource(Source):
    """The "train" split of a TensorFlow Datasets dataset (`--images-dir` = its name, e.g. "cifar10")."""

    def __init__(self, name: str, data_dir: str | os.PathLike):
        try:
            import tensorflow_datasets as tfds
        except ImportError:
            raise UserError("--format tfds needs TensorFlow Datasets: "
                            "pip install tensorflow-datasets tensorflow") from None
        self.tfds = tfds
        try:
            self.ds, info = tfds.load(name, split="train", data_dir=str(data_dir), with_info=True)
        except Exception as e:  # noqa: BLE001 (tfds raises many types: unknown name, download errors)
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"tfds could not load {name!r}: {why}") from None
        self.count = int(info.splits["train"].num_examples)
        try:
            label = info.features["label"]
        except (KeyError, TypeError, AttributeError):
            label = None
        if label is not None and getattr(label, "names", None):
            self.class_names = list(label.names)
        self.description = {"format": "tfds", "name": name, "examples": self.count}

    def __len__(self) -> int:
        return self.count

    def items(self, start: int = 0) -> Iterator[Item]:
        for i, ex in enumerate(self.tfds.as_numpy(self.ds)):
            if "image" not in ex:
                raise UserError(f"tfds dataset {self.description['name']!r} has no 'image' feature "
                                f"(it has: {', '.join(sorted(ex))})")
            if i >= start:
                label = int(ex["label"]) if self.class_names is not None and "label" in ex else None
                yield Item(i, str(i), np.asarray(ex["image"]), label)


def open_source(fmt: str | None, images_dir: str | os.PathLike, tfds_dir: str | os.PathLike | None = None) -> Source:
    """The reader for `--format fmt` (None: png/jpg/... image files) on `--images-dir`."""
    if fmt not in FORMATS and fmt is not None:
        raise UserError(f"unknown --format {fmt!r}; choose from {', '.join(FORMATS)}")
    if fmt == "tfds":
        return TfdsSource(str(images_dir), tfds_dir or Path(".tfds"))
    if not os.path.exists(images_dir):
        raise UserError(f"--images-dir {images_dir} does not exist")
    if fmt in ("png", "jpg", None):
        return ImageFolder(images_dir, fmt)
    if fmt == "stylegan-zip":
        from training.data.stylegan import open_stylegan
        return open_stylegan(images_dir)
    return {"npy": open_npy, "hdf5": open_hdf5, "lmdb": LmdbSource, "tfrecords": TFRecordSource}[fmt](images_dir)
