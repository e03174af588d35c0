"""What the subcommands share: the parser of a command with its examples, the config
arguments, and the device check."""

from __future__ import annotations

import argparse

from pixperfect.errors import InputError


class HelpFormatter(argparse.HelpFormatter):
    """Wraps descriptions as argparse does, but keeps the lines of the examples epilog."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:\n"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def add_command(
    sub: argparse._SubParsersAction, name: str, examples: str, **kwargs
) -> argparse.ArgumentParser:
    """The parser of ``pixperfect [group] name``, with ``examples`` (lines run from the
    repository root) as the epilog of its --help."""
    return sub.add_parser(
        name, epilog=f"examples:\n{examples}", formatter_class=HelpFormatter, **kwargs
    )


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and the ``key=value`` overrides of a command that reads the config."""
    parser.add_argument("--config", help="experiment YAML file (merged over the packaged defaults)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides, e.g. trainer.max_steps=100",
    )


def check_device(device: str) -> None:
    """Refuse a CUDA device on a machine without one, before any model is loaded."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(
            f"--device {device}: CUDA is not available here (torch.cuda.is_available() is "
            "False); use --device cpu, or run on a machine with a GPU"
        )
