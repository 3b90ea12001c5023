"""Which process am I in a torchrun job: its rank, the world of processes, and what they share.

`torchrun --nproc_per_node P ...` starts P copies of the same program and tells each, in its
environment, WORLD_SIZE (all processes, on every machine), RANK (this one's number, 0 to
WORLD_SIZE - 1), LOCAL_RANK (its number on this machine: its GPU) and MASTER_ADDR/MASTER_PORT
(where they meet). start_from_environment reads them and joins the processes into one
torch.distributed process group: "gloo" on the CPU, "nccl" on GPUs, each process on the GPU of
its LOCAL_RANK. Without torchrun (no WORLD_SIZE, or 1) it returns the one-process world, and
nothing is started.

Data parallel training keeps the optimization of one process: every rank draws the same
shuffled order (BatchLoader's generator, seeded alike on every rank), rank r trains on rows
r, r + W, r + 2W, ... of each global mini-batch of B rows (RankShares), and DistributedDataParallel
averages the ranks' gradients. A rank's loss is the mean over its b_r rows (the models' losses
are means over the batch), so it is weighted by b_r W / B (share_weight): the average over
ranks, (1/W) sum_r (b_r W / B) mean_r = (1/B) sum of all B rows, is then the global batch's
mean exactly, also for a last batch that W does not divide. Only the rounding differs from one
process (the sums are added in another order).
"""

from __future__ import annotations

import atexit
import inspect
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from .errors import TRCError

_started = False  # whether start_from_environment initialised the process group


@dataclass(frozen=True)
class World:
    """This process's place among the processes of a job.

    rank: 0 to size - 1; size: the number of processes W; device: where this rank computes
    (cuda:LOCAL_RANK on GPUs).
    """

    rank: int = 0
    size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and logs."""
        return self.rank == 0

    def sum(self, values) -> list[float]:
        """The sums over all ranks of a few numbers (float64), the same on every rank. [k] -> [k]."""
        if self.size == 1:
            return [float(v) for v in values]
        totals = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        dist.all_reduce(totals, op=dist.ReduceOp.SUM)
        return totals.tolist()

    def barrier(self) -> None:
        """Wait until every rank has come here (e.g. until rank 0 has written a file the others read)."""
        if self.size == 1:
            return
        if self.device.type == "cuda":  # nccl's barrier needs to know this rank's GPU
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()


ONE_PROCESS = World()  # a program started without torchrun


def start_from_environment(device) -> World:
    """Join the torchrun job this process belongs to, or return the one-process World.

    device: the resolved torch.device; on CUDA each rank uses cuda:LOCAL_RANK (whatever index
    was asked for), with the "nccl" backend; on the CPU "gloo". The process group is started
    once per process and kept until it exits (end(), at exit): a group destroyed and started
    again under torchrun may meet the old one's stale addresses (gloo then fails to connect), so
    a second call (a second training in the same program) joins the group already there, as it
    joins one the caller started.
    """
    global _started
    device = torch.device(device)
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 and not dist.is_initialized():
        return World(device=device)
    missing = [name for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing and not dist.is_initialized():
        raise TRCError(f"WORLD_SIZE={size} but {', '.join(missing)} not set: start several processes with torchrun "
                       f"(torchrun --nproc_per_node {size} ...), which sets them all")
    if device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", device.index or torch.cuda.current_device()))
        if local_rank >= torch.cuda.device_count():
            raise TRCError(f"LOCAL_RANK {local_rank}: this machine has {torch.cuda.device_count()} GPUs; start at most "
                           f"that many processes per machine (torchrun --nproc_per_node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                device_id=device if device.type == "cuda" else None)
        _started = True
        atexit.register(end)
    return World(rank=dist.get_rank(), size=dist.get_world_size(), device=device)


def end() -> None:
    """Close the process group start_from_environment started (a caller's own is left open).

    The ranks first wait for each other: a rank that tears gloo down while another still talks
    to it can abort ("terminate called without an active exception", seen once in CI). A rank
    that has already gone makes the barrier fail at once, and the group is closed anyway."""
    global _started
    if _started and dist.is_initialized():
        try:
            dist.barrier()
        except RuntimeError:
            pass
        dist.destroy_process_group()
    _started = False


def data_parallel(module: torch.nn.Module, world: World) -> torch.nn.Module:
    """`module` wrapped in DistributedDataParallel: calling it, then backward() on its output,
    leaves in every parameter's .grad the average over ranks of their gradients. The parameters
    and buffers start from rank 0's; the buffers are not sent again before every call (the
    models' buffers are constants)."""
    ddp = torch.nn.parallel.DistributedDataParallel
    # torch 2.13 renamed broadcast_buffers (deprecated, with a warning) to forward_sync_buffers
    no_resync = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp).parameters
                 else "broadcast_buffers")
    return ddp(module, device_ids=[world.device.index] if world.device.type == "cuda" else None, **{no_resync: False})


def share_weight(share_rows: int, batch_rows: int, world: World) -> float:
    """b_r W / B: what a rank's mean loss over its b_r of the B rows is multiplied by, so that
    DistributedDataParallel's average over the W ranks is the mean over all B rows."""
    return share_rows * world.size / batch_rows


class RankShares:
    """This rank's share of every global mini-batch of a BatchLoader: rows rank::W of each.

    The global batches are the loader's own (its batch_size B, its shuffled order from
    loader.generator, which checkpoints save and restore); the shares of the W ranks together
    are each batch exactly once. Iterating yields the non-empty shares, as tuples of tensors like
    the loader's ([b_r, n], [b_r, n], labels...) (for sums like validation's, which need no step
    per batch); weighted() yields every share with its share_weight, including the empty share
    of a last batch of fewer than W rows (a training step must be taken by every rank).
    """

    def __init__(self, loader, world: World):
        self.loader, self.world = loader, world

    def __len__(self) -> int:
        return len(self.loader)

    def weighted(self):
        """(share_weight, share) for every global mini-batch."""
        for batch in self.loader:
            share = tuple(t[self.world.rank::self.world.size] for t in batch)
            yield share_weight(len(share[0]), len(batch[0]), self.world), share

    def __iter__(self):
        for _, share in self.weighted():
            if len(share[0]):
                yield share
