"""Data parallelism over torchrun's replicas: process group, devices, sums, agreements, seeds."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from alexnet2012 import devices
from alexnet2012.errors import UsageError
from alexnet2012.losswatch import Diverged, LossWatch

TIMEOUT_MINUTES = 10.0  # a collective waiting longer fails: a replica hung or died
PREPARE_MINUTES = 30.0  # how long the others wait for replica 0 to check settings, prepare data
SEE_SECONDS = 10.0  # how long a replica looks for replica 0's file (network filesystems lag)
_long: list[Any] = []  # the process group of PREPARE_MINUTES's waits


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


def start(
    world: World, gpu: bool, shared: bool = False, timeout_minutes: float = TIMEOUT_MINUTES
) -> None:
    """Join the process group (once): NCCL for ``gpu`` replicas' CUDA tensors, else gloo (also when
    they ``shared`` GPUs); a collective that waits ``timeout_minutes`` fails."""
    if world.size == 1 or dist.is_initialized():
        return
    backend = "cpu:gloo,cuda:nccl" if gpu and not shared else "gloo"
    try:
        dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes))
    except RuntimeError as exc:  # torchrun's store may hold the last attempt's addresses
        if os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0" or not from_peers(exc):
            raise
        raise UsageError(
            f"replica {world.rank} could not reconnect after torchrun's restart ("
            f"{str(exc).splitlines()[0][:120]}): run torchrun with "
            "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in its environment (a new store each attempt)"
        ) from None
    wait = max(PREPARE_MINUTES, timeout_minutes)
    _long[:] = [dist.new_group(backend="gloo", timeout=timedelta(minutes=wait))]


def on_main(fn: Any) -> Any:
    """``fn()`` on replica 0 (the others wait up to PREPARE_MINUTES), its result on every replica;
    its :class:`UsageError` is raised on replica 0 and ends the others quietly."""
    if not active():
        return fn()
    result, error = None, None
    if dist.get_rank() == 0:
        try:
            result = fn()
        except UsageError as exc:
            error = exc
    said = [(result, None if error is None else str(error))]
    _collective(dist.broadcast_object_list, said, src=0, group=_long[0] if _long else None)
    if error is not None:
        raise error
    if said[0][1] is not None:
        raise SystemExit(2)
    return said[0][0]


def refuse(message: str) -> None:
    """End every replica: replica 0 with the one line, the others quietly (exit status 2)."""
    if not active() or dist.get_rank() == 0:
        raise UsageError(message)
    raise SystemExit(2)


def check_sees(folder: Path) -> None:
    """Every replica sees the run folder replica 0 made (through a file replica 0 writes there)."""
    if not active():
        return
    marker, token = folder / f".config.json.{secrets.token_hex(4)}.tmp", secrets.token_hex(8)
    if dist.get_rank() == 0:
        marker.write_text(token)  # a killed save's leftover, to the run folder's cleanup
    marker, token = broadcast((marker, token))
    seen, deadline = False, time.monotonic() + SEE_SECONDS
    while not seen and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            seen = marker.read_text() == token
        time.sleep(0 if seen else 0.2)
    views = gather((seen, socket.gethostname()))
    if dist.get_rank() == 0:
        marker.unlink(missing_ok=True)
    blind = [f"replica {r} (on {host})" for r, (ok, host) in enumerate(views) if not ok]
    if blind:
        refuse(
            f"{', '.join(blind)} cannot see the run folder {folder} that replica 0 made on "
            f"{views[0][1]}: give --out on a filesystem that every node shares"
        )


def check_same_cache(cache: str) -> None:
    """Every replica's cache has replica 0's manifest.json and stats.json (the same data)."""
    if not active():
        return
    digest = hashlib.sha256()
    try:
        for name in ("manifest.json", "stats.json"):
            digest.update((Path(cache) / name).read_bytes())
        mine = digest.hexdigest()
    except OSError:
        mine = None
    views = gather((mine, socket.gethostname()))
    odd = [
        f"replica {r} (on {host}) "
        + ("has none" if seen is None else "holds other data (manifest.json, stats.json)")
        for r, (seen, host) in enumerate(views)
        if seen != views[0][0]
    ]
    if odd:
        refuse(
            f"the cache {cache} is not replica 0's on every node: {'; '.join(odd)}: give "
            "every node the same prepared cache (a copy of replica 0's, or one on a "
            "filesystem every node shares)"
        )


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def lost(exc: BaseException) -> UsageError:
    """The one line for a collective that failed: the replicas that stopped answering."""
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
    gone = _silent()
    who = f"replica {', '.join(map(str, gone))}" if gone else "a replica"
    return UsageError(
        f"replica {dist.get_rank()}: {who} died or hung, the run stops ({reason}); the same "
        "command continues from the last checkpoint (torchrun --max-restarts: by itself)"
    )


def from_peers(exc: BaseException) -> bool:
    """Whether ``exc`` came from the communication with other replicas (not a bug here)."""
    marks = ("gloo", "NCCL", "nccl", "Connection closed", "Connection reset", "timed out")
    return isinstance(exc, dist.DistError) or any(mark in str(exc) for mark in marks)


def _silent(wait_s: float = 3.0) -> list[int]:
    """The ranks that do not check in within ``wait_s`` at torchrun's store ([]: unknown)."""
    try:
        store = dist.TCPStore(
            os.environ["MASTER_ADDR"],
            int(os.environ["MASTER_PORT"]),
            is_master=False,
            timeout=timedelta(seconds=wait_s),
        )
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")  # the store outlives one
        keys = [f"alexnet2012/alive/{attempt}/{r}" for r in range(dist.get_world_size())]
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
    """``model`` whose gradients are averaged over the replicas (DDP, views of its buckets)."""
    if not active():
        return model
    one_gpu = len(devices) == 1 and torch.device(devices[0]).type == "cuda"
    ids = [torch.device(devices[0])] if one_gpu else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True)


def finish() -> None:
    """Leave the process group after a run that went well, once every replica is there."""
    barrier()
    stop()


def stop() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
