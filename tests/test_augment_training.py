"""ADA inside training: p is adapted, logged per tick, saved in the training state, and a resumed run is bitwise
the uninterrupted one (also when it stops between two p adjustments)."""
import json

import pytest

from test_training import assert_same_state, cli, data_dir, final_state, run_in_process  # noqa: F401 (fixture)
from training import snapshots

ADA = ["--ganformer-default", "--components-num", "4", "--augment", "ada", "--ada-kimg", "0.1", "--ada-target", "0.6"]


def test_ada_resume_is_bitwise_and_p_is_logged(data_dir, tmp_path, capsys):  # noqa: F811
    run_in_process(cli(data_dir, tmp_path / "straight", *ADA, "--total-kimg", "0.032"))
    out = capsys.readouterr().out
    assert "augment 0." in out or "augment 1." in out
    run = snapshots.find_runs(tmp_path / "straight", "t")[-1]
    ticks = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    p = [t["Progress/augment"] for t in ticks]
    assert len(p) == 8 and all(0 <= v <= 1 for v in p) and len(set(p)) > 1        # p moved (every 4 steps)
    straight = final_state(tmp_path / "straight")
    assert straight["counters"]["augment_p"] == p[-1] and straight["counters"]["ada_steps"] == 8

    # Stop after 3 steps (mid-interval: the sign sums are part of the state), then run on to the end.
    run_in_process(cli(data_dir, tmp_path / "resumed", *ADA, "--total-kimg", "0.012"))
    assert final_state(tmp_path / "resumed")["counters"]["ada_count"] > 0
    run_in_process(cli(data_dir, tmp_path / "resumed", *ADA, "--total-kimg", "0.032"))
    resumed = final_state(tmp_path / "resumed")
    assert len(snapshots.find_runs(tmp_path / "resumed", "t")) == 1                 # resumed, not restarted
    assert_same_state(straight, resumed)
    assert resumed["counters"]["augment_p"] == straight["counters"]["augment_p"]


@pytest.mark.parametrize("flags, message", [(["--augment", "ada", "--ada-target", "1.5"], "--ada-target"),
                                            (["--augment", "fixed", "--augment-p", "-0.1"], "--augment-p"),
                                            (["--augment-pipe", "bgq"], "--augment-pipe")])
def test_bad_augment_flags(data_dir, tmp_path, capsys, flags, message):  # noqa: F811
    with pytest.raises(SystemExit):
        run_in_process(cli(data_dir, tmp_path, *flags, "--total-kimg", "0.004"))
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
