"""Where training photos come from and under which terms: the provenance of exported weights.

:func:`describe_sources` groups a shard recipe's sources by folder and attaches what is
known of each public collection in ``../shared/data/photos`` and of scikit-image's photos. A
recipe names its sources by a summary (photos per collection, a corpus's pattern), not a
list of every photo; recipes written before that listed every path, and both are read.
The terms are as the collections are commonly distributed, not checked file by file: a
folder that is not listed here is reported with ``licence: unknown``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import PurePath

KNOWN_COLLECTIONS: dict[str, dict[str, str]] = {
    "cbsd68": {
        "source": "CBSD68: the 68 colour test photos of the Berkeley Segmentation Dataset "
        "(BSDS300, Martin et al., ICCV 2001)",
        "licence": "Berkeley Segmentation Dataset terms: non-commercial research and "
        "education (photos from the Corel collection)",
    },
    "mcmaster18": {
        "source": "McMaster colour set (Zhang, Wu, Buades and Li, J. Electronic Imaging 2011)",
        "licence": "research use, as distributed by the authors",
    },
    "sun_hays80": {
        "source": "Sun-Hays 80 (Sun and Hays, ICCP 2012): Flickr photos",
        "licence": "research use, as distributed by the authors; each photo keeps its "
        "Flickr owner's licence",
    },
    "urban100": {
        "source": "Urban100 (Huang, Singh and Ahuja, CVPR 2015): Flickr photos of buildings",
        "licence": "research use, as distributed by the authors; each photo keeps its "
        "Flickr owner's licence",
    },
    "wikimedia49": {
        "source": "49 photos from Wikimedia Commons",
        "licence": "each file's Wikimedia Commons licence (public domain or Creative "
        "Commons); not recorded per file in this collection",
    },
    "kodak": {
        "source": "Kodak Lossless True Colour Image Suite (PhotoCD PCD0992)",
        "licence": "released by Eastman Kodak for unrestricted use",
    },
    "skimage": {
        "source": "scikit-image's bundled photos (skimage.data)",
        "licence": "per image, listed in skimage/data/README.txt (public domain, CC0 or "
        "CC BY); scikit-image itself is BSD-3",
    },
}
UNKNOWN = {"source": "unknown collection", "licence": "unknown: check before redistribution"}


def collection_of(source: str) -> str:
    """The collection a source path belongs to: its folder's name, or ``skimage``."""
    if source.startswith("skimage:"):
        return "skimage"
    return PurePath(source).parent.name


def describe_sources(sources: list[str] | dict) -> list[dict]:
    """One entry per collection, in first-seen order: ``collection``, ``photos`` (count),
    ``source`` and ``licence``. ``sources`` is a list of photo paths, or a recipe's summary:
    ``{"collections": {name: count}, ...}`` of a photo build, or ``{"corpus": PATTERN,
    "input_shards": N, ...}`` of a corpus build (one entry: the pattern, photos unknown before
    the build counts them, terms unknown)."""
    if isinstance(sources, dict):
        if "corpus" in sources:
            return [
                {
                    "collection": sources["corpus"],
                    "photos": sources.get("images"),
                    "input_shards": sources.get("input_shards"),
                    **UNKNOWN,
                }
            ]
        counts = Counter(sources.get("collections") or {})
    else:
        counts = Counter(collection_of(s) for s in sources)
    return [
        {"collection": name, "photos": n, **KNOWN_COLLECTIONS.get(name, UNKNOWN)}
        for name, n in counts.items()
    ]
