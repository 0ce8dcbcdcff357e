"""Two CPU processes (gloo) must reproduce the single-process loss and gradients exactly."""

from __future__ import annotations

import os
import socket
import tempfile
import zlib

import pytest
import torch
import torch.multiprocessing as mp

pytestmark = pytest.mark.slow  # spawns two interpreters (~10-20 s on a busy 2-core machine)

# name -> (loss name, constructor kwargs, forward extras: "rows" tensors are sliced per rank)
CASES: dict[str, tuple[str, dict, dict]] = {
    "clip": ("clip", {}, {}),
    "clip_mask_batch": ("clip", {"cross_batch_negative_weight": 0.3}, {"masks": True, "batch": True}),
    "clip_chunked_3mod": ("clip", {"chunk_size": 2}, {"third": True, "masks": True}),
    "clip_anchor_chunk_batch0": (
        "clip",
        {"chunk_size": 3, "anchor": "expression", "cross_batch_negative_weight": 0.0},
        {"third": True, "batch": True},
    ),
    "siglip": ("siglip", {}, {"masks": True}),
    "siglip_chunked": ("siglip", {"chunk_size": 2}, {"third": True}),
    "symile_n": ("symile", {}, {"third": True, "masks": True, "generator": True}),
    "symile_n2": ("symile", {"negative_sampling": "n_squared"}, {"third": True}),
    "gram": ("gram", {}, {"third": True, "masks": True}),
    "mv_infonce": ("mv_infonce", {}, {"third": True, "masks": True}),
    "mv_dhel": ("mv_dhel", {}, {"third": True}),
    "cwcl": ("cwcl", {}, {"reference": True, "masks": True}),
    "softclip": ("softclip", {}, {"masks": True}),
    "bimixco": ("bimixco", {}, {"mix": True}),
    "clip_uniformity": ("clip_uniformity", {}, {"masks": True}),
}
SIZES = (5, 3)  # uneven split: 5 rows on rank 0, 3 on rank 1
D = 6


def make_inputs(case: str) -> dict:
    """The full (global) batch of a case, deterministic, float64."""
    _, _, extra = CASES[case]
    g = torch.Generator().manual_seed(zlib.crc32(case.encode()))
    n = sum(SIZES)
    names = ["histology", "expression"] + (["labs"] if extra.get("third") else [])
    emb = {
        k: torch.nn.functional.normalize(torch.randn(n, D, generator=g, dtype=torch.float64), dim=1)
        for k in names
    }
    rows: dict[str, torch.Tensor] = {}
    if extra.get("masks"):
        rows["expression_mask"] = torch.tensor([1, 0, 1, 1, 1, 1, 0, 1], dtype=torch.bool)
        if extra.get("third"):
            rows["labs_mask"] = torch.tensor([1, 1, 1, 0, 1, 1, 1, 1], dtype=torch.bool)
    if extra.get("batch"):
        rows["batch_code"] = torch.tensor([0, 1, 0, 1, 1, 0, 1, 0])
    if extra.get("reference"):
        rows["reference"] = torch.randn(n, 4, generator=g, dtype=torch.float64)
    if extra.get("mix"):
        rows["mix_lambda"] = torch.rand(n, generator=g, dtype=torch.float64)
    return {"emb": emb, "rows": rows}


def _forward(loss, emb: dict, rows: dict, case: str, perm: torch.Tensor | None):
    _, _, extra = CASES[case]
    inputs = dict(emb)
    kw = {}
    for k, v in rows.items():
        if k.endswith("_mask"):
            inputs[k] = v
        else:
            kw[k] = v
    if extra.get("generator"):
        kw["generator"] = torch.Generator().manual_seed(7)
    if perm is not None:
        kw["mix_perm"] = perm
    return loss(inputs, **kw)


def _mix_perm(case: str, lo: int, hi: int) -> torch.Tensor | None:
    """Within-rank mixing permutation (local indices) of rows lo..hi."""
    if not CASES[case][2].get("mix"):
        return None
    n = hi - lo
    return torch.roll(torch.arange(n), 1)


def _build(case: str):
    from biomodal.losses import get_loss

    name, kwargs, _ = CASES[case]
    torch.manual_seed(0)
    return get_loss(name, **kwargs).double()


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        lo, hi = sum(SIZES[:rank]), sum(SIZES[: rank + 1])
        results = {}
        for case in CASES:
            data = make_inputs(case)
            emb = {k: v[lo:hi].clone().requires_grad_() for k, v in data["emb"].items()}
            rows = {k: v[lo:hi] for k, v in data["rows"].items()}
            loss = _build(case)
            out = _forward(loss, emb, rows, case, _mix_perm(case, lo, hi))
            out.loss.backward()
            results[case] = {
                "loss": out.loss.detach(),
                "grads": {k: v.grad for k, v in emb.items()},
                "params": {n: p.grad.clone() for n, p in loss.named_parameters()},
            }
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def dist_results():
    world = len(SIZES)
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(world, _free_port(), tmp), nprocs=world, join=True)
        return [torch.load(os.path.join(tmp, f"rank{r}.pt")) for r in range(world)]


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_match_one(dist_results, case):
    world = len(SIZES)
    data = make_inputs(case)
    emb = {k: v.clone().requires_grad_() for k, v in data["emb"].items()}
    perm = None
    if CASES[case][2].get("mix"):
        perm = torch.cat(
            [_mix_perm(case, sum(SIZES[:r]), sum(SIZES[: r + 1])) + sum(SIZES[:r]) for r in range(world)]
        )
    loss = _build(case)
    out = _forward(loss, emb, data["rows"], case, perm)
    out.loss.backward()
    ranks = [r[case] for r in dist_results]
    # mean over ranks of the returned loss equals the global loss
    mean_loss = sum(r["loss"] for r in ranks) / world
    torch.testing.assert_close(mean_loss, out.loss.detach(), rtol=0, atol=1e-6)
    # embedding grads: W x single-process grads (DDP then divides parameter grads by W)
    for k, v in emb.items():
        dist_grad = torch.cat([r["grads"][k] for r in ranks]) / world
        torch.testing.assert_close(dist_grad, v.grad, rtol=0, atol=1e-6)
    # loss parameters (logit scale, bias): the DDP average equals the single-process grad
    for n, p in loss.named_parameters():
        avg = sum(r["params"][n] for r in ranks) / world
        torch.testing.assert_close(avg, p.grad, rtol=0, atol=1e-6)
