"""Process-group set-up for ``torchrun`` and SLURM ``srun``, and gradient averaging.

``torchrun`` exports ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT``.
Under ``srun`` without torchrun, the SLURM step variables (``SLURM_PROCID``,
``SLURM_STEP_NUM_TASKS``/``SLURM_NTASKS``, ``SLURM_LOCALID``) are mapped to them; ``MASTER_ADDR``
defaults to the first host of ``SLURM_STEP_NODELIST``/``SLURM_JOB_NODELIST`` and
``MASTER_PORT`` to 29500.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = [
    "DistEnv",
    "all_reduce_grads",
    "broadcast_module",
    "env_from_environ",
    "first_slurm_host",
    "setup_distributed",
    "teardown",
]


@dataclass(frozen=True)
class DistEnv:
    """Rank layout of this process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0 writes logs and checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def first_slurm_host(nodelist: str) -> str:
    """First hostname of a SLURM node list such as ``"gpu[003-005,010],cpu1"`` -> ``"gpu003"``."""
    m = re.match(r"^([^\[,]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not m:
        return nodelist
    prefix, ranges = m.group(1), m.group(2)
    if not ranges:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return prefix + first


def env_from_environ(environ: dict[str, str] | None = None) -> tuple[int, int, int, dict[str, str]]:
    """``(rank, world, local_rank, variables_to_export)`` from torchrun or SLURM variables."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)), {}
    ntasks = env.get("SLURM_STEP_NUM_TASKS") or (env.get("SLURM_NTASKS") if "SLURM_STEP_ID" in env else None)
    if ntasks and "SLURM_PROCID" in env and int(ntasks) > 1:
        rank, world, local = int(env["SLURM_PROCID"]), int(ntasks), int(env.get("SLURM_LOCALID", 0))
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "127.0.0.1"
        export = {
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_RANK": str(local),
            "MASTER_ADDR": env.get("MASTER_ADDR") or first_slurm_host(nodes),
            "MASTER_PORT": env.get("MASTER_PORT", "29500"),
        }
        return rank, world, local, export
    return 0, 1, 0, {}


def setup_distributed(device_type: str) -> DistEnv:
    """Join (or reuse) the default process group; gloo on CPU, nccl on CUDA.

    A group that already exists (e.g. created by the caller) is reused and left open; one
    created here is destroyed by :func:`teardown`.
    """
    if dist.is_available() and dist.is_initialized():
        world = dist.get_world_size()
        rank = dist.get_rank()
        local = int(os.environ.get("LOCAL_RANK", rank % max(torch.cuda.device_count(), 1)))
        return DistEnv(rank, world, local, dist.get_backend(), owns_group=False)
    rank, world, local, export = env_from_environ()
    if world == 1:
        return DistEnv()
    os.environ.update(export)
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world)
    return DistEnv(rank, world, local, backend, owns_group=True)


def teardown(env: DistEnv) -> None:
    """Destroy the process group if :func:`setup_distributed` created it."""
    if env.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_grads(params: list[torch.nn.Parameter], world_size: int, bucket_mb: float = 25.0) -> None:
    """Average ``.grad`` of ``params`` over ranks in flattened buckets (manual DDP reduction).

    As DDP with ``find_unused_parameters=True``: a parameter without gradient on this rank but
    with one on another (e.g. an encoder whose modality is absent from this rank's batch) takes
    part with zeros; a parameter without gradient on every rank (an inactive loss stage) keeps
    ``grad=None``, so the optimiser skips it exactly as in one process.
    """
    if world_size <= 1:
        return
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    params = [p for p in params if p.requires_grad]
    if not params:
        return
    used = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=params[0].device)
    dist.all_reduce(used, op=dist.ReduceOp.SUM)
    for p, n in zip(params, used.tolist()):
        if n and p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params if p.grad is not None]
    limit = int(bucket_mb * 2**20)
    buckets: dict[tuple, list[list[torch.Tensor]]] = {}
    sizes: dict[tuple, int] = {}
    for g in grads:
        key = (g.dtype, g.device)
        lst = buckets.setdefault(key, [[]])
        nbytes = g.numel() * g.element_size()
        if lst[-1] and sizes[key] + nbytes > limit:
            lst.append([])
            sizes[key] = 0
        lst[-1].append(g)
        sizes[key] = sizes.get(key, 0) + nbytes
    for lst in buckets.values():
        for bucket in lst:
            flat = _flatten_dense_tensors(bucket)
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat.div_(world_size)
            for g, new in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
                g.copy_(new)


def broadcast_module(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=0)
