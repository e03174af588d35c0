"""The ``pixperfect`` command as people expect it: ``--version``, examples in every
``--help``, expected errors as one line on stderr with a non-zero exit, and a progress bar
when refining a folder."""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from importlib.metadata import version

import numpy as np
import pytest
import torch
from conftest import ROOT
from helpers import write_pixels

from pixperfect.cli import build_parser, main
from pixperfect.config import load_config


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every (sub)command path of the parser, e.g. ("shards",) and ("shards", "build"):
    a command added later is covered without touching this file."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name)
                yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(build_parser()))


def _help(capsys, command: tuple[str, ...]) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def _examples(text: str) -> list[str]:
    """The example command lines of a --help text (backslash continuations joined)."""
    body = text.split("\nexamples:\n", 1)[1]
    lines, current = [], ""
    for line in body.splitlines():
        current += " " + line.strip() if current else line.strip()
        if current.endswith("\\"):
            current = current[:-1].rstrip()
            continue
        if current.startswith("pixperfect "):
            lines.append(current)
        current = ""
    return lines


def _one_error_line(err: str, command: str) -> str:
    """The error of a failed run: exactly one line on stderr, no traceback; its message."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    prefix = f"pixperfect {command}: error: "
    assert lines[0].startswith(prefix), lines[0]
    return lines[0][len(prefix) :]


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"pixperfect {version('pixperfect')}\n"


def test_the_command_list_covers_every_subcommand():
    assert {"train", "evaluate", "refine", "export", "simulate", "preflight", "config"} <= {
        c[0] for c in COMMANDS
    }
    assert ("shards", "build") in COMMANDS and ("shards", "verify") in COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_help_exits_0_and_ends_with_examples_of_that_command(capsys, command):
    text = _help(capsys, command)
    assert "\nexamples:\n" in text, text
    examples = _examples(text)
    assert examples, text
    assert any(e.startswith(f"pixperfect {' '.join(command)} ") for e in examples), examples


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_help_example_parses_and_names_existing_configs(capsys, monkeypatch, command):
    monkeypatch.chdir(ROOT)  # the examples run from the repository root
    for example in _examples(_help(capsys, command)):
        args = build_parser().parse_args(shlex.split(example)[1:])
        if getattr(args, "overrides", None) is not None:
            load_config(args.config, args.overrides)  # the file exists, the keys are known


@pytest.mark.parametrize(
    "argv",
    [
        ["config", "--config", "configs/demo.yaml", "bogus.key=1"],
        ["train", "--config", "configs/demo.yaml", "trainer.bogus=1"],
        ["evaluate", "--config", "configs/demo.yaml", "--no-perceptual", "bogus=1"],
        ["simulate", "--n", "2", "sim.bogus=1"],
        ["shards", "build", "--images", "skimage", "--out", "unused", "bogus=1"],
    ],
    ids=lambda argv: argv[0],
)
def test_a_bad_config_key_is_one_line_on_stderr_exit_2_nothing_on_stdout(
    capsys, monkeypatch, tmp_path, argv
):
    monkeypatch.chdir(ROOT)
    code = main([a.replace("unused", str(tmp_path / "out")) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert "unknown config key" in _one_error_line(err, argv[0])
    assert not (tmp_path / "out").exists()


MISSING = "no/such/path"


@pytest.mark.parametrize(
    "argv",
    [
        ["config", "--config", f"{MISSING}.yaml"],
        ["train", "--config", f"{MISSING}.yaml"],
        ["evaluate", "--ckpt", f"{MISSING}.ckpt", "--dataset", MISSING, "--no-perceptual"],
        ["refine", "--image", f"{MISSING}.png", "--mask", f"{MISSING}.png", "--out", "o.png"],
        ["refine", "--images", MISSING, "--masks", MISSING, "--out", "out"],
        ["export", f"{MISSING}.ckpt", "release"],
        ["simulate", "--images", MISSING, "--n", "2"],
        ["shards", "build", "--images", MISSING, "--out", "out"],
        ["shards", "verify", MISSING],
    ],
    ids=lambda argv: " ".join(argv[:2]),
)
def test_a_missing_file_is_one_line_on_stderr_exit_2_nothing_on_stdout(
    capsys, monkeypatch, tmp_path, argv
):
    monkeypatch.chdir(tmp_path)  # nothing here: every relative path is missing
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2 and out == "", out
    message = _one_error_line(err, argv[0])
    assert MISSING in message, message
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_preflight_reports_a_missing_config_as_a_failed_check_on_stdout_exit_1(
    capsys, monkeypatch, tmp_path
):
    monkeypatch.chdir(tmp_path)  # preflight is a check: its report is its output
    code = main(["preflight", "--config", f"{MISSING}.yaml"])
    out, err = capsys.readouterr()
    assert code == 1 and err == ""
    assert f"FAIL  config: experiment file {MISSING}.yaml does not exist" in out


def test_a_bad_option_is_argparse_usage_on_stderr_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["refine", "--images", "x", "--no-such-option"])
    out, err = capsys.readouterr()
    assert exit_.value.code == 2 and out == ""
    assert err.startswith("usage: pixperfect refine")
    assert err.strip().splitlines()[-1].startswith("pixperfect refine: error: ")


def test_an_unreadable_checkpoint_is_one_line_not_a_traceback(capsys, tmp_path):
    (tmp_path / "notes.ckpt").write_text("# not a checkpoint\n")
    code = main(["export", str(tmp_path / "notes.ckpt"), str(tmp_path / "release")])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert "not a readable checkpoint" in _one_error_line(err, "export")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_refine_on_cuda_without_cuda_is_refused_before_loading_a_model(capsys, tmp_path):
    write_pixels(tmp_path / "a.png", np.zeros((16, 16, 3), np.uint8))
    code = main(
        ["refine", "--image", str(tmp_path / "a.png"), "--mask", str(tmp_path / "a.png"),
         "--out", str(tmp_path / "o.png"), "--device", "cuda"]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert "--device cuda: CUDA is not available" in _one_error_line(err, "refine")


def test_refine_over_a_folder_shows_a_progress_bar_and_counts_refined_and_skipped(capsys, tmp_path):
    images, masks, out = tmp_path / "images", tmp_path / "masks", tmp_path / "out"
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        write_pixels(images / f"{name}.png", rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    mask = np.zeros((24, 32), np.uint8)
    mask[6:14, 8:20] = 255
    write_pixels(masks / "a.png", mask)
    write_pixels(masks / "b_mask.png", mask)  # c has none: skipped, and the run goes on
    # No --model: the shipped reference refiner, so no training is needed.
    code = main(["refine", "--images", str(images), "--masks", str(masks), "--out", str(out)])
    stdout, stderr = capsys.readouterr()
    assert code == 1  # a file failed
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    assert "refined 2 of 3 image(s), skipped 1 that failed:" in stdout
    assert "c.png: no mask" in stdout
    bar = stderr.replace("\r", "\n").strip().splitlines()[-1]  # the bar's final state
    assert bar.startswith("refine: 100%") and "3/3" in bar, stderr
    assert "refined=2" in bar and "skipped=1" in bar, bar


def test_a_mistake_is_one_line_exit_2_naming_the_bad_input(capsys, tmp_path):
    code = main(["refine", "--image", str(tmp_path / "edit.png"), "--mask", "m.png", "--out", "o"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert _one_error_line(err, "refine") == f"image {tmp_path / 'edit.png'} does not exist"


def test_a_bug_is_not_taken_for_a_mistake_it_propagates_from_main(monkeypatch):
    from pixperfect.commands import runs

    def bug(args: argparse.Namespace) -> None:
        raise ValueError("a bug inside the command")  # what a typo would have raised before

    monkeypatch.setattr(runs, "_config", bug)
    with pytest.raises(ValueError, match="a bug inside the command"):
        main(["config", "--defaults"])


def test_a_bug_exits_1_with_its_traceback_on_stderr(tmp_path):
    script = (
        "import sys\n"
        "from pixperfect.commands import runs\n"
        "def bug(args):\n"
        "    raise KeyError('no such entry: a bug, not a mistake')\n"
        "runs._config = bug\n"
        "from pixperfect.cli import main\n"
        "sys.exit(main(['config', '--defaults']))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 1 and run.stdout == ""
    assert "Traceback (most recent call last)" in run.stderr, run.stderr
    assert "KeyError: 'no such entry: a bug, not a mistake'" in run.stderr
    assert "pixperfect config: error:" not in run.stderr
