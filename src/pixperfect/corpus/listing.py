"""Which input shards a corpus names: memory and time bounded by shards, never by images.

A corpus location is one of:

- a brace pattern or single tar, local or remote (``/data/laion/{00000..09999}.tar``,
  ``https://host/c/{00000..00099}.tar``, ``pipe:curl -sf https://host/c/{0..9}.tar``,
  ``s3://bucket/c/{00000..00999}.tar``);
- a ``.txt`` file (local path or URL) listing tar URLs or patterns, one per line (``#``
  starts a comment; relative entries are taken beside the list).

Nothing here opens a shard: expanding ``{00000..99999}`` is string work, so a plan over
10^5 input shards is a list of 10^5 URLs and nothing more.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import webdataset as wds

from pixperfect.errors import InputError, MissingFileError
from pixperfect.shards import locations

_TAR = re.compile(r"\.(tar|tgz|tar\.gz)$")


def _is_list(location: str) -> bool:
    return not location.startswith("pipe:") and locations._path_part(location).endswith(".txt")


def is_corpus(location: str | Path) -> bool:
    """Whether ``location`` names tar shards of images (a pattern, a tar or a ``.txt`` list
    of them) rather than a folder of loose photos or ``skimage``."""
    text = str(location)
    if _is_list(text):
        return True
    if text.startswith("pipe:"):
        return True
    path = locations._path_part(text)
    return bool(_TAR.search(path)) or ("{" in path and ".tar" in path)


def _read_list(location: str) -> list[str]:
    if locations.is_url(location):
        text = locations.read_bytes(location).decode()
    else:
        path = Path(location)
        if not path.is_file():
            raise MissingFileError(f"corpus list {path} does not exist")
        text = path.read_text()
    entries = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            entries.append(line)
    return entries


def corpus_shards(location: str | Path) -> list[str]:
    """The input shard URLs (or paths) of a corpus, in a stable order; raises ValueError
    naming the location when it names none."""
    text = str(location)
    if not is_corpus(text):
        raise InputError(
            f"{text!r} is not a corpus of tar shards: give a brace pattern or URL of tars "
            "(e.g. /data/corpus/{00000..00099}.tar), or a .txt listing them"
        )
    if _is_list(text):
        urls: list[str] = []
        for entry in _read_list(text):
            urls.extend(corpus_shards(locations.join(text, entry)))
        if not urls:
            raise InputError(f"corpus list {text} lists no shard")
        return urls
    urls = list(wds.shardlists.expand_urls(text))
    if not urls:
        raise InputError(f"{text}: the pattern names no shard")
    return urls


def shard_stem(url: str) -> str:
    """An input shard's name without folders and suffix (``.../00042.tar`` -> ``00042``):
    output shards are named after it. A ``pipe:`` command's last word is taken as its URL."""
    if url.startswith("pipe:"):
        url = url.split()[-1]
    name = PurePosixPath(locations._path_part(url) if locations.is_url(url) else url).name
    return _TAR.sub("", name) or name
