"""Tiny encoders, data and an independent InfoNCE for the trainer tests (also run as a script).

``python -m tests.train._toy OUT_DIR RESUME SLEEP`` trains the toy model of the resume test; the
SIGKILL test starts it in a subprocess.
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset


class ToyEncoder(nn.Module):
    """Two-layer MLP with optional dropout; ``out_dim`` as the trainer contract requires.

    With ``batch_codes`` it declares (``covariates``) and uses the ``batch_code`` covariate.
    """

    def __init__(self, d_in: int, out_dim: int = 16, dropout: float = 0.0, batch_codes: int = 0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, 24), nn.Tanh(), nn.Dropout(dropout), nn.Linear(24, out_dim))
        self.out_dim = out_dim
        self.batch_emb = nn.Embedding(batch_codes, out_dim) if batch_codes else None
        self.covariates = ("batch_code",) if batch_codes else ()  # declared like an EncoderSpec's
        self.seen_batch = False

    def forward(self, x: torch.Tensor, batch_code: torch.Tensor | None = None) -> torch.Tensor:
        h = self.net(x)
        if self.batch_emb is not None and batch_code is not None:
            self.seen_batch = True
            h = h + self.batch_emb(batch_code.long())
        return h


class PairData(Dataset):
    """Two noisy views of a shared latent: ``histology`` (10-d) and ``expression`` (20-d)."""

    def __init__(self, n: int = 96, seed: int = 0, dtype: torch.dtype = torch.float32, masked: bool = False):
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, 4, generator=g)
        self.a = (z @ torch.randn(4, 10, generator=g) + 0.3 * torch.randn(n, 10, generator=g)).to(dtype)
        self.b = (z @ torch.randn(4, 20, generator=g) + 0.3 * torch.randn(n, 20, generator=g)).to(dtype)
        self.mask = torch.rand(n, generator=g) > 0.2 if masked else None

    def __len__(self) -> int:
        return len(self.a)

    def __getitem__(self, i: int) -> dict:
        item = {"histology": self.a[i], "expression": self.b[i], "batch_code": i % 2, "index": i}
        if self.mask is not None:
            item["expression_mask"] = self.mask[i]
        return item


class MinimalInfoNCE(nn.Module):
    """Single-process symmetric InfoNCE written independently of biomodal.losses."""

    def __init__(self, logit_scale: float = 10.0) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale)).log())

    def forward(self, embeddings: dict, **extra):
        from biomodal.losses.base import LossOutput

        a, b = embeddings["histology"], embeddings["expression"]
        logits = self.logit_scale.exp() * a @ b.T
        y = torch.arange(len(a), device=a.device)
        loss = 0.5 * (F.cross_entropy(logits, y) + F.cross_entropy(logits.T, y))
        return LossOutput(loss=loss, parts={"nce": loss})


def make_model(seed: int = 0, *, dropout: float = 0.0, loss: str = "clip", adversary: bool = False, **kw):
    """Toy two-modality ContrastiveModel, identical for a given seed."""
    from biomodal.losses import get_loss
    from biomodal.train import ContrastiveModel

    torch.manual_seed(seed)
    encoders = {"histology": ToyEncoder(10, dropout=dropout), "expression": ToyEncoder(20, dropout=dropout)}
    lossmod = get_loss("clip") if loss == "clip" else MinimalInfoNCE()
    adv = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)) if adversary is True else None
    if isinstance(adversary, nn.Module):
        adv = adversary
    return ContrastiveModel(encoders, lossmod, embed_dim=8, adversary=adv, **kw)


def collate(items: list[dict]) -> dict:
    """Stack a list of item dicts (same as default_collate, kept explicit for the tests)."""
    return torch.utils.data.default_collate(items)


RESUME_CONFIG = dict(
    max_steps=30,
    batch_size=16,
    lr=5e-3,
    warmup_steps=3,
    log_every=1,
    ckpt_every=5,
    keep_last=2,
    progress=False,
    seed=3,
    device="cpu",
)


class _Sleep:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_step_end(self, trainer, step, row) -> None:
        time.sleep(self.seconds)


def run_resume_job(out_dir: str, resume: str | None, sleep: float) -> None:
    """Train the resume-test model (dropout, shuffled multi-epoch data) into ``out_dir``."""
    from biomodal.train import TrainConfig, Trainer

    torch.set_num_threads(1)
    model = make_model(0, dropout=0.2)
    cfg = TrainConfig(**RESUME_CONFIG, resume=resume)
    Trainer(model, cfg, out_dir, train_data=PairData(72), callbacks=[_Sleep(sleep)]).fit()


if __name__ == "__main__":
    out, resume, sleep = sys.argv[1], sys.argv[2], float(sys.argv[3])
    run_resume_job(out, None if resume == "none" else resume, sleep)


DIST_CONFIGS = {
    # name: (model kwargs, data kwargs, TrainConfig kwargs for ONE process on the WHOLE batch)
    "ddp": ({"adversary": True}, {}, {"accum_steps": 1, "batch_size": 16}),
    "gradcache": ({}, {"masked": True}, {"accum_steps": 2, "batch_size": 16, "val_every": 2}),
}


def dist_config(name: str, world: int) -> tuple[dict, dict, dict]:
    """Model, data and trainer settings of a distributed-equivalence run with ``world`` processes."""
    model_kw, data_kw, cfg = DIST_CONFIGS[name]
    cfg = {**cfg, "batch_size": cfg["batch_size"] // world}
    base = dict(max_steps=4, lr=1e-2, grad_clip=0.5, log_every=1, progress=False, device="cpu", ckpt_every=0)
    return model_kw, data_kw, {**base, **cfg}


def train_dist_config(name: str, world: int, out_root: str, rank: int = 0):
    """Train one configuration; every rank saves its final parameters to ``{name}_rank{rank}.pt``."""
    from biomodal.train import TrainConfig, Trainer

    model_kw, data_kw, cfg = dist_config(name, world)
    model = make_model(0, **model_kw).double()
    data = PairData(64, dtype=torch.float64, **data_kw)
    val = PairData(32, seed=5, dtype=torch.float64) if "val_every" in cfg else None
    Trainer(model, TrainConfig(**cfg), f"{out_root}/{name}", train_data=data, val_data=val).fit()
    torch.save(model.state_dict(), f"{out_root}/{name}_rank{rank}.pt")


def dist_worker(rank: int, world: int, init_file: str, out_root: str) -> None:
    """Entry point of ``torch.multiprocessing.spawn`` in the gloo equivalence test."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        for name in DIST_CONFIGS:
            train_dist_config(name, world, out_root, rank)
    finally:
        dist.destroy_process_group()
