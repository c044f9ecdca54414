"""Data parallelism over replicas launched by torchrun: the process group from torchrun's
environment, each replica's devices, sums and agreements over replicas, per-rank seeds. Without
torchrun (no WORLD_SIZE), or with one process, a run is one replica and nothing here talks."""

from __future__ import annotations

import os
import pickle
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from alexnet2012 import devices
from alexnet2012.errors import UsageError
from alexnet2012.losswatch import Diverged, LossWatch

TIMEOUT_MINUTES = 30.0  # a collective waiting longer fails: a replica hung or died


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int]:
        return self.rank, self.size


def environment() -> World:
    """This process's place among torchrun's replicas (World() without torchrun)."""
    if "WORLD_SIZE" not in os.environ:
        return World()
    env = os.environ
    return World(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0")))


def placement(world: World, per_replica: int) -> tuple[str, ...]:
    """A replica's GPUs: local rank r takes GPU r, or GPUs 2r and 2r+1 (one column each)."""
    first = per_replica * world.local_rank
    names = tuple(f"cuda:{first + i}" for i in range(per_replica))
    if first + per_replica > torch.cuda.device_count():
        raise UsageError(
            f"replica {world.rank} (local rank {world.local_rank}) needs {', '.join(names)}: "
            f"this node has {torch.cuda.device_count()} GPUs; give --nproc-per-node at most "
            f"{torch.cuda.device_count() // per_replica} with --devices-per-replica {per_replica}"
        )
    return names


def replica_devices(spec: str | None, world: World, per_replica: int) -> tuple[str, ...] | None:
    """The ``--devices`` given, else under torchrun with GPUs this replica's (None: default)."""
    if spec is None and world.size > 1 and devices.any_cuda(devices.parse(None)):
        return placement(world, per_replica)
    return None if spec is None else tuple(str(d) for d in devices.parse(spec))


def start(world: World, gpu: bool, shared: bool = False) -> None:
    """Join the process group (once): NCCL for the CUDA tensors of ``gpu`` replicas, gloo for
    the rest; gloo alone when the replicas ``shared`` GPUs (NCCL refuses two ranks on one)."""
    if world.size == 1 or dist.is_initialized():
        return
    backend = "cpu:gloo,cuda:nccl" if gpu and not shared else "gloo"
    dist.init_process_group(backend, timeout=timedelta(minutes=TIMEOUT_MINUTES))


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def lost(exc: BaseException) -> UsageError:
    """The one line for a collective that failed: the replicas that stopped answering."""
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
    gone = _silent()
    who = f"replica {', '.join(map(str, gone))}" if gone else "a replica"
    return UsageError(
        f"replica {dist.get_rank()}: {who} died or hung, the run stops ({reason}); "
        "--resume continues from the last checkpoint"
    )


def from_peers(exc: BaseException) -> bool:
    """Whether ``exc`` came from the communication with other replicas (not a bug here)."""
    marks = ("gloo", "NCCL", "nccl", "Connection closed", "Connection reset", "timed out")
    return isinstance(exc, dist.DistError) or any(mark in str(exc) for mark in marks)


def _silent(wait_s: float = 3.0) -> list[int]:
    """The ranks that do not check in within ``wait_s`` ([]: unknown) at torchrun's store
    (MASTER_ADDR:MASTER_PORT), which its agent holds and a dead replica does not take down."""
    try:
        store = dist.TCPStore(
            os.environ["MASTER_ADDR"],
            int(os.environ["MASTER_PORT"]),
            is_master=False,
            timeout=timedelta(seconds=wait_s),
        )
        keys = [f"alexnet2012/alive/{r}" for r in range(dist.get_world_size())]
        store.set(keys[dist.get_rank()], "1")
        deadline = time.monotonic() + wait_s
        while not store.check(keys) and time.monotonic() < deadline:
            time.sleep(0.1)
        return [r for r, key in enumerate(keys) if not store.check([key])]
    except Exception:  # no store to reach (not torchrun's, or it went with a replica)
        return []


def _collective(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except RuntimeError as exc:
        raise lost(exc) from None


def all_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over the replicas (through the CPU: small tensors only)."""
    if not active():
        return tensor
    total = tensor.detach().cpu().clone()
    _collective(dist.all_reduce, total)
    return total.to(tensor.device)


def mean(value: float) -> float:
    """``value``'s mean over the replicas (itself, exactly, without them)."""
    if not active():
        return value
    return float(all_sum(torch.tensor([value], dtype=torch.float64))) / dist.get_world_size()


def agree(*values: float) -> list[float]:
    """Each value's maximum over the replicas: what one replica decides, all do."""
    if not active():
        return list(values)
    flags = torch.tensor(values, dtype=torch.float64)
    _collective(dist.all_reduce, flags, dist.ReduceOp.MAX)
    return flags.tolist()


def barrier() -> None:
    agree(0.0)


def gather(obj: Any) -> list[Any]:
    """Every replica's ``obj`` (picklable), in rank order, on every replica."""
    if not active():
        return [obj]
    data = torch.frombuffer(bytearray(pickle.dumps(obj)), dtype=torch.uint8)
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(dist.get_world_size())]
    _collective(dist.all_gather, sizes, torch.tensor([len(data)]))
    longest = int(max(s.item() for s in sizes))
    parts = [torch.zeros(longest, dtype=torch.uint8) for _ in sizes]
    padded = torch.cat([data, torch.zeros(longest - len(data), dtype=torch.uint8)])
    _collective(dist.all_gather, parts, padded)
    return [pickle.loads(p[: int(s.item())].numpy().tobytes()) for p, s in zip(parts, sizes)]


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every replica."""
    return gather(obj)[0] if active() else obj


def rank_seed(*keys: int) -> int:
    """A seed derived from the run's seed and a replica's rank (and where it starts)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


def check_losses(watch: LossWatch, epoch: int) -> float | None:
    """``watch.check(epoch)``; with replicas, all stop at the first non-finite loss of any."""
    if active():
        losses = torch.stack([loss.float() for _, loss in watch.pending] or [torch.zeros(1)])
        bad = [step for (step, _), ok in zip(watch.pending, losses.isfinite().cpu()) if not ok]
        first = -agree(-bad[0] if bad else -float("inf"))[0]
        if first < float("inf") and not bad:
            raise Diverged(
                f"the training loss of another replica became non-finite at epoch {epoch}, "
                f"batch {int(first) + 1}; stopped without saving over the last checkpoint "
                "(start a new run with a lower --lr)"
            )
    return watch.check(epoch)


def wrap(model: nn.Module, devices: tuple[str, ...]) -> nn.Module:
    """``model`` whose gradients are averaged over the replicas (DistributedDataParallel; a
    model on two devices, one column each, takes ``device_ids=None``). The gradients are views
    of the all-reduce buckets: no copy of the 61M gradients in and out of them each step."""
    if not active():
        return model
    one_gpu = len(devices) == 1 and torch.device(devices[0]).type == "cuda"
    ids = [torch.device(devices[0])] if one_gpu else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True)


def finish() -> None:
    """Leave the process group after the last collective of a run that went well: the
    replicas meet first, so that none closes its connections while another may still be
    reading from them."""
    barrier()
    stop()


def stop() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
