"""The command lines as a new user meets them: instant help, one explanation per flag, one-line errors with
a did-you-mean, and the seed README's own commands and spellings."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest

from conftest import REPO
from training.options import FLAGS, build_parser, parse
from training.run_config import RunConfig, TrainOptions

SEED_README = REPO.parent / "shared" / "seed" / "ganformer-README.md"


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run_network.py", *argv], cwd=REPO, capture_output=True, text=True)


def test_help_lists_the_presets() -> None:
    out = run("--help")           # that it imports no torch: tests/test_script_help.py
    assert out.returncode == 0 and "--ganformer-default" in out.stdout


def test_every_flag_explained_once() -> None:
    text = build_parser().format_help()
    for line in text.splitlines():
        assert line.count("(default:") <= 1, line
    for action in build_parser()._actions:
        assert action.help and len(action.help) > 8, action.option_strings
    groups = [g.title for g in build_parser()._action_groups]
    for seed_group in ("training", "model (most useful)", "model (others)", "visualization"):
        assert seed_group in groups


def test_help_defaults_come_from_the_dataclasses() -> None:
    """--help shows each default as the dataclass holds it: there is no second copy to drift."""
    text = " ".join(build_parser().format_help().split())
    assert f"global batch size (default: {TrainOptions().batch_size})" in text
    assert f"attention dropout rate (default: 0.12)" in text
    assert f"(default: {RunConfig().metrics})" in text


def test_unknown_flag_names_the_closest_one() -> None:
    out = run("--kmenas")
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0
    assert "did you mean --kmeans?" in out.stderr and "usage" not in out.stderr
    out = run("--zzzzzz")
    assert out.returncode == 2 and "unknown flag --zzzzzz" in out.stderr and "\n" not in out.stderr.strip()


def test_seed_spellings_are_aliases() -> None:
    r = parse(["--mapping_ltnt2ltnt", "--keep-samples", "--minibatch-size", "2", "--use_pos", "False",
               "--components_num=4", "--transformer"])
    assert r.model == {"mapping_ltnt2ltnt": True, "use_pos": False, "components_num": 4, "transformer": True}
    assert r.train.keep_samples is True and r.train.batch_gpu == 2
    assert parse(["--keep-samples", "False"]).train.keep_samples is False


def test_flags_beat_presets_beat_defaults() -> None:
    assert parse([]).train.loss.r1_gamma == 10.0 and parse([]).preset is None
    r = parse(["--ganformer-default", "--dataset", "bedrooms"])
    assert r.preset == "GANformer" and r.train.loss.r1_gamma == 100 and r.model["kmeans"] is True
    assert parse(["--ganformer-default", "--dataset", "bedrooms", "--gamma", "5"]).train.loss.r1_gamma == 5
    assert parse(["--vis"]).metrics == "none" and parse(["--vis"]).vis.types
    assert parse(["--eval"]).vis.types == () and parse(["--eval", "--vis-maps"]).vis.types == ("maps",)


def _seed_commands() -> list[list[str]]:
    text = SEED_README.read_text()
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
    commands = []
    for block in blocks:
        for cmd in block.replace("\\\n", " ").splitlines():
            if cmd.strip().startswith("python "):
                commands.append(shlex.split(cmd)[1:])
    return commands


def _seed_inline_flags() -> list[list[str]]:
    """Flags the README names in running text (`--style False`, `--keep-samples`), as argument lists."""
    text = SEED_README.read_text()
    return [shlex.split(m) for m in re.findall(r"`(--[A-Za-z0-9_-]+(?: [A-Za-z0-9_.:<>-]+)?)`", text)]


@pytest.mark.skipif(not SEED_README.is_file(), reason="the seed README (../shared/seed) is not available")
def test_every_seed_command_parses() -> None:
    import generate
    import prepare_data

    commands = _seed_commands()
    assert len(commands) >= 7
    for argv in commands:
        script, args = argv[0], [a.replace("<dataset-name>", "mine").replace("<source-dir>", "imgs") for a in argv[1:]]
        if script == "run_network.py":
            assert isinstance(parse(args), RunConfig)
        elif script == "generate.py":
            generate.parse_args(args)
        elif script == "prepare_data.py":
            prepare_data.build_parser().parse_args(args)
        else:
            pytest.fail(f"unknown script in the seed README: {script}")


@pytest.mark.skipif(not SEED_README.is_file(), reason="the seed README (../shared/seed) is not available")
def test_every_flag_the_seed_names_is_known(capsys) -> None:
    import generate
    import prepare_data

    ours = build_parser()._option_string_actions
    others = set(prepare_data.build_parser()._option_string_actions)
    with pytest.raises(SystemExit):
        generate.parse_args(["--help"])
    others |= set(re.findall(r"--[a-z0-9-]+", capsys.readouterr().out))
    for argv in _seed_inline_flags():
        flag = argv[0].replace("_", "-")
        if flag in ours:
            if argv[1:] and not argv[1].startswith("<"):
                parse(argv)                                  # e.g. --style False, --baseline GAN
            elif ours[flag].nargs in (0, "?"):
                parse(argv[:1])                              # a switch, e.g. --keep-samples
        else:
            assert flag in others, f"the seed's {argv[0]} is unknown"


def test_flag_table_has_no_duplicates() -> None:
    names = [n for _, flags, *_ in FLAGS for n in (flags if isinstance(flags, tuple) else (flags,))]
    assert len(names) == len(set(names))
