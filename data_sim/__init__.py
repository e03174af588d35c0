"""Artifact simulation: turn clean photos into (composite, mask, target) training triples."""

# Bumped whenever the same parameters give different pixels, so artifact shards built by
# another simulator are never resumed into one set (pixperfect.shards.build's recipe).
# 2: libjpeg's baseline JPEG instead of kornia's differentiable codec; one-channel luma grain.
SIM_VERSION = 2
