"""Two gloo processes equal one with masks (ranks lacking a modality), a loss schedule, distillation
and in-modality terms, on both the DDP and the GradCache path."""

import pytest
import torch

from tests.train._toy import PairData, ToyEncoder

CONFIGS = {"ddp": 1, "gradcache": 2}  # name -> accum_steps


class _Data(PairData):
    """Expression present in every eighth item only, so a rank's batch often has none."""

    def __init__(self):
        super().__init__(64, dtype=torch.float64)
        self.mask = torch.arange(64) % 8 == 0

    def __getitem__(self, i):
        item = super().__getitem__(i)
        item["histology_view"] = item["histology"].flip(0) * 0.5
        return item


def _model():
    from biomodal.losses import ScheduledLoss, get_loss
    from biomodal.train import ContrastiveModel

    torch.manual_seed(0)
    loss = ScheduledLoss([(get_loss("clip"), 2), (get_loss("softclip"), None)])
    enc = {"histology": ToyEncoder(10), "expression": ToyEncoder(20)}
    model = ContrastiveModel(enc, loss, embed_dim=8, distill={"alpha": 0.3, "momentum": 0.9},
                             self_supervised={"histology": 0.5})  # fmt: skip
    return model.double()


def _train(name: str, world: int, out_root: str, rank: int = 0) -> None:
    from biomodal.train import TrainConfig, Trainer

    cfg = TrainConfig(max_steps=4, batch_size=16 // world, accum_steps=CONFIGS[name], lr=1e-2, grad_clip=0.5,
                      log_every=1, progress=False, device="cpu", ckpt_every=0)  # fmt: skip
    model = _model()
    Trainer(model, cfg, f"{out_root}/{name}", train_data=_Data()).fit()
    torch.save(model.state_dict(), f"{out_root}/{name}_rank{rank}.pt")


def _worker(rank: int, world: int, init_file: str, out_root: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        for name in CONFIGS:
            _train(name, world, out_root, rank)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_match_one_with_masks_schedule_distill_and_ssl(tmp_path):
    import torch.multiprocessing as mp

    from biomodal.train.loggers import read_csv_metrics

    torch.set_num_threads(1)
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "two")), nprocs=2, join=True)
    for name in CONFIGS:
        _train(name, 1, str(tmp_path / "one"))
        ref = torch.load(tmp_path / "one" / f"{name}_rank0.pt", weights_only=True)
        assert int(ref["loss.stage"]) == 1 and any(k.startswith("teacher.") for k in ref)
        for rank in (0, 1):
            got = torch.load(tmp_path / "two" / f"{name}_rank{rank}.pt", weights_only=True)
            for k in ref:
                torch.testing.assert_close(
                    got[k], ref[k], rtol=1e-5, atol=1e-6, msg=f"{name} rank {rank} {k}"
                )
        one = read_csv_metrics(tmp_path / "one" / name / "metrics.csv")
        two = read_csv_metrics(tmp_path / "two" / name / "metrics.csv")
        assert [r["loss_stage"] for r in one] == [r["loss_stage"] for r in two] == [0, 0, 1, 1]
        for a, b in zip(one, two):
            for key in ("loss", "distill", "ssl/histology"):
                assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-9), (name, key)
