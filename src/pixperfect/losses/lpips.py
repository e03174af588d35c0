"""LPIPS as a training loss, built from local weight files only: never a download, never
random weights.

The ``lpips`` package (0.1.4) fetches its ImageNet backbone through torchvision / torch.hub
when asked for pretrained weights, which fails on offline compute nodes with a stack trace
from urllib. So the network is built with random weights and both parts are then loaded
strictly from files staged ahead of time:

- the torchvision backbone, e.g. ``alexnet-owt-7be5be79.pth``, looked up in ``weights_dir``
  and then in ``$TORCH_HOME/hub/checkpoints/`` (torch's hub cache, ``~/.cache/torch/hub``
  by default), where ``torchvision.models.alexnet(weights="IMAGENET1K_V1")`` caches it;
- the LPIPS linear layers (v0.1), e.g. ``alex.pth``: ``weights_dir/lpips_v0.1_alex.pth`` if
  staged, else the copy the ``lpips`` wheel ships under ``lpips/weights/v0.1/``.

A missing file raises :class:`FileNotFoundError` naming the path, the download URL and where
to copy it (or, with ``on_missing="skip"``, disables LPIPS with a logged warning).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from pixperfect.errors import ConfigError, InputError, MissingAssetError

log = logging.getLogger(__name__)

LPIPS_VERSION = "0.1"
# The lpips package's linear weights, for staging when the installed wheel lacks them.
LINEAR_URL = (
    "https://raw.githubusercontent.com/richzhang/PerceptualSimilarity/master/"
    "lpips/weights/v{version}/{net}.pth"
)


LPIPS_NETS = ("alex", "vgg", "squeeze")  # the backbones lpips builds; ``loss.lpips_net``
ON_MISSING = ("error", "skip")  # weights absent: raise, or train without LPIPS


def _backbone_url(net: str) -> str:
    """The torchvision checkpoint lpips builds ``net`` from (its file name is the cache name)."""
    from torchvision.models import AlexNet_Weights, SqueezeNet1_1_Weights, VGG16_Weights

    weights = dict(
        zip(
            LPIPS_NETS,
            (
                AlexNet_Weights.IMAGENET1K_V1,
                VGG16_Weights.IMAGENET1K_V1,
                SqueezeNet1_1_Weights.IMAGENET1K_V1,
            ),
            strict=True,
        )
    )
    if net not in weights:
        raise ConfigError(f"LPIPS net={net!r} is not one of {', '.join(weights)}")
    return weights[net].url


def hub_checkpoint_dir() -> Path:
    """Where torch.hub caches downloaded weights (honours $TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


@dataclass(frozen=True)
class LPIPSFiles:
    """The two files an LPIPS network needs, and where each was (or would be) found."""

    net: str
    backbone_url: str
    backbone_candidates: tuple[Path, ...]
    linear_url: str
    linear_candidates: tuple[Path, ...]

    @property
    def backbone(self) -> Path | None:
        return next((p for p in self.backbone_candidates if p.is_file()), None)

    @property
    def linear(self) -> Path | None:
        return next((p for p in self.linear_candidates if p.is_file()), None)

    def missing_message(self) -> str | None:
        """What is missing and how to stage it; None when both files are there."""
        problems = []
        if self.backbone is None:
            name = self.backbone_candidates[0].name
            problems.append(
                f"the {self.net} backbone weights '{name}' are not at any of: "
                f"{', '.join(map(str, self.backbone_candidates))}. On a machine with internet, "
                f"download {self.backbone_url} (e.g. `curl -L -o {name} {self.backbone_url}`) "
                f"and copy it to {self.backbone_candidates[-1]} (the torch hub cache; set "
                "$TORCH_HOME to move it) or into the weights_dir you pass"
            )
        if self.linear is None:
            name = self.linear_candidates[0].name
            problems.append(
                f"the LPIPS v{LPIPS_VERSION} linear-layer weights are not at any of: "
                f"{', '.join(map(str, self.linear_candidates))}. Download {self.linear_url} "
                f"and save it as {self.linear_candidates[0]} (or reinstall the lpips package, "
                "whose wheel ships it)"
            )
        if not problems:
            return None
        return "LPIPS cannot be built offline: " + "; ".join(problems) + "."


def lpips_files(net: str = "alex", weights_dir: str | Path | None = None) -> LPIPSFiles:
    """The files :func:`build_lpips` will look for, in order, without loading anything."""
    backbone_url = _backbone_url(net)
    backbone_name = backbone_url.rsplit("/", 1)[-1]
    linear_name = f"lpips_v{LPIPS_VERSION}_{net}.pth"
    backbone, linear = [], []
    if weights_dir is not None:
        backbone.append(Path(weights_dir) / backbone_name)
        linear.append(Path(weights_dir) / linear_name)
    backbone.append(hub_checkpoint_dir() / backbone_name)
    try:
        import lpips as lpips_package

        shipped = Path(lpips_package.__file__).parent / "weights" / f"v{LPIPS_VERSION}"
        linear.append(shipped / f"{net}.pth")
    except ImportError:  # the message then names the weights_dir location (or the hub dir)
        pass
    if not linear:
        linear.append(hub_checkpoint_dir() / linear_name)
    return LPIPSFiles(
        net=net,
        backbone_url=backbone_url,
        backbone_candidates=tuple(backbone),
        linear_url=LINEAR_URL.format(version=LPIPS_VERSION, net=net),
        linear_candidates=tuple(linear),
    )


def _load(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise InputError(f"{path} does not hold a state dict")
    return state


def _full_state(network: nn.Module, backbone: dict, linear: dict, files: LPIPSFiles) -> dict:
    """Every tensor of the lpips network, taken from the two files (nothing left at random).

    lpips splits the torchvision ``features`` stack into slices but keeps the layer indices
    (``net.slice2.3.weight`` is ``features.3.weight``); its linear layers appear twice in the
    state dict, as ``lin0..`` and as the aliases ``lins.0..``.
    """
    state, missing = {}, []
    for key, value in network.state_dict().items():
        if key.startswith("scaling_layer."):
            state[key] = value  # constant normalisation buffers, not learned
            continue
        if key.startswith("net."):
            source, source_name = backbone, "features." + key.split(".", 2)[2]
            path = files.backbone
        else:
            source_name = key
            if key.startswith("lins."):
                _, index, rest = key.split(".", 2)
                source_name = f"lin{index}.{rest}"
            source, path = linear, files.linear
        if source_name not in source:
            missing.append(f"{source_name} (in {path})")
            continue
        state[key] = source[source_name]
    if missing:
        raise InputError(
            f"LPIPS-{files.net} weight files lack {len(missing)} tensors, e.g. {missing[:3]}; "
            "are these the right checkpoints?"
        )
    return state


class LPIPS(nn.Module):
    """Frozen LPIPS distance between images in [0, 1]: ``forward(x, y) -> (B,)``.

    The wrapped lpips network is deliberately kept out of this module's parameters and state
    dict: it is not trained, not averaged by EMA, not wrapped by DDP and not written into
    every checkpoint; it always comes from the staged files. ``.to()`` still moves it, and it
    stays in eval mode (the lpips linear layers carry dropout) whatever ``.train()`` says.
    """

    def __init__(self, network: nn.Module, net: str) -> None:
        super().__init__()
        network.eval().requires_grad_(False)
        object.__setattr__(self, "_network", network)  # not registered as a submodule
        self.net = net

    @property
    def network(self) -> nn.Module:
        return self._network

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        self._network._apply(fn, recurse)
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # float32 with autocast off: the per-layer unit normalisation of features is
        # sensitive to bf16 rounding, and the network is small next to the refiner.
        with torch.autocast(device_type=x.device.type, enabled=False):
            distance = self._network(x.float(), y.float(), normalize=True)  # [0,1] -> [-1,1]
        return distance.reshape(x.shape[0])

    def extra_repr(self) -> str:
        return f"net={self.net!r}, version={LPIPS_VERSION!r} (frozen, not in state_dict)"


def build_lpips(
    net: str = "alex",
    weights_dir: str | Path | None = None,
    on_missing: Literal["error", "skip"] = "error",
) -> LPIPS | None:
    """LPIPS-``net`` loaded strictly from local files (see :func:`lpips_files`).

    ``on_missing="error"`` raises :class:`FileNotFoundError` naming each missing file, its URL
    and where to copy it; ``"skip"`` logs that LPIPS is disabled and returns None.
    """
    if on_missing not in ON_MISSING:
        raise ValueError(f"on_missing={on_missing!r} must be one of {', '.join(ON_MISSING)}")
    files = lpips_files(net, weights_dir)
    problem = files.missing_message()
    if problem is not None:
        if on_missing == "skip":
            log.warning("%s LPIPS terms are disabled for this run.", problem)
            return None
        raise MissingAssetError(problem)

    import lpips as lpips_package

    with warnings.catch_warnings():
        # lpips passes torchvision's deprecated `pretrained=False`; nothing is downloaded.
        warnings.simplefilter("ignore", UserWarning)
        network = lpips_package.LPIPS(
            pretrained=False,  # linear layers: loaded below, not by lpips
            net=net,
            version=LPIPS_VERSION,
            pnet_rand=True,  # backbone: loaded below, never through torch.hub
            verbose=False,
        )
    state = _full_state(network, _load(files.backbone), _load(files.linear), files)
    network.load_state_dict(state, strict=True)
    log.info("LPIPS-%s loaded from %s and %s", net, files.backbone, files.linear)
    return LPIPS(network, net)
