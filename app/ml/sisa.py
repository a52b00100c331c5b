"""SISA: Sharded, Isolated, Sliced, Aggregated training (Bourtoule et al., IEEE S&P 2021).

The training IDs are split (seeded) into S disjoint shards; one CNN is trained per shard,
in isolation. Each shard's data is further cut into R slices that are learnt incrementally:
stage r trains on slices 0..r for ``epochs_per_slice`` epochs, starting from the weights
after stage r-1. The weights *before* each stage are kept as checkpoints.

Forgetting samples is exact and local: only the shards holding them are retrained, each
from the checkpoint before the first slice that held a forgotten sample, on the same
slices minus the forgotten samples. Every stage restarts its optimizer and is seeded by
(seed, shard, stage), so a retrained shard is the model that training without those
samples would have produced, and untouched shards stay bit-identical.

Predictions average the shards' probabilities; ``forward`` returns their logarithm, so
softmax(forward(x)) is the mean probability and cross-entropy on it is the ensemble's loss.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from torch import nn

from app.architectures.base import ImageClassifier, ModelSpec
from app.architectures.catalog import build_model, empty_model
from app.ml.data import ImageData
from app.ml.training import TrainingRecipe, train_model

KIND = "sisa"
State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class SisaRecipe:
    shards: int = 5
    slices: int = 3
    epochs_per_slice: int = 1
    batch_size: int = 64
    learning_rate: float = 2e-3
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def stage_seed(self, shard: int, stage: int) -> int:
        return self.seed * 1_000_003 + shard * 1_009 + stage


def _copy_state(model: nn.Module) -> State:
    return {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}


class SisaEnsemble(nn.Module):
    kind = KIND

    def __init__(self, recipe: SisaRecipe, spec: ModelSpec, shard_ids: list[torch.Tensor],
                 slice_ends: list[torch.Tensor]):
        super().__init__()
        self.recipe = recipe
        self.spec = spec  # every member's architecture, class count and input shape
        # Empty until trained or loaded: nothing drawn from torch's generator here.
        self.shards = nn.ModuleList(empty_model(spec) for _ in shard_ids)
        # Official training IDs of each shard, in slice order; slice r of shard s is
        # shard_ids[s][slice_ends[s][r-1]:slice_ends[s][r]].
        self.shard_ids = [ids.to(torch.int64).clone() for ids in shard_ids]
        self.slice_ends = [ends.to(torch.int64).clone() for ends in slice_ends]
        # checkpoints[s][r]: shard s's weights before stage r (r = 0 is the initialisation).
        self.checkpoints: list[list[State]] = [[] for _ in shard_ids]
        # Set by ``forget_samples``: which shards were retrained, from which slice.
        self.forget_report: dict | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probabilities = torch.stack([torch.softmax(shard(x), dim=1) for shard in self.shards])
        return probabilities.mean(dim=0).clamp_min(1e-12).log()

    def slices_of(self, shard: int) -> list[torch.Tensor]:
        ids, ends = self.shard_ids[shard], self.slice_ends[shard].tolist()
        starts = [0, *ends[:-1]]
        return [ids[a:b] for a, b in zip(starts, ends)]

    # -- training ------------------------------------------------------------------------

    def train_shard(self, shard: int, data: ImageData, first_stage: int = 0,
                    device: torch.device = torch.device("cpu"), progress=None) -> None:
        """(Re)train shard ``shard`` from the checkpoint before ``first_stage``."""
        recipe = self.recipe
        if first_stage == 0:
            torch.manual_seed(recipe.stage_seed(shard, 0))
            model = build_model(self.spec)
            self.checkpoints[shard] = []
        else:
            model = empty_model(self.spec)
            model.load_state_dict(self.checkpoints[shard][first_stage])
            self.checkpoints[shard] = self.checkpoints[shard][:first_stage]
        slices = self.slices_of(shard)
        positions = _positions(data, self.shard_ids[shard])
        for stage in range(first_stage, recipe.slices):
            self.checkpoints[shard].append(_copy_state(model))
            ids = torch.cat(slices[: stage + 1])
            pick = positions[ids]
            if (pick < 0).any():
                raise ValueError(f"shard {shard} holds training IDs that the loaded data lacks")
            if ids.numel() == 0:
                continue
            stage_recipe = TrainingRecipe(
                seed=recipe.stage_seed(shard, stage), epochs=recipe.epochs_per_slice,
                batch_size=recipe.batch_size, learning_rate=recipe.learning_rate)
            model = train_model(data.train_images[pick], data.train_labels[pick], stage_recipe,
                                device=device, model=model)
            if progress is not None:
                progress((stage + 1 - first_stage) / (recipe.slices - first_stage))
        self.shards[shard].load_state_dict(model.state_dict())
        self.shards[shard].eval()

    def forget_samples(self, forget_ids: torch.Tensor, data: ImageData,
                       device: torch.device = torch.device("cpu"), progress=None) -> dict:
        """Drop ``forget_ids`` from their shards and retrain exactly those shards."""
        forget_ids = torch.unique(forget_ids.to(torch.int64))
        affected: dict[int, int] = {}
        for shard in range(len(self.shards)):
            ids = self.shard_ids[shard]
            held = torch.isin(ids, forget_ids)
            if not held.any():
                continue
            first_position = int(torch.nonzero(held)[0])
            affected[shard] = int((self.slice_ends[shard] <= first_position).sum())
            # Keep slice membership: each slice end moves left by what it loses before it.
            removed_before = torch.cumsum(held.to(torch.int64), 0)
            self.slice_ends[shard] = self.slice_ends[shard] - torch.cat(
                [torch.zeros(1, dtype=torch.int64), removed_before])[self.slice_ends[shard]]
            self.shard_ids[shard] = ids[~held]
        for done, (shard, stage) in enumerate(sorted(affected.items())):
            self.train_shard(shard, data, stage, device,
                             progress=None if progress is None else
                             (lambda f, d=done: progress((d + f) / len(affected))))
        self.forget_report = {
            "retrained_shards": sorted(affected),
            "retrained_from_slice": {str(s): r for s, r in sorted(affected.items())},
            "shards": len(self.shards),
            "slices": self.recipe.slices,
        }
        return self.forget_report

    # -- serialisation -------------------------------------------------------------------

    def export(self) -> tuple[State, dict]:
        """One flat tensor dict (shard-prefixed) plus the metadata needed to rebuild it."""
        state: State = {}
        for s, shard in enumerate(self.shards):
            for name, tensor in shard.state_dict().items():
                state[f"shards.{s}.{name}"] = tensor
            state[f"shard_ids.{s}"] = self.shard_ids[s]
            state[f"slice_ends.{s}"] = self.slice_ends[s]
            for r, checkpoint in enumerate(self.checkpoints[s]):
                for name, tensor in checkpoint.items():
                    state[f"checkpoints.{s}.{r}.{name}"] = tensor
        metadata = {**self.spec.to_metadata(), "kind": KIND, "recipe": self.recipe.to_dict()}
        return state, metadata

    @classmethod
    def from_export(cls, state: State, metadata: dict) -> "SisaEnsemble":
        recipe = SisaRecipe(**metadata["recipe"])
        shard_ids = [state[f"shard_ids.{s}"] for s in range(recipe.shards)]
        slice_ends = [state[f"slice_ends.{s}"] for s in range(recipe.shards)]
        ensemble = cls(recipe, ModelSpec.from_metadata(metadata), shard_ids, slice_ends)
        for s, shard in enumerate(ensemble.shards):
            prefix = f"shards.{s}."
            shard.load_state_dict({k[len(prefix):]: v for k, v in state.items()
                                   if k.startswith(prefix)})
            for r in range(recipe.slices):
                prefix = f"checkpoints.{s}.{r}."
                checkpoint = {k[len(prefix):]: v for k, v in state.items()
                              if k.startswith(prefix)}
                if checkpoint:
                    ensemble.checkpoints[s].append(checkpoint)
        return ensemble.eval()

    def __deepcopy__(self, memo):
        # nn.Module deepcopy copies plain attributes too; spelled out so that checkpoints
        # (plain tensors, not parameters) are copied, never shared with the cached source.
        clone = SisaEnsemble(self.recipe, self.spec, self.shard_ids, self.slice_ends)
        clone.shards = copy.deepcopy(self.shards, memo)
        clone.checkpoints = [[{k: v.clone() for k, v in c.items()} for c in shard]
                             for shard in self.checkpoints]
        clone.train(self.training)
        return clone


def assign_shards(ids: torch.Tensor, recipe: SisaRecipe) -> tuple[list[torch.Tensor],
                                                                 list[torch.Tensor]]:
    """Seeded disjoint shards of ``ids``, each cut into ``recipe.slices`` equal slices."""
    generator = torch.Generator().manual_seed(recipe.seed)
    shuffled = ids[torch.randperm(len(ids), generator=generator)]
    shard_ids = list(torch.tensor_split(shuffled, recipe.shards))
    slice_ends = []
    for ids_of_shard in shard_ids:
        sizes = torch.tensor([len(part) for part in torch.tensor_split(ids_of_shard, recipe.slices)])
        slice_ends.append(torch.cumsum(sizes, 0))
    return [s.clone() for s in shard_ids], slice_ends


def train_sisa(data: ImageData, recipe: SisaRecipe, device: torch.device = torch.device("cpu"),
               progress=None, shard_ids: list[torch.Tensor] | None = None,
               slice_ends: list[torch.Tensor] | None = None,
               spec: ModelSpec | None = None) -> SisaEnsemble:
    """Train every shard. An explicit assignment (``shard_ids``/``slice_ends``) may be given.
    ``spec`` is the members' network; default: the mnist-cnn architecture on the data's
    classes and image shape."""
    if spec is None:
        spec = ModelSpec("mnist-cnn", data.num_classes, data.image_shape)
    if (shard_ids is None) != (slice_ends is None):
        raise ValueError("give both shard_ids and slice_ends, or neither")
    if shard_ids is None or slice_ends is None:
        shard_ids, slice_ends = assign_shards(data.train_ids, recipe)
    ensemble = SisaEnsemble(recipe, spec, shard_ids, slice_ends)
    for shard in range(recipe.shards):
        ensemble.train_shard(shard, data, 0, device,
                             progress=None if progress is None else
                             (lambda f, s=shard: progress((s + f) / recipe.shards)))
    return ensemble.eval()


def _positions(data: ImageData, ids: torch.Tensor) -> torch.Tensor:
    """Map training ID -> row in ``data`` (-1 where the ID is not loaded), for every ID up
    to the largest of ``ids`` and of the loaded ones."""
    size = 1 + max(int(data.train_ids.max()) if data.num_train else -1,
                   int(ids.max()) if ids.numel() else -1)
    positions = torch.full((size,), -1, dtype=torch.int64)
    positions[data.train_ids] = torch.arange(data.num_train)
    return positions


def is_ensemble(model: nn.Module) -> bool:
    return not isinstance(model, ImageClassifier)
