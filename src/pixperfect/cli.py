"""The ``pixperfect`` command: one entry point, one subcommand per job.

pixperfect train    --config configs/demo.yaml [key=value ...]
pixperfect evaluate --config configs/demo.yaml --ckpt CKPT [--dataset DIR|--images DIR] [--out JSON]
pixperfect refine   --ckpt CKPT|--model DIR --image IMG --mask MASK --out OUT
pixperfect refine   --ckpt CKPT|--model DIR --images DIR --masks DIR --out DIR
pixperfect export   CKPT OUT [--raw]   (model.safetensors + config.yaml for --model)
pixperfect simulate --images DIR --n 16 --out sheet.png [key=value ...]
pixperfect shards build  --images DIR|LIST.txt|skimage|CORPUS --out OUT [--kind artifact|clean] ...
pixperfect shards verify OUT|MANIFEST_URL|SHARD_PATTERN [--no-decode] [--workers N]
pixperfect preflight --config configs/paper.yaml --nodes 2 --gpus-per-node 8 [key=value ...]
pixperfect config   --config configs/demo.yaml [key=value ...]   (print the resolved config)

Every command's --help ends with examples. Results go to stdout; progress bars, notes and
errors go to stderr. An error is one line, "pixperfect <command>: error: ...", and the exit
status says what failed: 0 success, 1 the work ran and failed (a check that found problems,
a folder with files that failed, a full disk), 2 the command line, config or an input is
wrong (argparse's usage errors too), 130 interrupted. An unexpected error is a bug: it prints
its traceback and exits 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

# This module puts the parser together and runs a command; the commands (options, help,
# examples, handlers) live in pixperfect.commands, one module per group.
from data_sim.errors import SimulatorInputError
from pixperfect import __version__
from pixperfect.allocator import keep_freed_memory
from pixperfect.commands import evaluate, refine, runs, shards
from pixperfect.errors import PixPerfectError

EXPECTED = (PixPerfectError, SimulatorInputError)  # one line and an exit status; else a bug


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pixperfect",
        description=__doc__,
        epilog="`pixperfect COMMAND --help` gives a command's options and examples.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pixperfect {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    runs.add_train_parser(sub)
    evaluate.add_evaluate_parser(sub)
    refine.add_refine_parser(sub)
    refine.add_export_parser(sub)
    runs.add_simulate_parser(sub)
    shards.add_shards_parser(sub)
    runs.add_preflight_parser(sub)
    runs.add_config_parser(sub)
    return parser


def _log_to_stderr() -> None:
    """The project's log records on stderr; one handler however often main() runs (tests),
    writing to the stderr of this run."""
    project_log = logging.getLogger("pixperfect")
    for old in [h for h in project_log.handlers if getattr(h, "pixperfect_cli", False)]:
        project_log.removeHandler(old)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.pixperfect_cli = True
    project_log.addHandler(handler)
    project_log.setLevel(logging.INFO)


def _error(args: argparse.Namespace, message: object, code: int) -> int:
    """One line on stderr, ``pixperfect <command>: error: <message>``; returns ``code``."""
    text = str(message) or type(message).__name__
    print(f"pixperfect {args.command}: error: {text}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit status (module docstring). Expected errors
    (:data:`EXPECTED`) are one line on stderr, without a traceback; anything else is a bug:
    it propagates with its traceback, and Python exits 1."""
    _log_to_stderr()
    # Lightning's advice about dataloader workers on a 2-core laptop is noise in the demo.
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    # The module reads the shards' bookkeeping before the transfer (RefinerModule.
    # on_before_batch_transfer), the data modules define no such hook: nothing is overridden.
    warnings.filterwarnings("ignore", ".*overridden `on_before_batch_transfer`.*")
    # Checkpoints after the step are what we want: a resume continues from that state.
    warnings.filterwarnings("ignore", ".*no pre-optimization state was saved.*")
    args = build_parser().parse_args(argv)
    # The command owns its process: reuse freed CPU memory instead of page-faulting afresh
    # (see pixperfect.allocator; 12-15% of a CPU training step).
    keep_freed_memory()
    try:
        return int(args.func(args) or 0)
    except EXPECTED as e:  # the command line, the config or an input; or work that failed
        return _error(args, e, getattr(e, "exit_code", 2))
    except KeyboardInterrupt:
        print(f"pixperfect {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
