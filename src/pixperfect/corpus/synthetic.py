"""A small corpus in img2dataset's layout, for tests, benchmarks and the demo.

``{shard:05d}.tar`` holding ``{key}.jpg``, ``{key}.json`` and ``{key}.txt`` per sample (key
``{shard:05d}{index:04d}``) with ``{shard:05d}_stats.json`` beside it, as img2dataset writes
them (``encode_quality`` 95, images resized so the shorter side is ``side``). Optionally the
defects a real crawl has: a JPEG cut before its end marker, an image far below the crop
size, a sample stored as PNG, and a sample whose download failed (json only).
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

DEFECTS = ("truncated", "tiny", "png", "no_image")


def _resized(photo: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    """A random region of ``photo`` (RGB uint8), resized so its shorter side is ``side``."""
    h, w = photo.shape[:2]
    ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
    top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    region = photo[top : top + ch, left : left + cw]
    s = side / min(ch, cw)
    size = (max(side, round(cw * s)), max(side, round(ch * s)))
    return cv2.resize(region, size, interpolation=cv2.INTER_AREA)


def _jpeg(pixels: np.ndarray, quality: int = 95) -> bytes:
    ok, data = cv2.imencode(".jpg", pixels[..., ::-1].copy(), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return data.tobytes()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), 0
    tar.addfile(info, io.BytesIO(data))


def write_corpus(
    out: str | Path,
    photos: Sequence[np.ndarray],
    shards: int = 2,
    per_shard: int = 8,
    side: int = 256,
    seed: int = 0,
    defects: Sequence[str] = (),
) -> list[Path]:
    """Write the corpus under ``out`` and return its tar paths. ``defects`` go into the
    first shard, one sample each, replacing good samples (see :data:`DEFECTS`)."""
    unknown = set(defects) - set(DEFECTS)
    if unknown:
        raise ValueError(f"unknown defects {sorted(unknown)}; choose from {', '.join(DEFECTS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for shard in range(shards):
        path = out / f"{shard:05d}.tar"
        stats = {"count": per_shard, "successes": 0, "failed_to_download": 0}
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for index in range(per_shard):
                key = f"{shard:05d}{index:04d}"
                defect = defects[index] if shard == 0 and index < len(defects) else None
                pixels = _resized(photos[int(rng.integers(len(photos)))], side, rng)
                meta = {"key": key, "url": f"https://example.org/{key}.jpg", "status": "success"}
                if defect == "no_image":
                    meta["status"] = "failed_to_download"
                    stats["failed_to_download"] += 1
                    _add(tar, f"{key}.json", json.dumps(meta).encode())
                    continue
                if defect == "png":
                    ok, data = cv2.imencode(".png", pixels[..., ::-1].copy())
                    name = f"{key}.png"
                elif defect == "tiny":
                    data, name = _jpeg(cv2.resize(pixels, (24, 16))), f"{key}.jpg"
                else:
                    data, name = _jpeg(pixels), f"{key}.jpg"
                    if defect == "truncated":
                        data = data[: len(data) * 2 // 3]
                stats["successes"] += 1
                _add(tar, name, bytes(data))
                _add(tar, f"{key}.json", json.dumps(meta).encode())
                _add(tar, f"{key}.txt", f"a photo {key}".encode())
        (out / f"{shard:05d}_stats.json").write_text(json.dumps(stats))
        paths.append(path)
    return paths


def skimage_photos() -> list[np.ndarray]:
    """scikit-image's bundled colour photos as RGB uint8 (the offline default source)."""
    from pixperfect.data.photos import SKIMAGE_PHOTOS, load_skimage_photo

    return [
        (load_skimage_photo(n).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        for n in SKIMAGE_PHOTOS
    ]
