"""Data-parallel training under ``torchrun``: PyTorch DDP, gloo on the CPU, NCCL on CUDA.

``torchrun`` starts the processes and sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them
(a plain ``productstudio train``) :func:`from_environment` returns the single-process :data:`ALONE`,
whose methods do nothing, so the default path is unchanged.

The rule for batches and learning rates: ``train.batch_size`` is the *global* batch. Every process
draws the same global batch (indices, latents, noise) from the same seeded generator, which keeps the
generators of all ranks in step and makes checkpoints rank-independent, and trains on its own share
(:meth:`Distributed.shard`). DDP averages the gradients of equal shares, so one optimizer step sees
the gradient of the whole global batch: the learning rates in params are per global batch and stay
as they are, whatever the number of processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, logs, sample grids and the generator, and talks to MLflow."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """Each process of a node takes its own GPU."""
        if self.active and device.type == "cuda":
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return device

    def threads(self, requested: int) -> int:
        """Processes of one node share its cores: 0 (all cores) becomes cores / processes per node."""
        return requested or max(1, (os.cpu_count() or 1) // self.local_world_size)

    def local_batch(self, batch_size: int) -> int:
        if batch_size % self.world_size:
            from productstudio.errors import ParamsError

            raise ParamsError(f"train.batch_size {batch_size} is the global batch: it must divide by the "
                              f"{self.world_size} processes")
        return batch_size // self.world_size

    def shard(self, batch: torch.Tensor, group: int = 4) -> torch.Tensor:
        """This rank's share of a global batch.

        Interleaved rather than in contiguous chunks: the discriminator's minibatch-std layer groups
        sample i with i + n/4, i + 2n/4, ...; this split gives every rank whole groups of the global
        batch, so the shares together compute what one process computes on the whole batch.
        """
        if not self.active:
            return batch
        n = len(batch)
        g = group if n % (group * self.world_size) == 0 else 1
        shares = batch.reshape(g, self.world_size, n // (g * self.world_size), *batch.shape[1:])
        return shares[:, self.rank].reshape(-1, *batch.shape[1:])

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """DDP around a module that trains; the module itself is what checkpoints and the EMA see."""
        if not self.active:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.local_rank] if next(module.parameters()).device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Losses averaged over the ranks: the global batch's loss, as one process would log it."""
        if not self.active:
            return values
        import torch.distributed as dist

        tensor = torch.tensor(list(values.values()), dtype=torch.float64)
        dist.all_reduce(tensor)
        return dict(zip(values, (tensor / self.world_size).tolist()))

    def from_main(self, value: float) -> float:
        """Rank 0's value on every rank, so that all ranks take the same decisions (e.g. the time budget)."""
        if not self.active:
            return value
        import torch.distributed as dist

        tensor = torch.tensor([value], dtype=torch.float64)
        dist.broadcast(tensor, src=0)
        return float(tensor.item())

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.active:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


ALONE = Distributed()


def from_environment(device: torch.device) -> Distributed:
    """The process group torchrun describes in the environment, initialised; ALONE without torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return ALONE
    import torch.distributed as dist

    setup = Distributed(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")),
                        int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size))))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return setup


def sync_batchnorm(module: torch.nn.Module) -> None:
    """Batch-norm statistics over the global batch (SyncBatchNorm's job, which runs on GPUs only)."""
    from productstudio.models.gan import BatchNorm2d

    for layer in module.modules():
        if isinstance(layer, BatchNorm2d):
            layer.sync = True
