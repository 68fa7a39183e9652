"""torchrun-style training on 2 CPU processes with gloo: identical weights on every rank, global batch norm."""
import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tagface.checkpoint import load_tensors
from tagface.distributed import CrossRankBatchNorm2d

from test_models_losses import random_faces, tiny_recipe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)


def _train_rank(rank: int, world: int, port: int, out: str, *extra: str) -> None:
    from tagface.checkpoint import atomic_save_tensors
    from tagface.training import Trainer
    _join(rank, world, port)
    recipe = tiny_recipe("seed-acgan-dcgan", "train.batch_size=8", "train.sample_every=1000", *extra)
    trainer = Trainer(recipe, random_faces(24), out, progress=False)
    assert sum(isinstance(m, CrossRankBatchNorm2d) for m in trainer.G.modules()) > 0
    trainer.fit(3)
    weights = {f"G.{k}": v for k, v in trainer.G.state_dict().items()}
    weights.update({f"D.{k}": v for k, v in trainer.D.state_dict().items()})
    weights["ada_p"] = torch.tensor(trainer.ada_p, dtype=torch.float64)  # ADA's chance must agree across ranks
    atomic_save_tensors(weights, os.path.join(out, f"rank{rank}.safetensors"))
    dist.destroy_process_group()


@pytest.mark.parametrize("extra", [(), ("train.reuse_fakes=true",),
                                   ("train.diffaugment=color,cutout", "train.ada_target=0.1", "train.ada_interval=1",
                                    "train.ada_kimg=0.01")])
def test_two_gloo_ranks_hold_identical_weights(extra, tmp_path):
    mp.spawn(_train_rank, args=(2, free_port(), str(tmp_path), *extra), nprocs=2, join=True)
    a, b = load_tensors(tmp_path / "rank0.safetensors"), load_tensors(tmp_path / "rank1.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "checkpoint.safetensors").exists() and (tmp_path / "generator.safetensors").exists()
    assert not (tmp_path / "checkpoint.safetensors.tmp").exists()


def _batchnorm_rank(rank: int, world: int, port: int, out: str) -> None:
    _join(rank, world, port)
    torch.manual_seed(0)
    x = torch.randn(8, 3, 4, 4)
    bn = CrossRankBatchNorm2d(3)
    bn.weight.data = torch.tensor([1.0, 2.0, 0.5])
    local = x[rank * 4:(rank + 1) * 4].clone().requires_grad_(True)
    y = bn(local)
    (y * torch.arange(y.numel()).view_as(y)[: y.shape[0]]).sum().backward()
    torch.save({"y": y.detach(), "grad": local.grad, "mean": bn.running_mean, "var": bn.running_var},
               os.path.join(out, f"bn{rank}.pt"))
    dist.destroy_process_group()


def test_cross_rank_batchnorm_matches_one_big_batch(tmp_path):
    mp.spawn(_batchnorm_rank, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    parts = [torch.load(tmp_path / f"bn{r}.pt", weights_only=True) for r in range(2)]
    torch.manual_seed(0)
    x = torch.randn(8, 3, 4, 4).requires_grad_(True)
    bn = torch.nn.BatchNorm2d(3)
    bn.weight.data = torch.tensor([1.0, 2.0, 0.5])
    y = bn(x)
    weights = torch.cat([torch.arange(4 * 48).view(4, 3, 4, 4)] * 2).float()
    (y * weights).sum().backward()
    assert torch.allclose(torch.cat([p["y"] for p in parts]), y.detach(), atol=1e-5)
    assert torch.allclose(torch.cat([p["grad"] for p in parts]), x.grad, atol=1e-4)
    assert torch.allclose(parts[0]["mean"], bn.running_mean, atol=1e-6)
    assert torch.allclose(parts[1]["var"], bn.running_var, atol=1e-5)


TORCHRUN_TIMEOUT_S = 240


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")),
                    reason="torchrun not installed")
def test_torchrun_cli_trains_and_resumes(tmp_path):
    from test_training import _write_tiny_folder
    from test_models_losses import TINY
    data = _write_tiny_folder(tmp_path / "data", n=16)
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    sets = [a for item in TINY + ["train.batch_size=8"] for a in ("--set", item)]
    env = {**os.environ, "TAGFACE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    def torchrun_train(*args):
        cmd = [torchrun, "--nproc_per_node=2", "--master_port", str(free_port()), "-m", "tagface", "train", *args]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=TORCHRUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            # the ranks run in sessions of their own, out of reach of killpg: torchrun stops them on SIGTERM
            proc.terminate()
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            raise
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)

    run = torchrun_train("--config", "seed-acgan-dcgan", "--data", str(data), "--out", str(tmp_path / "run"),
                         "--steps", "2", "--no-progress", *sets)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stderr.count("tagface: done at step 2") == 1  # only rank 0 speaks
    assert '"processes": 2' in (tmp_path / "run" / "run.json").read_text()
    run = torchrun_train("--out", str(tmp_path / "run"), "--resume", "--steps", "3", "--no-progress")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "tagface: done at step 3" in run.stderr
