"""How one sample lives in a shard: file names inside the tar, encodings, and decoding back
to the batch schema the training step uses.

Artifact samples: ``target``, ``composite`` (RGB, lossless), ``mask`` and ``alpha`` (grey,
8-bit PNG) and ``params.json`` (the drawn simulation parameters and the crop's origin, so
any sample can be explained and replayed). Clean samples: ``target`` and ``params.json``.

RGB images are stored losslessly as PNG (default) or WebP (``lossless`` mode): both decode
to exactly the pixels written, so a shard reproduces the batch the simulator made, up to
8-bit quantisation. Masks are binary and alphas smooth; PNG's filters code both in a few
hundred bytes, so they are PNG whatever the RGB format.

``source`` (corpus builds): the target is the source image's own encoded bytes
(``source.jpg``, ``.jpeg``, ``.png`` or ``.webp``, as the corpus stored them) and the crop box
in ``params.json`` (``origin``: ``top``, ``left``, ``size``, ``flip``); the reader decodes them
with :func:`decode_image` (also the corpus reader's, ``pixperfect.corpus.decode_image``) and
crops, so the target is bit-exact to the crop the builder made, at the size of the source
JPEG instead of a lossless crop. The source is kept only when it is not the larger choice: up to
:data:`SOURCE_FAST_BYTES_PER_PIXEL` byte per crop pixel it is kept unexamined (lossless
crops of photos take more), above that only when it is no larger than the crop as lossless
WebP, which is stored instead (``target.webp``; a large photo's bytes would cost more than
its crop). An upscaled small image is always stored as its lossless crop (the reader does not
resize). Other RGB images (the composite) are lossless WebP.

``avif`` (compact, lossy with a stated floor): every RGB image is AVIF with full-resolution
chroma (4:4:4), at the lowest quality in :data:`AVIF_QUALITIES` whose decoded pixels are at
least :data:`AVIF_MIN_PSNR_DB` dB PSNR against the lossless crop (quality 100 if none is);
``params.json`` records each image's quality and PSNR under ``encoded``. Lossless formats
cannot go below about one byte per pixel on photos, and JPEG needs quality 98 (two thirds of
lossless WebP's bytes) to hold 45 dB on Kodak crops; AVIF holds it at about 0.4 of lossless
WebP's bytes on an img2dataset-style corpus (docs/shards.md).
"""

from __future__ import annotations

import io
import json

import cv2
import numpy as np
import torch

from pixperfect.errors import InputError

FORMATS = ("png", "webp", "source", "avif")
PIXEL_FORMATS = ("png", "webp", "avif")  # how images are stored as pixels
LOSSLESS_FORMATS = ("png", "webp")  # pixels exactly as written
AVIF_MIN_PSNR_DB = 45.0
AVIF_QUALITIES = tuple(range(80, 101))
SOURCE_EXTS = ("jpg", "jpeg", "png", "webp")
SOURCE_FAST_BYTES_PER_PIXEL = 1.0
KINDS = ("artifact", "clean")
RGB_KEYS = {"artifact": ("target", "composite"), "clean": ("target",)}
GREY_KEYS = {"artifact": ("mask", "alpha"), "clean": ()}


def _encode(pixels: np.ndarray, fmt: str) -> bytes:
    params = [cv2.IMWRITE_WEBP_QUALITY, 101] if fmt == "webp" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, data = cv2.imencode(f".{fmt}", pixels, params)  # quality 101 = lossless WebP
    if not ok:
        raise ValueError(f"OpenCV could not encode a {pixels.shape} image as {fmt}")
    return data.tobytes()


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two uint8 images in dB (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * float(np.log10(255.0**2 / mse))


def _avif_encode(rgb: np.ndarray, quality: int) -> bytes:
    from PIL import Image, features

    if not features.check("avif"):
        raise RuntimeError("this Pillow has no AVIF codec: pip install 'pillow>=11.3'")

    out = io.BytesIO()
    Image.fromarray(rgb).save(out, "AVIF", quality=quality, subsampling="4:4:4", speed=6)
    return out.getvalue()


def _avif_decode(data: bytes) -> np.ndarray:
    """(H, W, 3) uint8 RGB."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except Exception as e:  # PIL raises many kinds on bad bytes
        raise InputError(f"undecodable AVIF bytes ({e})") from None


def encode_avif(rgb: np.ndarray) -> tuple[bytes, dict[str, float]]:
    """``rgb`` (H, W, 3) uint8 as AVIF at the lowest quality holding the PSNR floor, with
    ``{"quality", "psnr_db"}`` (see the module docstring). A bisection over
    :data:`AVIF_QUALITIES` (PSNR rises with quality): about five encodes per image."""
    tried: dict[int, tuple[bytes, float]] = {}

    def attempt(i: int) -> bool:
        quality = AVIF_QUALITIES[i]
        if quality not in tried:
            data = _avif_encode(rgb, quality)
            tried[quality] = data, psnr_db(_avif_decode(data), rgb)
        return tried[quality][1] >= AVIF_MIN_PSNR_DB

    lo, hi = 0, len(AVIF_QUALITIES) - 1  # the answer is in [lo, hi]; hi if none holds
    while lo < hi:
        mid = (lo + hi) // 2
        if attempt(mid):
            hi = mid
        else:
            lo = mid + 1
    attempt(hi)
    data, psnr = tried[AVIF_QUALITIES[hi]]
    return data, {"quality": AVIF_QUALITIES[hi], "psnr_db": round(min(psnr, 99.0), 2)}


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def _source_member(rgb: np.ndarray, source: tuple[str, bytes] | None) -> tuple[str, bytes]:
    """(member, bytes) of a ``source``-format target: the source's own bytes, or the crop as
    lossless WebP where that is smaller (see the module docstring)."""
    if source is not None:
        ext, data = source
        if len(data) <= SOURCE_FAST_BYTES_PER_PIXEL * rgb.shape[0] * rgb.shape[1]:
            return f"source.{ext}", data
    lossless = _encode(np.ascontiguousarray(rgb[..., ::-1]), "webp")
    if source is not None and len(source[1]) <= len(lossless):
        return f"source.{source[0]}", source[1]
    return "target.webp", lossless


def encode_sample(
    key: str,
    sample: dict[str, torch.Tensor],
    params: dict,
    kind: str,
    fmt: str,
    source: tuple[str, bytes] | None = None,
) -> dict[str, bytes | str]:
    """The tar members of one sample: ``sample`` holds (3|1, H, W) float tensors in [0, 1].
    With ``fmt="source"``, ``source`` is the (extension, bytes) of the image the target was
    cropped from as ``params["origin"]`` says (None: not croppable from it, e.g. upscaled)."""
    record: dict[str, bytes | str] = {"__key__": key}
    for name in RGB_KEYS[kind]:
        rgb = _to_uint8(sample[name]).transpose(1, 2, 0)
        if fmt == "avif":
            record[f"{name}.avif"], fidelity = encode_avif(np.ascontiguousarray(rgb))
            params = {**params, "encoded": {**params.get("encoded", {}), name: fidelity}}
            continue
        if fmt == "source" and name == "target":
            member, data = _source_member(rgb, source)
            record[member] = data
            continue
        pixels = "webp" if fmt == "source" else fmt
        record[f"{name}.{pixels}"] = _encode(np.ascontiguousarray(rgb[..., ::-1]), pixels)  # BGR
    for name in GREY_KEYS[kind]:
        record[f"{name}.png"] = _encode(_to_uint8(sample[name][0]), "png")
    record["params.json"] = json.dumps(params, sort_keys=True, separators=(",", ":")).encode()
    return record


def _decode(data: bytes, grey: bool, avif: bool = False) -> torch.Tensor:
    """(C, H, W) uint8."""
    if avif:
        return torch.from_numpy(_avif_decode(data).copy()).permute(2, 0, 1)
    flag = cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if pixels is None:
        raise ValueError("undecodable image bytes")
    if grey:
        return torch.from_numpy(pixels)[None]
    return torch.from_numpy(cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)).permute(2, 0, 1)


def decode_image(data: bytes) -> np.ndarray:
    """(H, W, 3) uint8 RGB (grey expanded, alpha dropped, 16 bits reduced, EXIF orientation
    applied); raises ValueError when OpenCV cannot decode it. The corpus reader
    (:mod:`pixperfect.corpus`, which re-exports it) and the ``source`` format's reader both
    decode with it, so a crop of stored source bytes is bit-exact to the builder's."""
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if pixels is None or pixels.size == 0:
        raise ValueError("undecodable image bytes")
    return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)  # 5x faster than a strided numpy copy


def _source_crop(data: bytes, params: bytes | None) -> torch.Tensor:
    """(3, size, size) uint8: the crop box of ``params.json``'s ``origin`` out of the decoded
    source image, flipped as it says."""
    try:
        origin = json.loads(params or b"{}")["origin"]
        top, left, size, flip = (origin[k] for k in ("top", "left", "size", "flip"))
    except (KeyError, TypeError) as e:
        what = "params.json has no crop box (origin: top, left, size, flip)"
        raise InputError(f"{what}: {e}") from None
    pixels = decode_image(data)
    h, w = pixels.shape[:2]
    if top < 0 or left < 0 or top + size > h or left + size > w:
        raise InputError(f"crop box {size}px at ({top}, {left}) is outside the {w}x{h} source")
    crop = pixels[top : top + size, left : left + size]
    if flip:
        crop = crop[:, ::-1]
    return torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)


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
        member = next((k for k in (f"{name}.{f}" for f in PIXEL_FORMATS) if k in record), None)
        if member is None and name == "target":
            member = next((f"source.{e}" for e in SOURCE_EXTS if f"source.{e}" in record), None)
        if member is None:
            raise InputError(
                f"{where} has no {name} image (expected {name}.png, .webp or .avif"
                + (", or source.jpg and a crop box)" if name == "target" else ")")
            )
        try:
            if member.startswith("source."):
                out[name] = _source_crop(record[member], record.get("params.json"))
            else:
                out[name] = _decode(record[member], grey=False, avif=member.endswith(".avif"))
        except ValueError as e:
            raise InputError(f"{where}: {member}: {e}") from None
    for name in GREY_KEYS[kind]:
        if f"{name}.png" not in record:
            raise InputError(f"{where} has no {name}.png")
        try:
            out[name] = _decode(record[f"{name}.png"], grey=True)
        except ValueError as e:
            raise InputError(f"{where}: {name}.png: {e}") from None
    shapes = {tuple(v.shape[-2:]) for v in out.values()}
    if len(shapes) != 1:
        raise InputError(f"{where}: its images differ in size {sorted(shapes)}")
    return out if as_uint8 else to_float(out)
