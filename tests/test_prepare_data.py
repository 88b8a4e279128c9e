"""prepare_data.py: every input format round-trips; bad input ends with one clear line."""
import io
import json
import subprocess
import sys
import types

import numpy as np
import PIL.Image
import pytest

import prepare_data
from training.data import sources, writer as dataset_writer
from training.data.dataset import ImageDataset
from training.data.preprocess import Preprocessor

REPO = prepare_data.__file__.rsplit("/", 1)[0]


def run(*argv):
    """prepare_data.main in-process; returns the exit code (one decoding process unless given)."""
    argv = [str(a) for a in argv]
    try:
        prepare_data.main(argv + ([] if "--workers" in argv else ["--workers", "1"]))
        return 0
    except SystemExit as e:
        return e.code


def _arrays(n, h=8, w=8, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, c), dtype=np.uint8)


def _stored(data_dir, name):
    ds = ImageDataset(data_dir / name, use_labels=True)
    images, labels = ds.get_batch(range(len(ds)))
    return images.numpy(), labels.numpy(), ds.manifest


def _png(arr, path, **kw):
    PIL.Image.fromarray(arr).save(path, **kw)


def test_png_folder_round_trip_with_bad_files(tmp_path, capsys):
    src = tmp_path / "imgs"
    (src / "sub").mkdir(parents=True)
    arrs = _arrays(4)
    for i, a in enumerate(arrs):
        _png(a, src / ("sub" if i % 2 else "") / f"img{i}.png")
    (src / "empty.png").write_bytes(b"")
    (src / "text.png").write_text("not an image")
    (src / "trunc.png").write_bytes((src / "img0.png").read_bytes()[:60])
    (src / "notes.txt").write_text("hello")
    (src / "dangling.png").symlink_to(src / "nowhere.png")
    assert run("--task", "pngs", "--images-dir", src, "--format", "png", "--data-dir", tmp_path / "d") == 0
    out = capsys.readouterr().out
    assert "wrote 4 images" in out and "skipped 4 (1 empty, 1 not an image, 2 unreadable)" in out
    assert "ignored 1 other file" in out
    images, _, manifest = _stored(tmp_path / "d", "pngs")
    order = [0, 2, 1, 3]                    # sorted paths: img0, img2, sub/img1, sub/img3
    assert np.array_equal(images, arrs[order].transpose(0, 3, 1, 2)) and manifest["labels"] is None
    # Same command again: recognised as complete.
    assert run("--task", "pngs", "--images-dir", src, "--format", "png", "--data-dir", tmp_path / "d") == 0
    assert "already prepared" in capsys.readouterr().out
    # Two decoding processes give the same bytes.
    assert run("--task", "p2", "--images-dir", src, "--workers", 2, "--data-dir", tmp_path / "d") == 0
    assert _stored(tmp_path / "d", "p2")[2]["content_hash"] == manifest["content_hash"]


def test_jpg_exif_modes_ratio_and_labels(tmp_path):
    src = tmp_path / "imgs"
    src.mkdir()
    img = np.zeros((20, 40, 3), np.uint8)
    img[:10] = (255, 0, 0)                  # top half red, bottom half blue
    img[10:] = (0, 0, 255)
    exif = PIL.Image.Exif()
    exif[0x0112] = 6                        # display = stored image rotated 90 degrees clockwise
    PIL.Image.fromarray(img).save(src / "a.jpg", quality=95, exif=exif)
    PIL.Image.fromarray(img.transpose(1, 0, 2)).convert("CMYK").save(src / "b.jpeg", quality=95)
    PIL.Image.fromarray(np.full((16, 16), 200, np.uint8)).save(src / "c.jpg", quality=95)
    (src / "labels.csv").write_text("file,class\na.jpg,cat\nb.jpeg,dog\nc,cat\n")
    assert run("--task", "j", "--images-dir", src, "--format", "jpg", "--ratio", 0.5, "--resolution", 16,
               "--labels", src / "labels.csv", "--data-dir", tmp_path / "d") == 0
    images, labels, m = _stored(tmp_path / "d", "j")
    assert images.shape == (3, 3, 16, 16) and m["ratio"] == 0.5
    assert labels.tolist() == [0, 1, 0] and m["class_names"] == ["cat", "dog"]
    # a.jpg displays 20 wide x 40 tall: blue left, red right. The ratio crop keeps the middle
    # 20x10 band, padded with black above and below (rows 4..11 of 16).
    a = images[0].astype(int)
    assert a[2, 8, 3] > 200 and a[0, 8, 3] < 60 and a[0, 8, 12] > 200 and a[:, 1].max() < 30
    b = images[1].astype(int)               # CMYK 20x40 (red left, blue right) decoded as RGB
    assert b[0, 8, 3] > 200 and b[2, 8, 12] > 200 and b[:, 1].max() < 30
    c = images[2].astype(int)               # grey 16x16 -> 16x8 band, channels expanded to RGB
    assert np.all(np.abs(c[:, 4:12] - 200) <= 3) and c[:, :4].max() == 0 and c[:, 12:].max() == 0


def test_png_modes_16bit_palette_rgba(tmp_path):
    src = tmp_path / "imgs"
    src.mkdir()
    grey16 = np.full((8, 8), 257 * 100, np.uint16)
    PIL.Image.fromarray(grey16).save(src / "a.png")
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 1], rgba[..., 3] = 200, 128
    _png(rgba, src / "b.png")
    PIL.Image.fromarray(_arrays(1)[0]).convert("P").save(src / "c.png")
    assert run("--task", "m", "--images-dir", src, "--data-dir", tmp_path / "d") == 0
    images, _, m = _stored(tmp_path / "d", "m")
    assert m["channels"] == 3 and images.shape == (3, 3, 8, 8)        # one colour image makes it colour
    assert np.all(images[0] == 100) and np.all(np.abs(images[1][1].astype(int) - 100) <= 1) and images[1][0].max() == 0


def test_npy_round_trip_with_labels(tmp_path):
    arrs = _arrays(5, 8, 8, 3)
    np.save(tmp_path / "x.npy", arrs.transpose(0, 3, 1, 2))               # NCHW, like the seed
    np.save(tmp_path / "x-labels.npy", np.eye(3, dtype=np.float32)[[0, 2, 1, 1, 0]])   # one-hot
    assert run("--task", "n", "--images-dir", tmp_path / "x.npy", "--format", "npy", "--data-dir", tmp_path / "d") == 0
    images, labels, _ = _stored(tmp_path / "d", "n")
    assert np.array_equal(images, arrs.transpose(0, 3, 1, 2)) and labels.tolist() == [0, 2, 1, 1, 0]
    np.save(tmp_path / "y.npy", arrs)                                      # NHWC, format guessed
    assert run("--task", "n2", "--images-dir", tmp_path / "y.npy", "--max-images", 3, "--data-dir", tmp_path / "d") == 0
    assert np.array_equal(_stored(tmp_path / "d", "n2")[0], arrs[:3].transpose(0, 3, 1, 2))


def test_hdf5_round_trip(tmp_path):
    h5py = pytest.importorskip("h5py")
    arrs = _arrays(4, 8, 8, 3)
    with h5py.File(tmp_path / "x.h5", "w") as f:       # StyleGAN-style pyramid: the largest wins
        f["data4x4"] = arrs[:, ::2, ::2].transpose(0, 3, 1, 2)
        f["data8x8"] = arrs.transpose(0, 3, 1, 2)
        f["labels"] = np.array([1, 0, 1, 1])
    assert run("--task", "h", "--images-dir", tmp_path / "x.h5", "--format", "hdf5", "--data-dir", tmp_path / "d") == 0
    images, labels, _ = _stored(tmp_path / "d", "h")
    assert np.array_equal(images, arrs.transpose(0, 3, 1, 2)) and labels.tolist() == [1, 0, 1, 1]


def _encoded(arr, fmt):
    b = io.BytesIO()
    PIL.Image.fromarray(arr).save(b, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    return b.getvalue()


def make_lmdb(path, arrays, extra=()):
    lmdb = pytest.importorskip("lmdb")
    with lmdb.open(str(path), map_size=1 << 24) as env, env.begin(write=True) as txn:
        for i, a in enumerate(arrays):      # LSUN: hex-like ids as keys, webp images as values
            txn.put(f"{i:040x}".encode(), _encoded(a, "WEBP"))
        for k, v in extra:
            txn.put(k, v)


def test_lmdb_round_trip(tmp_path):
    arrs = _arrays(3)
    make_lmdb(tmp_path / "db", arrs, extra=[(b"zzz", b"garbage")])
    assert run("--task", "l", "--images-dir", tmp_path / "db", "--format", "lmdb", "--data-dir", tmp_path / "d") == 0
    images, _, m = _stored(tmp_path / "d", "l")
    assert np.array_equal(images, arrs.transpose(0, 3, 1, 2)) and m["skipped"] == {"not an image": 1}
    keys = [i.key for i in sources.LmdbSource(tmp_path / "db").items(2)]      # resume position
    assert keys == [f"{2:040x}", "zzz"]


def make_tfrecords(folder, prefix, arrays, shards=2, lods=True):
    """Files as the TF dataset_tool writes them: one set per LOD, images round-robin over shards."""
    folder.mkdir(parents=True, exist_ok=True)
    res = arrays.shape[1]
    levels = [(res, arrays)] + ([(res // 2, arrays[:, ::2, ::2])] if lods else [])
    for r, imgs in levels:
        for s in range(shards):
            recs = [sources.encode_example({"shape": list(a.transpose(2, 0, 1).shape),
                                                 "data": [a.transpose(2, 0, 1).tobytes()]}) for a in imgs[s::shards]]
            name = f"{prefix}-r{int(np.log2(r)):02d}.tfrecords{s + 1}of{shards}"
            sources.write_records(folder / name, recs)


def test_tfrecords_round_trip_without_tensorflow(tmp_path):
    arrs = _arrays(5)
    make_tfrecords(tmp_path / "tf", "toy", arrs)
    assert run("--task", "t", "--images-dir", tmp_path / "tf", "--data-dir", tmp_path / "d") == 0   # guessed
    images, _, m = _stored(tmp_path / "d", "t")
    order = [0, 2, 4, 1, 3]                 # shard 1 holds images 0, 2, 4; shard 2 holds 1, 3
    assert np.array_equal(images, arrs[order].transpose(0, 3, 1, 2)) and m["source"]["records"] == 5
    # Protobuf details: negative int64, packed and unpacked forms parse.
    ex = sources.parse_example(sources.encode_example({"shape": [-1, 2], "data": [b"ab"]}))
    assert ex == {"shape": [-1, 2], "data": [b"ab"]}
    # A truncated file: the damaged record is skipped and counted.
    f = tmp_path / "tf" / "toy-r03.tfrecords1of2"
    f.write_bytes(f.read_bytes()[:-10])
    assert run("--task", "t2", "--images-dir", tmp_path / "tf", "--format", "tfrecords",
               "--data-dir", tmp_path / "d") == 0
    assert _stored(tmp_path / "d", "t2")[2]["skipped"] == {"corrupt record": 1}


def test_tfds_with_and_without_the_package(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)        # import fails
    assert run("--task", "f", "--images-dir", "mnist", "--format", "tfds", "--data-dir", tmp_path / "d") == 2
    assert "pip install tensorflow-datasets" in capsys.readouterr().err
    arrs = _arrays(3, c=1)
    info = types.SimpleNamespace(splits={"train": types.SimpleNamespace(num_examples=3)},
                                 features={"label": types.SimpleNamespace(names=["zero", "one"])})
    examples = [{"image": a, "label": i % 2} for i, a in enumerate(arrs)]
    fake = types.SimpleNamespace(load=lambda name, split, data_dir, with_info: (examples, info),
                                 as_numpy=lambda ds: iter(ds))
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    assert run("--task", "f", "--images-dir", "fake", "--format", "tfds", "--data-dir", tmp_path / "d") == 0
    images, labels, m = _stored(tmp_path / "d", "f")
    assert np.array_equal(images, arrs.transpose(0, 3, 1, 2)) and labels.tolist() == [0, 1, 0]
    assert m["class_names"] == ["zero", "one"]


def test_json_labels_and_scenes_cli(tmp_path, capsys):
    src = tmp_path / "imgs"
    src.mkdir()
    for i, a in enumerate(_arrays(3)):
        _png(a, src / f"{i}.png")
    (src / "labels.json").write_text(json.dumps({"labels": [["0.png", 3], ["1.png", 1]]}))
    assert run("--task", "lab", "--images-dir", src, "--labels", src / "labels.json", "--data-dir", tmp_path / "d") == 0
    _, labels, m = _stored(tmp_path / "d", "lab")
    assert labels.tolist() == [3, 1] and m["class_names"] == ["0", "1", "2", "3"] and m["skipped"] == {"unlabelled": 1}
    assert run("--scenes", "--resolution", 8, "--max-images", 5, "--data-dir", tmp_path / "d") == 0
    assert "scenes: wrote 5 images (8x8" in capsys.readouterr().out


def test_interrupted_prepare_resumes(tmp_path, monkeypatch):
    src = tmp_path / "imgs"
    src.mkdir()
    arrs = _arrays(6)
    for i, a in enumerate(arrs):
        _png(a, src / f"{i}.png")
    real_add = dataset_writer.DatasetWriter.add

    def flaky_add(self, image, label=None):
        if self.count == 4:
            raise KeyboardInterrupt
        real_add(self, image, label)
    monkeypatch.setattr(dataset_writer.DatasetWriter, "add", flaky_add)
    init = dataset_writer.DatasetWriter.__init__
    monkeypatch.setattr(dataset_writer.DatasetWriter, "__init__", _fast_checkpoints(init))
    args = ("--task", "r", "--images-dir", src, "--data-dir", tmp_path / "d", "--shards-num", 2)
    assert run(*args) == 130
    assert not (tmp_path / "d" / "r" / "manifest.json").exists()
    monkeypatch.setattr(dataset_writer.DatasetWriter, "add", real_add)
    assert run(*args) == 0
    images, _, _ = _stored(tmp_path / "d", "r")
    assert np.array_equal(images, arrs.transpose(0, 3, 1, 2))


def _fast_checkpoints(init):
    def wrapped(self, *a, **k):
        init(self, *a, **dict(k, checkpoint_seconds=0.0))
    return wrapped


@pytest.mark.parametrize("argv, message", [
    (["--task", "x", "--images-dir", "{tmp}/missing"], "does not exist"),
    (["--task", "x", "--images-dir", "{tmp}/emptydir"], "no .png/.jpg"),
    (["--task", "x", "--images-dir", "{tmp}/emptydir", "--format", "gif"], "invalid choice: 'gif'"),
    (["--task", "x", "--images-dir", "{tmp}/emptydir", "--ratio", "0"], "--ratio must be"),
    (["--task", "x", "--images-dir", "{tmp}/emptydir", "--ratio", "nan"], "--ratio must be"),
    (["--task", "x", "--images-dir", "{tmp}/bad", "--format", "png"], "no readable images"),
    (["--task", "x", "--images-dir", "{tmp}/emptydir", "--data-dir", "{tmp}/afile/sub"], "cannot write to --data-dir"),
    (["--scenes", "--resolution", "48"], "power of two"),
    ([], "nothing to do"),
])
def test_bad_input_one_line_nonzero_exit(tmp_path, capsys, argv, message):
    (tmp_path / "emptydir").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (tmp_path / "afile").write_text("x")
    argv = [a.format(tmp=tmp_path) for a in argv]
    if "--data-dir" not in argv:
        argv += ["--data-dir", str(tmp_path / "d")]
    assert run(*argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not list(tmp_path.glob("d/*/manifest.json"))


def test_cli_subprocess_help_and_error(tmp_path):
    r = subprocess.run([sys.executable, "prepare_data.py", "--help"], cwd=REPO, capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0 and "--images-dir" in r.stdout and "--scenes" in r.stdout
    r = subprocess.run([sys.executable, "prepare_data.py", "--task", "x", "--images-dir", str(tmp_path / "nope"),
                        "--data-dir", str(tmp_path)], cwd=REPO, capture_output=True, text=True, check=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_preprocessor_matches_seed_geometry():
    """Crop the largest centred h/w=ratio rectangle, pad to a square, resize to a power of two."""
    img = np.zeros((30, 50, 3), np.uint8)
    img[:, :, 0] = 255
    out = Preprocessor(ratio=0.5, resolution=16, channels=3)(img)
    # 50x25 kept (rows 2..27), padded to 50x50 (12 black rows on top) -> 16x16
    assert out.shape == (3, 16, 16) and out[0, 8].min() > 250 and out[0, 0].max() == 0 and out[0, 15].max() == 0


def test_preview_writes_a_grid_of_the_dataset(tmp_path, capsys):
    from PIL import Image
    assert run("--scenes", "--resolution", 8, "--max-images", 5, "--data-dir", tmp_path / "d", "--preview") == 0
    out = capsys.readouterr().out
    preview = tmp_path / "d" / "scenes" / "preview.png"
    assert f"scenes: preview of the dataset in {preview}" in out
    assert Image.open(preview).size == (5 * 130 - 2, 128)           # 5 images, 8x8 enlarged 16 times, 2 apart
    preview.unlink()
    assert run("--task", "scenes2", "--preview", "--data-dir", tmp_path / "d") == 2          # nothing prepared
    assert "no prepared dataset" in capsys.readouterr().err
    (tmp_path / "d" / "scenes").rename(tmp_path / "d" / "mine")
    assert run("--task", "mine", "--preview", "--data-dir", tmp_path / "d") == 0           # look only
    assert (tmp_path / "d" / "mine" / "preview.png").is_file()
