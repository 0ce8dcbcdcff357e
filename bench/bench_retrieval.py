"""Benchmark full-set retrieval: time and peak memory at N x N (default 100,000 x 100,000, D=256).

Prints JSON lines: one per measured step, then a summary. The baseline is one chunked
matmul pass over the same tiles (similarities only, no ranking), the unavoidable floor.
Peak memory is the RSS high-water mark above the level before the step (Linux: the mark
is reset through /proc/self/clear_refs), plus CUDA peak allocation on GPU.

    python bench/bench_retrieval.py            # 100k x 100k, D=256
    python bench/bench_retrieval.py --quick    # 5k x 5k smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from biomodal.eval import retrieval


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _measure(name: str, fn, device: torch.device) -> dict:
    base = _rss_mb()
    reset = _reset_hwm()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cuda_base = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    rec = {
        "step": name,
        "seconds": round(seconds, 3),
        "peak_rss_delta_mb": round(_hwm_mb() - base, 1) if reset else None,
    }
    if device.type == "cuda":
        rec["cuda_peak_delta_mb"] = round((torch.cuda.max_memory_allocated() - cuda_base) / 2**20, 1)
    return rec | ({"result": result} if isinstance(result, dict) else {})


def _matmul_only(q: torch.Tensor, g: torch.Tensor, chunk: int) -> dict:
    acc = torch.zeros((), device=q.device)
    with torch.inference_mode():
        for a in range(0, q.shape[0], chunk):
            for b in range(0, g.shape[0], chunk):
                acc += (q[a : a + chunk] @ g[b : b + chunk].T)[0, 0]  # keep the result live
    return {"checksum": float(acc)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--chunk-size", type=int, default=4096)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="5,000 x 5,000 smoke run")
    args = parser.parse_args()
    n = 5_000 if args.quick else args.n
    device = torch.device(args.device)
    info = {
        "bench": "retrieval",
        "n": n,
        "dim": args.dim,
        "chunk_size": args.chunk_size,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    print(json.dumps(info), flush=True)
    gen = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(n, args.dim, generator=gen), dim=1)
    g = torch.nn.functional.normalize(q + 1.2 * torch.randn(n, args.dim, generator=gen), dim=1)
    q, g = q.to(device), g.to(device)
    input_mb = 2 * n * args.dim * 4 / 2**20
    print(json.dumps({"step": "inputs", "input_mb": round(input_mb, 1)}), flush=True)

    base = _measure("matmul_only", lambda: _matmul_only(q, g, args.chunk_size), device)
    print(json.dumps(base), flush=True)
    full = _measure("retrieval", lambda: retrieval(q, g, ks=(1, 5, 10), chunk_size=args.chunk_size), device)
    print(json.dumps(full), flush=True)
    dense_gb = n * n * 4 / 2**30
    summary = {
        "summary": True,
        "n": n,
        "retrieval_seconds": full["seconds"],
        "matmul_only_seconds": base["seconds"],
        "overhead_x": round(full["seconds"] / base["seconds"], 2),
        "retrieval_peak_rss_delta_mb": full["peak_rss_delta_mb"],
        "dense_similarity_matrix_gb_avoided": round(dense_gb, 1),
        "recall@1": full["result"]["recall@1"],
        "chance@1": full["result"]["chance@1"],
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
