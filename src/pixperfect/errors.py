"""The project's exception types: a mistake of the user's, told apart from a bug.

An expected input error (a bad config key or value, a missing or unreadable input file, a bad
image or mask, staged weights that are not there, shards that do not match the run, a bad
command-line argument) is raised as a :class:`PixPerfectError`, whose message names the bad
input and the fix. The ``pixperfect`` command prints such an error as one line and exits 2
(or 1 for :class:`WorkFailed`); any other exception is a bug and keeps its traceback.

Each type also subclasses the built-in exception callers have always caught (``ValueError``,
``FileNotFoundError``, ``OSError``, ``RuntimeError``), so code that catches those still does.
The simulator (``data_sim``) sits below this package and raises its own input errors
(:mod:`data_sim.errors`); the command treats those alike.
"""

from __future__ import annotations


class PixPerfectError(Exception):
    """An expected error: the input is wrong, not the code. The message says how to fix it."""

    exit_code = 2  # what the ``pixperfect`` command exits with


class ConfigError(PixPerfectError, ValueError):
    """A config that must not launch, with the offending key named."""


class InputError(PixPerfectError, ValueError):
    """A bad input: an image, a mask, a checkpoint, a shard, a command-line argument."""


class MissingFileError(PixPerfectError, FileNotFoundError):
    """An input file or folder that is not there."""


class MissingAssetError(MissingFileError):
    """Staged weights (LPIPS, TAESD, the shipped refiner) that are not where they should be."""


class WorkFailed(PixPerfectError):
    """The work ran and failed for a reason the message explains (a full disk, tasks that
    failed): one line, exit 1."""

    exit_code = 1


class ReadFailed(WorkFailed, OSError):
    """A location that could not be read: a transfer that broke, a server that does not
    answer, a reading command that failed or is not installed."""
