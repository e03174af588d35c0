"""Crops to tar records: batches of :data:`~pixperfect.shards.recipe.SIM_BATCH` crops are
simulated together (artifact shards; parameters drawn per sample on the CPU from the crop's
own generator, applied on the build's device) and encoded into one shard
(:mod:`pixperfect.shards.format`). Photo builds and corpus builds both write through
:class:`SampleWriter`, so a crop and its generator give the same bytes whichever made them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from data_sim.simulator import ArtifactSimulator
from pixperfect.shards.format import encode_sample
from pixperfect.shards.recipe import SIM_BATCH, sim_from_dict
from pixperfect.shards.writing import ShardFile


@dataclass
class Crop:
    """One planned sample: its key, the (3, S, S) float crop, where it came from (for
    ``params.json``), the generator that drew the crop and draws its simulation, and (for
    ``--format source``) the source's (extension, bytes) when the crop can be cut from them."""

    key: str
    pixels: torch.Tensor
    origin: dict
    generator: torch.Generator
    source: tuple[str, bytes] | None = None


def _params_slice(params: dict, i: int) -> dict:
    return {f: {k: v[i].tolist() for k, v in p.items()} for f, p in params.items()}


def _cat_params(parts: list[dict]) -> dict:
    return {f: {k: torch.cat([p[f][k] for p in parts]) for k in parts[0][f]} for f in parts[0]}


class SampleWriter:
    """Collects crops for one shard and writes them, simulated and encoded, in batches."""

    def __init__(self, shard: ShardFile, spec, simulator: ArtifactSimulator | None) -> None:
        self.shard, self.kind, self.size = shard, spec.kind, spec.size
        self.image_format, self.device = spec.image_format, torch.device(spec.device)
        self.simulator = simulator
        self.pending: list[Crop] = []

    def add(self, crop: Crop) -> None:
        self.pending.append(crop)
        if len(self.pending) == SIM_BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        clean = torch.stack([c.pixels for c in self.pending])
        if self.simulator is None:
            batch, params = {"target": clean}, None
        else:
            s = self.size
            parts = [self.simulator.sample_params(1, s, s, c.generator) for c in self.pending]
            params = _cat_params(parts)
            # Drawn on the CPU, simulated on the device, encoded on the CPU (no-ops on cpu).
            batch = self.simulator.apply(clean.to(self.device), params)
            batch = {k: v.cpu() for k, v in batch.items()}
        for i, crop in enumerate(self.pending):
            meta = {"origin": crop.origin}
            if params is not None:
                meta["sim"] = _params_slice(params, i)
            sample = {k: v[i] for k, v in batch.items()}
            record = encode_sample(
                crop.key, sample, meta, self.kind, self.image_format, crop.source
            )
            self.shard.write(record)
        self.pending.clear()


def make_simulator(spec) -> ArtifactSimulator | None:
    """The recipe's simulator for artifact shards, None for clean ones."""
    return ArtifactSimulator(sim_from_dict(spec.sim)) if spec.kind == "artifact" else None
