import pytest
import torch

from biomodal.train.distributed import env_from_environ, first_slurm_host
from biomodal.train.loggers import read_csv_metrics
from tests.train._toy import DIST_CONFIGS, dist_worker, make_model, train_dist_config


def test_torchrun_variables_win():
    env = {
        "RANK": "3",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "1",
        "SLURM_PROCID": "0",
        "SLURM_STEP_NUM_TASKS": "2",
    }
    assert env_from_environ(env) == (3, 8, 1, {})


def test_slurm_variables_are_mapped():
    env = {
        "SLURM_PROCID": "5",
        "SLURM_STEP_NUM_TASKS": "8",
        "SLURM_LOCALID": "1",
        "SLURM_STEP_NODELIST": "gpu[007-008,010]",
    }
    rank, world, local, export = env_from_environ(env)
    assert (rank, world, local) == (5, 8, 1)
    assert export == {
        "RANK": "5",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "gpu007",
        "MASTER_PORT": "29500",
    }
    env["MASTER_ADDR"], env["MASTER_PORT"] = "10.0.0.1", "1234"
    assert env_from_environ(env)[3]["MASTER_ADDR"] == "10.0.0.1"
    # inside an sbatch script (no job step) SLURM_NTASKS alone must not start a process group
    assert env_from_environ({"SLURM_PROCID": "0", "SLURM_NTASKS": "4"}) == (0, 1, 0, {})
    assert env_from_environ({"SLURM_PROCID": "1", "SLURM_NTASKS": "4", "SLURM_STEP_ID": "0"})[:2] == (1, 4)
    assert env_from_environ({}) == (0, 1, 0, {})


def test_first_slurm_host():
    assert first_slurm_host("node01") == "node01"
    assert first_slurm_host("cn[1-4]") == "cn1"
    assert first_slurm_host("a[003,007],b1") == "a003"


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path):
    import torch.multiprocessing as mp

    torch.set_num_threads(1)
    mp.spawn(dist_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "two")), nprocs=2, join=True)
    for name in DIST_CONFIGS:
        train_dist_config(name, 1, str(tmp_path / "one"), rank=0)
        ref = torch.load(tmp_path / "one" / f"{name}_rank0.pt", weights_only=True)
        for rank in (0, 1):
            got = torch.load(tmp_path / "two" / f"{name}_rank{rank}.pt", weights_only=True)
            for k in ref:
                torch.testing.assert_close(
                    got[k], ref[k], rtol=1e-5, atol=1e-5, msg=f"{name} rank {rank} {k}"
                )
        # parameters really moved, and the logged (rank-averaged) losses equal the global ones
        model_kw = DIST_CONFIGS[name][0]
        init = make_model(0, **model_kw).double().state_dict()
        assert max((init[k] - ref[k]).abs().max() for k in ref) > 1e-3
        one = read_csv_metrics(tmp_path / "one" / name / "metrics.csv")
        two = read_csv_metrics(tmp_path / "two" / name / "metrics.csv")
        assert len(one) == len(two) == 4
        for a, b in zip(one, two):
            assert b["loss"] == pytest.approx(a["loss"], rel=1e-6)
            assert b["histology-expression"] == pytest.approx(a["histology-expression"], rel=1e-6)
        if name == "gradcache":
            v1 = read_csv_metrics(tmp_path / "one" / name / "val_metrics.csv")
            v2 = read_csv_metrics(tmp_path / "two" / name / "val_metrics.csv")
            assert [r["val/loss"] for r in v2] == pytest.approx([r["val/loss"] for r in v1], rel=1e-6)
    assert not (tmp_path / "two" / "ddp" / "metrics.csv.tmp").exists()
