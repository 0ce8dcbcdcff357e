"""Step time of biomodal's Trainer vs a hand-written minimal torch loop (same model, loss, data).

Model: small CNN on 64 px RGB tiles + MLP on 200 genes, batch 64, CLIP loss, AdamW with
warm-up/cosine, grad clipping. Prints one JSON line per measurement and a summary line with
``ratio = trainer / hand`` (goal <= 1.10). ``--quick`` for a smoke run.

    python bench/bench_trainer.py [--quick] [--device cpu|cuda] [--precision 32|bf16] [--threads 1]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time

import torch
from torch import nn


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(64, 128, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.out_dim = 128

    def forward(self, x):
        return self.net(x)


class MLP(nn.Module):
    def __init__(self, genes: int = 200) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(genes, 256), nn.ReLU(), nn.Linear(256, 128))
        self.out_dim = 128

    def forward(self, x):
        return self.net(x)


class Tiles(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.img = torch.randn(n, 3, 64, 64, generator=g)
        self.expr = torch.randn(n, 200, generator=g)

    def __len__(self) -> int:
        return len(self.img)

    def __getitem__(self, i):
        return {"histology": self.img[i], "expression": self.expr[i]}


def make_model():
    from biomodal.losses import get_loss
    from biomodal.train import ContrastiveModel

    torch.manual_seed(0)
    return ContrastiveModel({"histology": CNN(), "expression": MLP()}, get_loss("clip"), embed_dim=128)


def hand_loop(data, steps: int, device: torch.device, precision: str) -> list[float]:
    """The loop a researcher would write by hand."""
    from biomodal.train.schedule import LRSchedule

    model = make_model().to(device)
    opt = torch.optim.AdamW(
        model.parameters(), lr=1e-3, weight_decay=0.05, fused=device.type == "cuda" or None
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, LRSchedule(10, steps, "cosine"))
    loader = torch.utils.data.DataLoader(data, batch_size=64, shuffle=True, drop_last=True)
    dtype = torch.bfloat16 if precision == "bf16" else None
    times, done = [_now()], 0
    while done < steps:
        for batch in loader:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                emb = {
                    k: nn.functional.normalize(model.heads[k](model.encoders[k](v)), dim=-1)
                    for k, v in batch.items()
                }
            loss = model.loss({k: v.float() for k, v in emb.items()}).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            if done % 50 == 0:
                float(loss.detach())
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(_now())
            done += 1
            if done >= steps:
                break
    return times


def trainer_loop(data, steps: int, device: torch.device, precision: str, accum: int = 1) -> list[float]:
    from biomodal.train import TrainConfig, Trainer

    times = [_now()]

    class Clock:
        def on_step_end(self, trainer, step, row):
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(_now())

    cfg = TrainConfig(
        max_steps=steps, batch_size=64, accum_steps=accum, lr=1e-3, warmup_steps=10, grad_clip=1.0,
        log_every=50, ckpt_every=0, progress=False, device=device.type, precision=precision,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as out:
        Trainer(make_model(), cfg, out, train_data=data, callbacks=[Clock()]).fit()
    return times


_CLOCK = {"fn": time.perf_counter}


def _now() -> float:
    return _CLOCK["fn"]()


def median_step(times: list[float], warmup: int) -> float:
    d = [b - a for a, b in itertools.pairwise(times)][warmup:]
    return statistics.median(d)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", default="32", choices=["32", "bf16"])
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch default)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default=None,
        help="wall time or process CPU time (robust on a shared CPU); default: cpu on CPU, wall on CUDA",
    )
    args = ap.parse_args()
    clock = args.clock or ("wall" if args.device.startswith("cuda") else "cpu")
    _CLOCK["fn"] = time.perf_counter if clock == "wall" else time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    steps, warmup = (12, 3) if args.quick else (60, 10)
    repeats = args.repeats or (1 if args.quick else 3)
    data = Tiles(64 * 8)
    common = {"device": str(device), "precision": args.precision, "batch": 64, "steps": steps, "clock": clock}
    hand, train, accum = [], [], []
    for r in range(repeats):  # interleaved so that machine load affects both alike
        hand.append(median_step(hand_loop(data, steps, device, args.precision), warmup))
        train.append(median_step(trainer_loop(data, steps, device, args.precision), warmup))
        accum.append(median_step(trainer_loop(data, steps, device, args.precision, accum=2), warmup))
        for name, t in (("hand", hand[-1]), ("trainer", train[-1]), ("trainer_accum2", accum[-1])):
            print(
                json.dumps(
                    {"bench": "trainer_step", "loop": name, "repeat": r, "step_s": round(t, 5), **common}
                )
            )
    h, t, a = min(hand), min(train), min(accum)
    summary = {
        "bench": "trainer_step_summary",
        "hand_step_s": round(h, 5),
        "trainer_step_s": round(t, 5),
        "ratio": round(t / h, 3),
        "goal": 1.10,
        "ok": t / h <= 1.10,
        "accum2_step_s": round(a, 5),
        "accum2_ratio": round(a / h, 3),
        **common,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
