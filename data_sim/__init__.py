"""Artifact simulation: turn clean photos into (composite, mask, target) training triples."""
