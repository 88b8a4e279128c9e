"""StyleGAN2-ADA datasets: read a zip/folder with dataset.json labels, export ours, round trip, bad archives."""
import io
import json
import zipfile

import numpy as np
import PIL.Image
import pytest

from test_prepare_data import run
from training.data.dataset import ImageDataset
from training.data.stylegan import entry_name


def _png_bytes(arr):
    buf = io.BytesIO()
    PIL.Image.fromarray(arr).save(buf, "png")
    return buf.getvalue()


def make_ada_zip(path, arrays, labels=None, extra=()):
    """A zip laid out as StyleGAN2-ADA's dataset tool writes it (labels: one int per image, or None)."""
    with zipfile.ZipFile(path, "w") as z:
        for i, a in enumerate(arrays):
            z.writestr(entry_name(i), _png_bytes(a))
        for name, data in extra:
            z.writestr(name, data)
        pairs = None if labels is None else [[entry_name(i), v] for i, v in enumerate(labels)]
        z.writestr("dataset.json", json.dumps({"labels": pairs}))


def _stored(data_dir, name):
    ds = ImageDataset(data_dir / name, use_labels=True)
    images, labels = ds.get_batch(range(len(ds)))
    return images.numpy(), labels.numpy(), ds


def _arrays(n, c=3, size=8, seed=0):
    shape = (n, size, size, c) if c > 1 else (n, size, size)
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def test_read_ada_zip_with_labels(tmp_path, capsys):
    arrays = _arrays(5)
    make_ada_zip(tmp_path / "ada.zip", arrays, labels=[3, 0, 1, 3, 2], extra=[("README.txt", "hi")])
    assert run("--task", "ada", "--images-dir", tmp_path / "ada.zip", "--data-dir", tmp_path / "d") == 0  # format guessed
    assert "ignored 1 other file" in capsys.readouterr().out
    images, labels, ds = _stored(tmp_path / "d", "ada")
    assert np.array_equal(images, arrays.transpose(0, 3, 1, 2))
    assert labels.tolist() == [3, 0, 1, 3, 2] and ds.class_names == ["0", "1", "2", "3"]


def test_round_trip_export_and_reimport(tmp_path, capsys):
    arrays = _arrays(1003, c=1, size=4, seed=1)          # crosses a 1,000-image folder boundary
    np.save(tmp_path / "g.npy", arrays)
    np.save(tmp_path / "g-labels.npy", np.arange(1003) % 4)
    assert run("--task", "g", "--images-dir", tmp_path / "g.npy", "--data-dir", tmp_path / "d") == 0
    out_zip = tmp_path / "out" / "g.zip"
    assert run("--export", "stylegan-zip", "--task", "g", "--output", out_zip, "--data-dir", tmp_path / "d") == 0
    assert "exported 1,003 images with labels" in capsys.readouterr().out
    with zipfile.ZipFile(out_zip) as z:
        names = z.namelist()
        meta = json.loads(z.read("dataset.json"))
        assert "00001/img00001002.png" in names and len(names) == 1004
        assert meta["labels"][1002] == ["00001/img00001002.png", 2]
        first = np.asarray(PIL.Image.open(io.BytesIO(z.read(entry_name(0)))))
    assert first.shape == (4, 4) and np.array_equal(first, arrays[0])     # grey stays one channel
    assert run("--task", "back", "--images-dir", out_zip, "--format", "stylegan-zip", "--data-dir", tmp_path / "d") == 0
    a, la, _ = _stored(tmp_path / "d", "g")
    b, lb, ds = _stored(tmp_path / "d", "back")
    assert np.array_equal(a, b) and np.array_equal(la, lb) and ds.num_channels == 1


def test_folder_form_named_classes_and_unlabelled(tmp_path):
    arrays = _arrays(3, seed=2)
    src = tmp_path / "ada"
    for i, a in enumerate(arrays):
        (src / entry_name(i)).parent.mkdir(parents=True, exist_ok=True)
        PIL.Image.fromarray(a).save(src / entry_name(i))
    meta = {"labels": [[entry_name(i), [0, 1] if i % 2 else [1, 0]] for i in range(3)], "class_names": ["cat", "dog"]}
    (src / "dataset.json").write_text(json.dumps(meta))
    assert run("--task", "f", "--images-dir", src, "--data-dir", tmp_path / "d") == 0
    images, labels, ds = _stored(tmp_path / "d", "f")
    assert labels.tolist() == [0, 1, 0] and ds.class_names == ["cat", "dog"]     # one-hot rows -> classes
    assert np.array_equal(images, arrays.transpose(0, 3, 1, 2))
    make_ada_zip(tmp_path / "nolabels.zip", arrays, labels=None)
    assert run("--task", "n", "--images-dir", tmp_path / "nolabels.zip", "--data-dir", tmp_path / "d") == 0
    _, labels, ds = _stored(tmp_path / "d", "n")
    assert not ds.has_labels and labels.tolist() == [-1, -1, -1]
    assert run("--export", "stylegan-zip", "--task", "n", "--output", tmp_path / "n.zip", "--data-dir", tmp_path / "d") == 0
    with zipfile.ZipFile(tmp_path / "n.zip") as z:
        assert json.loads(z.read("dataset.json")) == {"labels": None}


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b"PK\x03\x04 this is not a zip"), "is not a readable zip archive"),
    (lambda p: make_ada_zip(p, _arrays(1), extra=[("../evil.png", _png_bytes(_arrays(1)[0]))]), "points outside"),
    (lambda p: make_ada_zip(p, _arrays(1), extra=[("/abs/x.png", b"")]), "points outside"),
    (lambda p: make_ada_zip(p, _arrays(2), labels=[1]), "has no label for 00000/img00000001.png"),
    (lambda p: zipfile.ZipFile(p, "w").writestr("dataset.json", "{}"), "no image files"),
])
def test_bad_archives_one_line(tmp_path, capsys, make, message):
    make(tmp_path / "bad.zip")
    assert run("--task", "x", "--images-dir", tmp_path / "bad.zip", "--data-dir", tmp_path / "d") == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "d" / "x" / "manifest.json").exists()


@pytest.mark.parametrize("argv, message", [
    (["--export", "stylegan-zip", "--task", "missing", "--output", "m.zip"], "no dataset at"),
    (["--export", "stylegan-zip", "--task", "a", "--task", "b", "--output", "m.zip"], "one prepared dataset"),
    (["--export", "stylegan-zip", "--task", "a", "--output", "m.tar"], "--output FILE.zip"),
    (["--scenes", "--output", "m.zip"], "--output is for --export"),
])
def test_bad_export_flags(tmp_path, capsys, argv, message):
    assert run(*argv, "--data-dir", tmp_path / "d") == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
