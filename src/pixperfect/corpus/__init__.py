"""Image corpora in webdataset tar shards, read where they are (img2dataset's layout).

A corpus is a set of tar shards whose samples each hold one image (``jpg``, ``jpeg``,
``png`` or ``webp``) beside anything else (``json``, ``txt``...): ``00000.tar`` holding
``000000000.jpg``, ``000000000.json``, ... on a filesystem, behind HTTP, in a bucket or
behind a ``pipe:`` command. This package owns naming a corpus's input shards
(:mod:`.listing`) and reading its images with input hygiene (:mod:`.images`); the shard
builder (``pixperfect shards build --images PATTERN``) and the training route
(``data.source=corpus``) both read through it, so they skip and count alike.
"""

from pixperfect.corpus.images import (
    CorpusImage,
    Hygiene,
    SkipTally,
    corpus_images,
    decode_image,
    image_member,
    integrity_error,
)
from pixperfect.corpus.listing import corpus_shards, is_corpus, shard_stem

__all__ = [
    "CorpusImage",
    "Hygiene",
    "SkipTally",
    "corpus_images",
    "corpus_shards",
    "decode_image",
    "image_member",
    "integrity_error",
    "is_corpus",
    "shard_stem",
]
