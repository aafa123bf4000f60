"""torchrun: the process group, each process's share of the data, and agreement across processes.

A `World` is this process's place among the W processes torchrun started (one process: rank 0
of 1). Every collective here is a no-op for one process, so the training code calls them alike.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from latentlab.cli import UserError
from latentlab.train import seeds


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0  # the rank among the processes of this machine
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where collectives put their tensors

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes and reports."""
        return self.rank == 0


def init_distributed(device: torch.device) -> World:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): nccl on GPUs, gloo on CPUs."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(device=device)
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), device)


def close_distributed(world: World) -> None:
    """Leave the process group that init_distributed joined, so every process exits cleanly; the
    barrier first, so that no process tears its connections down while another still talks on them."""
    if world.size > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _all_reduce(values: list[float], world: World, op) -> list[float]:
    if world.size == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=world.device)
    dist.all_reduce(t, op=op)
    return t.tolist()


def all_reduce_sum(values: list[float], world: World) -> list[float]:
    """The sums of values over every process."""
    return _all_reduce(values, world, dist.ReduceOp.SUM)


def same_everywhere(value: float, world: World) -> bool:
    """Whether value is the same on every process."""
    low, = _all_reduce([value], world, dist.ReduceOp.MIN)
    high, = _all_reduce([value], world, dist.ReduceOp.MAX)
    return low == high


def all_ranks_ok(ok: bool, world: World) -> bool:
    """True when ok is true on every process."""
    return _all_reduce([1.0 if ok else 0.0], world, dist.ReduceOp.MIN)[0] == 1.0


def run_agreed(fn, world: World, main_only: bool = False):
    """fn() on every process (on rank 0 alone when main_only), then agree: a UserError on any
    process stops all of them here, each with one line, instead of leaving the others waiting in
    the next collective until a timeout. Returns fn's result (None where it did not run)."""
    result, err = None, None
    if world.main or not main_only:
        try:
            result = fn()
        except UserError as e:
            err = e
    if not all_ranks_ok(err is None, world):
        raise err or UserError(f"process {world.rank} of {world.size} stops: another process failed "
                               f"(its message is above)")
    return result


def load_in_turn(load, world: World):
    """load() on every process, local rank 0 of each machine first: a dataset it downloads lands
    once, and the others then read its files. Errors stop every process (run_agreed)."""
    first = run_agreed(load if world.local_rank == 0 else (lambda: None), world)
    if world.size == 1:
        return first
    later = run_agreed(load if world.local_rank != 0 else (lambda: None), world)
    return first if world.local_rank == 0 else later


def local_batch_size(batch_size: int, world: World) -> int:
    """--batch_size is the global batch: each of the W processes takes batch_size / W per step."""
    if batch_size % world.size:
        raise UserError(f"--batch_size {batch_size} is the global batch and must split evenly across the "
                        f"{world.size} processes; use a multiple of {world.size}")
    return batch_size // world.size


def epoch_shard(n: int, seed: int, epoch: int, world: World) -> torch.Tensor:
    """This process's share of a seeded permutation of range(n), as DistributedSampler deals it:
    rank r takes perm[r::W], padded by wrapping round so every rank takes the same number of steps.
    With the global batch B split evenly, step i of the W ranks together sees perm[i*B:(i+1)*B],
    the batch of step i in one process, up to the at most W-1 wrapped items of the last step."""
    sampler = DistributedSampler(range(n), num_replicas=world.size, rank=world.rank, seed=seeds.shuffle(seed))
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.long)


def from_main(value, world: World):
    """Rank 0's value (any picklable value) on every process."""
    if world.size == 1:
        return value
    box = [value if world.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
