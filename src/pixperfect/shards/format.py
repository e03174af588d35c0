"""How one sample lives in a shard: file names inside the tar, encodings, and decoding back
to the batch schema the training step uses.

Artifact samples: ``target``, ``composite`` (RGB, lossless), ``mask`` and ``alpha`` (grey,
8-bit PNG) and ``params.json`` (the drawn simulation parameters and the crop's origin, so
any sample can be explained and replayed). Clean samples: ``target`` and ``params.json``.

RGB images are stored losslessly as PNG (default) or WebP (``lossless`` mode): both decode
to exactly the pixels written, so a shard reproduces the batch the simulator made, up to
8-bit quantisation. Masks are binary and alphas smooth; PNG's filters code both in a few
hundred bytes, so they are PNG whatever the RGB format.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import torch

FORMATS = ("png", "webp")
KINDS = ("artifact", "clean")
RGB_KEYS = {"artifact": ("target", "composite"), "clean": ("target",)}
GREY_KEYS = {"artifact": ("mask", "alpha"), "clean": ()}


def _encode(pixels: np.ndarray, fmt: str) -> bytes:
    params = [cv2.IMWRITE_WEBP_QUALITY, 101] if fmt == "webp" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, data = cv2.imencode(f".{fmt}", pixels, params)  # quality 101 = lossless WebP
    if not ok:
        raise ValueError(f"OpenCV could not encode a {pixels.shape} image as {fmt}")
    return data.tobytes()


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def encode_sample(
    key: str, sample: dict[str, torch.Tensor], params: dict, kind: str, fmt: str
) -> dict[str, bytes | str]:
    """The tar members of one sample: ``sample`` holds (3|1, H, W) float tensors in [0, 1]."""
    record: dict[str, bytes | str] = {"__key__": key}
    for name in RGB_KEYS[kind]:
        rgb = _to_uint8(sample[name]).transpose(1, 2, 0)
        record[f"{name}.{fmt}"] = _encode(np.ascontiguousarray(rgb[..., ::-1]), fmt)  # BGR
    for name in GREY_KEYS[kind]:
        record[f"{name}.png"] = _encode(_to_uint8(sample[name][0]), "png")
    record["params.json"] = json.dumps(params, sort_keys=True, separators=(",", ":")).encode()
    return record


def _decode(data: bytes, grey: bool) -> torch.Tensor:
    """(C, H, W) uint8."""
    flag = cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if pixels is None:
        raise ValueError("undecodable image bytes")
    if grey:
        return torch.from_numpy(pixels)[None]
    return torch.from_numpy(cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)).permute(2, 0, 1)


def to_float(sample: dict) -> dict:
    """uint8 images of a sample or batch (from ``decode_sample(..., as_uint8=True)``) to
    float in [0, 1], the mask binarised; other entries pass through. Done on the device by
    the training step: batches cross process boundaries and the bus at a quarter the size."""
    out = dict(sample)
    for key, value in sample.items():
        if isinstance(value, torch.Tensor) and value.dtype == torch.uint8:
            out[key] = (value >= 128).float() if key == "mask" else value.float().div_(255)
    return out


def decode_sample(record: dict, kind: str, as_uint8: bool = False) -> dict[str, torch.Tensor]:
    """A tar record (as webdataset yields it: ``__key__``, ``__url__``, bytes per member)
    back to tensors under the batch keys: float in [0, 1] (mask binary), or the stored uint8
    with ``as_uint8`` (see :func:`to_float`). Raises ``ValueError`` naming what is wrong, so
    the reader can skip and count the sample."""
    out: dict[str, torch.Tensor] = {}
    where = f"sample {record.get('__key__')!r} of {record.get('__url__', '?')}"
    for name in RGB_KEYS[kind]:
        member = next((k for k in (f"{name}.{f}" for f in FORMATS) if k in record), None)
        if member is None:
            raise ValueError(f"{where} has no {name} image (expected {name}.png or .webp)")
        try:
            out[name] = _decode(record[member], grey=False)
        except ValueError as e:
            raise ValueError(f"{where}: {member}: {e}") from None
    for name in GREY_KEYS[kind]:
        if f"{name}.png" not in record:
            raise ValueError(f"{where} has no {name}.png")
        try:
            out[name] = _decode(record[f"{name}.png"], grey=True)
        except ValueError as e:
            raise ValueError(f"{where}: {name}.png: {e}") from None
    shapes = {tuple(v.shape[-2:]) for v in out.values()}
    if len(shapes) != 1:
        raise ValueError(f"{where}: its images differ in size {sorted(shapes)}")
    return out if as_uint8 else to_float(out)
