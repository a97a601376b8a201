"""Data loaders from config: catalog names -> metas -> mapper -> collated batches."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from core import comm
from core.catalog import DatasetCatalog, MetadataCatalog
from core.errors import ConfigError
from core.registry import MAPPERS, build
from core.structures import collate  # noqa: F401  (re-exported: the loaders' collate_fn)
from data_schedule.samplers import InferenceSampler, TrainingSampler
from data_schedule.sources.nifti import DataError


class MappedDataset(Dataset):
    """metas + mapper. Items are dataset indices (eval) or ``(stream_position, index)`` pairs (train), the
    position seeding the mapper's randomness together with ``seed``.

    ``skip_bad`` (training only): a sample whose reading fails is replaced by the next index's sample (so the
    batch keeps its size and the run stays deterministic), and the failure is reported in the sample's
    ``skipped`` list for the trainer to count. Evaluation items never skip: errors propagate.
    """

    def __init__(self, metas: list[dict], mapper, seed: int = 0, skip_bad: bool = False):
        self.metas, self.mapper, self.seed, self.skip_bad = metas, mapper, seed, skip_bad

    def __len__(self) -> int:
        return len(self.metas)

    def __getitem__(self, item):
        if not isinstance(item, tuple):
            return self.mapper(self.metas[item])
        pos, idx = item
        seed = (self.seed * 1_000_003 + pos) % 2**63
        skipped = []
        for attempt in range(len(self.metas)):
            meta = self.metas[(idx + attempt) % len(self.metas)]
            try:
                sample = self.mapper(meta, seed=seed)
            except (DataError, OSError, ValueError) as e:
                where = getattr(meta.get("cache"), "where", meta.get("video_id"))  # the source's file
                if not self.skip_bad:
                    raise DataError(f"Cannot read training sample {meta.get('video_id')} frame "
                                    f"{meta.get('frame_idx')} ({where}): {e}") from None
                skipped.append((str(where), str(e)))
                continue
            if self.skip_bad:
                sample["skipped"] = skipped
            return sample
        raise DataError(f"Every training sample failed to load; first error: {skipped[0][1]}")


def get_metas(names: list[str]) -> list[dict]:
    """Concatenate the sample metas of several catalog names (sample ids renumbered across them)."""
    metas = []
    for n in names:
        for m in DatasetCatalog.get(n):
            metas.append({**m, "sample_id": len(metas), "dataset": n})
    return metas


def _worker_init(_):
    torch.set_num_threads(1)


def build_train_loader(names: list[str], mapper_cfg: dict, batch_size: int, num_workers: int, seed: int,
                       start: int = 0, skip_bad: bool = False, what: str = "train.batch_size") -> DataLoader:
    """Endless loader of per-rank batches. ``batch_size`` is the total over ranks; ``start`` = items already
    consumed by this rank (resume); ``what`` names the batch-size setting in errors."""
    world = comm.get_world_size()
    if batch_size % world:
        raise ConfigError(f"{what}={batch_size} must be divisible by the world size {world}")
    metas = get_metas(names)
    mapper = build(MAPPERS, mapper_cfg, num_classes=len(MetadataCatalog.get(names[0]).classes))
    sampler = TrainingSampler(len(metas), seed, comm.get_rank(), world, start=start)
    return DataLoader(MappedDataset(metas, mapper, seed, skip_bad), batch_size=batch_size // world, sampler=sampler,
                      num_workers=num_workers, collate_fn=collate, worker_init_fn=_worker_init,
                      persistent_workers=False, prefetch_factor=4 if num_workers else None,
                      generator=torch.Generator().manual_seed(seed))  # keeps the global RNG untouched


def build_test_loader(name: str, mapper_cfg: dict, batch_size: int, num_workers: int,
                      metas: list[dict] | None = None) -> DataLoader:
    """Loader over ``name``'s sample metas (or ``metas``, e.g. one per video) in order, split over ranks."""
    metas = DatasetCatalog.get(name) if metas is None else metas
    mapper = build(MAPPERS, mapper_cfg, num_classes=len(MetadataCatalog.get(name).classes))
    sampler = InferenceSampler(len(metas), comm.get_rank(), comm.get_world_size())
    return DataLoader(MappedDataset(metas, mapper), batch_size=batch_size, sampler=sampler,
                      num_workers=num_workers, collate_fn=collate, worker_init_fn=_worker_init,
                      generator=torch.Generator().manual_seed(0))  # keeps the global RNG untouched
