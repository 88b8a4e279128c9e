"""Nothing lost, nothing silently wrong: run folders survive kills and corruption, numbers stay finite,
files follow the umask, one process per run folder."""
from __future__ import annotations

import json
import os
import stat

import pytest
import torch

from dnnlib.util import atomic_write, folder_lock, UserError
from training import snapshots

from test_training import cli, data_dir, run_in_process  # noqa: F401 (fixture)


def _runs(results):
    return [p.name for p in snapshots.find_runs(results, "t")]


def _all_finite(run) -> None:
    from training.checkpoint import read_checkpoint
    for p in run.glob("*.safetensors"):
        if p.name.startswith("training-state"):
            nets, _, opts, _ = snapshots.load_state(p)
            tensors = [v for sd in nets.values() for v in sd.values()]
            tensors += [v for o in opts.values() for st in o["state"].values() for v in st.values()]
        else:
            tensors = [v for sd in read_checkpoint(p)[0].values() for v in sd.values()]
        assert all(torch.isfinite(t).all() for t in tensors if t.is_floating_point()), p


def test_killed_before_first_state_same_folder(data_dir, tmp_path) -> None:
    """A run folder without a training state (the command was killed early) is continued, not abandoned."""
    results = tmp_path / "r"
    (results / "t-000").mkdir(parents=True)                       # killed right after mkdir
    run_in_process(cli(data_dir, results, "--total-kimg", "0.004"))
    assert _runs(results) == ["t-000"]
    assert snapshots.latest_state(results / "t-000") is not None
    (results / "t-001").mkdir()                                   # killed after config.json
    with atomic_write(results / "t-001" / "config.json", "w") as f:
        json.dump({"run": {"mode": "train"}}, f)
    (results / "t-001" / "fakes-000000.png").write_bytes(b"")
    run_in_process(cli(data_dir, results, "--total-kimg", "0.004"))
    assert _runs(results) == ["t-000", "t-001"]
    assert snapshots.latest_state(results / "t-001") is not None


def test_eval_folder_is_not_taken_over(data_dir, tmp_path) -> None:
    results = tmp_path / "r"
    (results / "t-000").mkdir(parents=True)
    (results / "t-000" / "metric-fid.txt").write_text("x")
    run_in_process(cli(data_dir, results, "--total-kimg", "0.004"))
    assert _runs(results) == ["t-000", "t-001"]


def test_corrupt_newest_state_falls_back_and_logs_are_not_duplicated(data_dir, tmp_path, capsys) -> None:
    results = tmp_path / "r"
    run_in_process(cli(data_dir, results, "--total-kimg", "0.008"))
    run = results / "t-000"
    good = snapshots.latest_state(run)
    (run / "training-state-000009.safetensors").write_bytes(good.read_bytes()[:5000])   # torn newer state
    (run / ".network-snapshot-000009.safetensors.k2j3.tmp").write_bytes(b"x" * 1000)    # killed write
    with open(run / "stats.jsonl", "a") as f:                    # rows written after the state, then a kill
        f.write(json.dumps({"Progress/tick": 3, "stale": True}) + "\n" + '{"Progress/ti')
    capsys.readouterr()
    run_in_process(cli(data_dir, results, "--total-kimg", "0.012"))
    out = capsys.readouterr().out
    assert "skipping training-state-000009" in out and f"resuming from {good.name}" in out
    assert _runs(results) == ["t-000"]
    assert not list(run.glob(".*.tmp"))
    rows = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert [r["Progress/tick"] for r in rows] == [1, 2, 3] and not any(r.get("stale") for r in rows)


def test_no_readable_state_is_one_line(data_dir, tmp_path) -> None:
    results = tmp_path / "r"
    (results / "t-000").mkdir(parents=True)
    (results / "t-000" / "training-state-000001.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(SystemExit) as e:
        run_in_process(cli(data_dir, results))
    assert e.value.code == 2 and _runs(results) == ["t-000"]


@pytest.mark.parametrize("flags", [["--g-lr", "1e30", "--d-lr", "1e30"], ["--g-lr", "1e30"]])
def test_divergence_stops_before_saving(data_dir, tmp_path, capsys, flags) -> None:
    results = tmp_path / "r"
    with pytest.raises(SystemExit) as e:
        run_in_process(cli(data_dir, results, "--total-kimg", "0.04", *flags))
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "diverged by step" in err, err
    assert "last good snapshot" in err
    _all_finite(results / "t-000")


def test_nan_checkpoint_refused(tmp_path) -> None:
    from test_checkpoint import tiny_nets
    from training.checkpoint import load_networks, save_checkpoint
    G, D = tiny_nets()
    with torch.no_grad():
        G.mapping.w_avg.fill_(float("nan"))
    save_checkpoint(tmp_path / "n.safetensors", {"G": G, "D": D})
    with pytest.raises(UserError, match="NaN"):
        load_networks(tmp_path / "n.safetensors")


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_follow_the_umask(tmp_path, mask, mode) -> None:
    old = os.umask(mask)
    try:
        with atomic_write(tmp_path / "f.bin") as f:
            f.write(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.bin").stat().st_mode) == mode


def test_lock_is_exclusive_and_stale_lock_taken_over(tmp_path) -> None:
    (tmp_path / ".lock").write_text("999999\n")             # left by a killed process: no live holder
    with folder_lock(tmp_path):
        with pytest.raises(UserError, match=f"pid {os.getpid()}"):
            with folder_lock(tmp_path):
                pass
    with folder_lock(tmp_path):
        pass


def test_nonfinite_found_with_one_sync() -> None:
    t = {"a": torch.zeros(3), "b": torch.tensor([1.0, float("inf")]), "c": torch.arange(3)}
    assert snapshots.first_nonfinite(t) == "b"
    assert snapshots.first_nonfinite({"a": torch.zeros(2)}) is None


# -- data ---------------------------------------------------------------------------------------------

@pytest.fixture
def scenes16(tmp_path):
    from training.data.writer import write_scenes
    write_scenes(tmp_path / "d" / "scenes", resolution=16, count=16, workers=1, progress=False)
    return tmp_path / "d"


def _edit_manifest(root, fn) -> None:
    path = root / "scenes" / "manifest.json"
    m = json.loads(path.read_text())
    fn(m)
    path.write_text(json.dumps(m))


@pytest.mark.parametrize("edit,needle", [
    (lambda m: m.update(resolution=8, count=m["count"] * 4, image_bytes=m["image_bytes"] // 4,
                        shards=[dict(s, count=s["count"] * 4) for s in m["shards"]]), "edited"),
    (lambda m: m["shards"][0].update(file="../../outside.u8"), "shard name"),
    (lambda m: m.update(labels=[0] * 3, class_names=["a"]), "labels"),
    (lambda m: m.update(count=m["count"] + 1), "images"),
])
def test_edited_manifest_refused(scenes16, edit, needle) -> None:
    from training.data.dataset import load_dataset
    if needle == "shard name":
        (scenes16 / "scenes" / "shard-00000.u8").rename(scenes16.parent / "outside.u8")
    _edit_manifest(scenes16, edit)
    with pytest.raises(UserError, match=needle) as e:
        load_dataset(scenes16, "scenes")
    assert "\n" not in str(e.value)


def test_corrupt_shard_stops_training_with_one_line(scenes16, tmp_path, capsys) -> None:
    shard = scenes16 / "scenes" / "shard-00000.u8"
    data = bytearray(shard.read_bytes())
    data[100:2100] = bytes(2000)                                  # overwritten in place, same size
    shard.write_bytes(bytes(data))
    with pytest.raises(SystemExit) as e:
        run_in_process(cli(scenes16, tmp_path / "r", "--total-kimg", "0.04"))
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "checksum mismatch" in err, err


def test_different_dataset_not_replaced_and_run_told_when_data_changed(scenes16, tmp_path, capsys) -> None:
    import prepare_data
    from training.data.writer import write_scenes
    manifest = (scenes16 / "scenes" / "manifest.json").read_text()
    with pytest.raises(SystemExit):
        prepare_data.main(["--scenes", "--resolution", "8", "--max-images", "8", "--data-dir", str(scenes16)])
    assert "different dataset" in capsys.readouterr().err
    assert (scenes16 / "scenes" / "manifest.json").read_text() == manifest
    run_in_process(cli(scenes16, tmp_path / "r", "--total-kimg", "0.004"))
    write_scenes(scenes16 / "scenes", resolution=16, count=16, seed=1, workers=1, progress=False, force=True)
    capsys.readouterr()
    run_in_process(cli(scenes16, tmp_path / "r", "--total-kimg", "0.008"))
    assert "the dataset changed" in capsys.readouterr().out


@pytest.mark.parametrize("flag,channels", [([], 3), (["--channels", "1"], 1)])
def test_channels_from_all_images_or_flag(tmp_path, capsys, flag, channels) -> None:
    import numpy as np
    import PIL.Image
    import prepare_data
    src = tmp_path / "imgs"
    src.mkdir()
    PIL.Image.fromarray(np.full((8, 8), 90, np.uint8)).save(src / "a0.png")           # grey first
    for i in range(3):
        PIL.Image.fromarray(np.full((8, 8, 3), [200, 10 * i, 0], np.uint8)).save(src / f"b{i}.png")
    prepare_data.main(["--task", "t", "--images-dir", str(src), "--data-dir", str(tmp_path / "d"), *flag])
    m = json.loads((tmp_path / "d" / "t" / "manifest.json").read_text())
    assert m["channels"] == channels
    assert "channels:" in capsys.readouterr().out
