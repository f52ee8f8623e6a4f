"""Multi-process PyTorch training on PyTorch's own engine: ``torch.distributed`` + DistributedDataParallel.

One process per device, launched by ``torchrun`` (``torchrun --nproc_per_node 8 -m xraylib train-multiclass``):
NCCL between GPUs, gloo between CPU processes. :func:`xraylib.torch_train.train` reads the process group
(:func:`context`) and then

* wraps the model in ``DistributedDataParallel`` (gradients averaged over the processes after every step;
  BatchNorm layers become ``SyncBatchNorm`` on GPUs, so their batch statistics span the global batch);
* draws **one** sample order per epoch from the run's seeded generator, identical in every process (the weighted
  sampler included: :class:`ShardedBatchSampler` wraps it), cuts it into global batches of ``batch_size`` and gives
  each process its contiguous share, so the global batch, the steps per epoch and the learning-rate schedule are
  those of the one-process run, whatever the number of processes;
* sums training loss and accuracy over the processes; validation runs unsharded in every process (small, and the
  same figure everywhere without a reduction);
* writes ``best.pt``, ``last.pt`` and ``history.csv`` from rank 0 only (every process waits for it), and resumes
  in every process from rank 0's ``last.pt``.

Hand-written rather than Lightning Fabric or Accelerate: the pieces above are about 100 lines on top of the existing
loop, and a wrapper would bring its own checkpoint, sampler and precision logic to reconcile with the project's
(exact resume, seeded samplers, bfloat16 autocast).

This module imports torch only, never TensorFlow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class Context:
    """Where this process stands: ``rank`` of ``world_size`` processes (1 without a process group)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def sum(self, values: Sequence[float]) -> list[float]:
        """``values`` summed over every process (float64, so counts stay exact)."""
        if not self.distributed:
            return [float(v) for v in values]
        tensor = torch.tensor([float(v) for v in values], dtype=torch.float64)
        if dist.get_backend() == "nccl":
            tensor = tensor.cuda()
        dist.all_reduce(tensor)
        return tensor.cpu().tolist()


def context() -> Context:
    """The current process group as a :class:`Context` (one process when none is initialised)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Context()
    return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def init_from_env() -> Context:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR`` ... in the
    environment): NCCL when this process has a GPU, gloo otherwise. Without ``torchrun`` (no ``WORLD_SIZE`` or
    ``WORLD_SIZE=1``) nothing is initialised and a one-process :class:`Context` comes back."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Context()
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return context()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def device_for(ctx: Context, requested: torch.device) -> torch.device:
    """The device of this process: ``cuda:<local rank>`` for a distributed run on GPUs, else ``requested``."""
    if ctx.distributed and requested.type == "cuda":
        return torch.device("cuda", ctx.local_rank)
    return requested


class ShardedBatchSampler(Sampler[list[int]]):
    """This process's share of each global batch drawn by ``sampler``.

    Every process iterates the same ``sampler`` (same seeded generator, so the same order), cuts the order into
    global batches of ``batch_size`` and keeps its contiguous slice: process ``r`` of ``n`` gets items
    ``[r * b / n, (r + 1) * b / n)`` of a full batch of ``b`` (``numpy.array_split`` sizes when ``b`` is not a
    multiple of ``n``). The last, partial batch is split the same way; a part of it smaller than the number of
    processes is dropped, since every process must take every step. With ``batch_size`` a multiple of the process
    count the processes together see exactly the batches of the one-process run.
    """

    def __init__(self, sampler: Sampler[int], batch_size: int, rank: int, world_size: int):
        if batch_size < world_size:
            raise ValueError(f"train_multiclass.batch_size ({batch_size}) is the global batch: it must be at least "
                             f"the number of processes ({world_size})")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        self.sampler, self.batch_size, self.rank, self.world_size = sampler, batch_size, rank, world_size

    def _share(self, batch: list[int]) -> list[int]:
        return np.array_split(np.asarray(batch, dtype=np.int64), self.world_size)[self.rank].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        batch: list[int] = []
        for index in self.sampler:
            batch.append(int(index))
            if len(batch) == self.batch_size:
                yield self._share(batch)
                batch = []
        if len(batch) >= self.world_size:
            yield self._share(batch)

    def __len__(self) -> int:
        full, rest = divmod(len(self.sampler), self.batch_size)
        return full + (1 if rest >= self.world_size else 0)

