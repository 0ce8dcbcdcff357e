"""Benchmark biomodal's clip/siglip losses against open_clip; prints one JSON line per measurement.

Each measurement runs in a fresh subprocess so that its peak memory is its own:

* on CUDA, ``torch.cuda.max_memory_allocated`` (exact allocator peak);
* on CPU, ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after the run minus before it (inputs
  already allocated). ru_maxrss is the resident-set high-water mark of the process, so the delta
  is the extra memory the forward + backward pass needed at its peak (malloc may keep freed pages,
  so the figure is an upper bound); tracemalloc does not see torch's allocations.

Usage: ``python bench/bench_losses.py [--quick] [--device cpu|cuda] [--skip-large | --only-large]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def _inputs(b: int, d: int, device: str):
    import torch
    import torch.nn.functional as F

    g = torch.Generator(device="cpu").manual_seed(0)
    x = F.normalize(torch.randn(b, d, generator=g), dim=1).to(device).requires_grad_()
    y = F.normalize(torch.randn(b, d, generator=g), dim=1).to(device).requires_grad_()
    return x, y


def _make(impl: str, loss: str, chunk: int | None, device: str):
    import torch

    if impl == "open_clip":
        from open_clip.loss import ClipLoss, SigLipLoss

        scale = torch.tensor(10.0 if loss == "siglip" else 1 / 0.07, device=device).log().requires_grad_()
        bias = torch.tensor(-10.0, device=device, requires_grad=True)
        if loss == "clip":
            fn = ClipLoss()
            return lambda x, y: fn(x, y, scale.exp())
        fn = SigLipLoss()
        return lambda x, y: fn(x, y, scale.exp(), bias)
    from biomodal.losses import get_loss

    mod = get_loss(loss, chunk_size=chunk).to(device)
    return lambda x, y: mod({"histology": x, "expression": y}).loss


def child(impl: str, loss: str, b: int, d: int, chunk: int | None, device: str, reps: int) -> dict:
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    x, y = _inputs(b, d, device)
    fn = _make(impl, loss, chunk, device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    times, value = [], None
    for i in range(reps + 1):
        x.grad = y.grad = None
        sync()
        t0 = time.perf_counter()
        out = fn(x, y)
        out.backward()
        sync()
        if i:  # first run is a warm-up
            times.append(time.perf_counter() - t0)
        value = float(out.detach())
    if device == "cuda":
        peak_mb = (torch.cuda.max_memory_allocated() - base_cuda) / 2**20
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024  # KiB on Linux
    res = {"impl": impl, "loss": loss, "B": b, "D": d, "chunk_size": chunk, "device": device}
    res.update(time_s=statistics.median(times), peak_mem_mb=round(peak_mb, 1), loss_value=value)
    return res


def run(impl, loss, b, d, chunk, device, reps) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--_child",
        impl,
        loss,
        str(b),
        str(d),
        str(chunk or 0),
        device,
        str(reps),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    p.add_argument("--device", default=None)
    p.add_argument("--skip-large", action="store_true", help="skip the B=65,536 chunked runs")
    p.add_argument("--large-b", type=int, default=65536, help="batch size of the chunked memory runs")
    p.add_argument("--only-large", action="store_true", help="only the chunked memory runs (run once)")
    p.add_argument("--_child", nargs=7, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a._child:
        impl, loss, b, d, chunk, device, reps = a._child
        res = child(impl, loss, int(b), int(d), int(chunk) or None, device, int(reps))
        print(json.dumps(res))
        return
    import torch

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    sizes = [(256, 64)] if a.quick else [(1024, 512), (4096, 512)]
    reps = 2 if a.quick else 5
    for loss in ("clip", "siglip") if not a.only_large else ():
        for b, d in sizes:
            ours = run("biomodal", loss, b, d, None, device, reps)
            ref = run("open_clip", loss, b, d, None, device, reps)
            ours["open_clip_time_s"] = ref["time_s"]
            ours["open_clip_peak_mem_mb"] = ref["peak_mem_mb"]
            ours["time_ratio_vs_open_clip"] = round(ours["time_s"] / ref["time_s"], 3)
            ours["max_abs_diff_loss"] = abs(ours["loss_value"] - ref["loss_value"])
            print(json.dumps(ours), flush=True)
    if a.skip_large:
        return
    b, d, chunk = (4096, 64, 256) if a.quick else (a.large_b, 256, 1024)
    for loss in ("clip", "siglip"):
        res = run("biomodal", loss, b, d, chunk, device, 1)
        res["fits_2gb"] = res["peak_mem_mb"] < 2048
        print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
