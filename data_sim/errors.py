"""The simulator's input errors: a config or a staged file the caller can fix, told apart
from a bug (a tensor of the wrong shape passed by code stays a plain ``ValueError``).

``data_sim`` is the lowest layer and imports nothing of ``pixperfect``; the ``pixperfect``
command prints these, like its own (:mod:`pixperfect.errors`), as one line and exits 2.
Each subclasses the built-in exception callers have always caught.
"""

from __future__ import annotations


class SimulatorInputError(Exception):
    """An expected error of the simulator's inputs; the message says how to fix it."""


class SimConfigError(SimulatorInputError, ValueError):
    """A ``sim.*`` setting out of range or not one of its choices, with the key named."""


class CodecWeightsError(SimulatorInputError, ValueError):
    """A staged codec weight file that is not what the codec needs."""


class MissingCodecWeightsError(SimulatorInputError, FileNotFoundError):
    """Codec weights that are not staged where the config says."""
