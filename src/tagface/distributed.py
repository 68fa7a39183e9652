"""Multi-process training under torchrun: process-group setup and batch statistics across ranks.

`torchrun --nproc_per_node=N -m tagface train ...` sets RANK / WORLD_SIZE / LOCAL_RANK; `init()` reads them.
BatchNorm layers become `CrossRankBatchNorm2d`, which normalises with the statistics of the whole global
batch (like torch's SyncBatchNorm, which only runs on GPUs; this one also runs on CPUs with gloo).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn as nn

# The differentiable all_reduce still works; its suggested replacement is a private module.
warnings.filterwarnings("ignore", message="torch.distributed.nn.functional.all_reduce is deprecated")


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def init(device: str) -> Dist:
    """Join the process group torchrun describes in the environment; a single process needs none."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
    return Dist(rank, world, local_rank)


def current() -> Dist:
    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return Dist()


class CrossRankBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are summed over all ranks (differentiably), so N processes
    with B images each normalise exactly like one process with N*B images."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        count = torch.full((c,), x.numel() / c, dtype=x.dtype, device=x.device)
        stats = dist_fn.all_reduce(torch.stack([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), count]))
        n = stats[2]
        mean = stats[0] / n
        var = stats[1] / n - mean * mean
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_((var * n / (n - 1)).detach(), m)
        y = (x - mean[None, :, None, None]) * torch.rsqrt(var + self.eps)[None, :, None, None]
        return y * self.weight[None, :, None, None] + self.bias[None, :, None, None] if self.affine else y


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d in module by CrossRankBatchNorm2d, keeping parameters and buffers."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = CrossRankBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                       child.track_running_stats).to(child.weight.device if child.affine else "cpu")
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            convert_batchnorm(child)
    return module


def gather_tensors(t: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's copy of a same-shaped tensor (e.g. RNG states), in rank order."""
    if not (dist.is_available() and dist.is_initialized()):
        return [t]
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    out = [torch.empty_like(t, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t.to(device))
    return [o.cpu() for o in out]
