"""BatchNorm with statistics over every process's batch, for any torch.distributed backend (gloo on CPU
included: torch's own nn.SyncBatchNorm runs on GPUs only).

With it, data-parallel training computes exactly what one process computes on the combined batch
(up to floating-point summation order); with plain BatchNorm each process normalises by its own
shard's statistics, a different function of the data.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_functional
from torch import nn


def _synchronising(module: nn.BatchNorm2d) -> bool:
    return (module.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)


class SyncBatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d whose training-mode statistics are all-reduced across processes (differentiably,
    so the backward pass also sees every shard). Outside training, or with one process, it is plain
    BatchNorm2d; its state_dict is BatchNorm2d's."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not _synchronising(self):
            return super().forward(input)
        self._check_input_dim(input)
        channels = input.shape[1]
        # Statistics in float64: E[x^2] - E[x]^2 cancels badly in float32 when the mean is large.
        x = input.to(torch.float64)
        count = torch.tensor([input.numel() // channels], dtype=torch.float64, device=input.device)
        local = torch.cat([x.sum((0, 2, 3)), x.square().sum((0, 2, 3)), count])
        with warnings.catch_warnings():
            # Deprecated in favour of torch.distributed._functional_collectives.all_reduce, which is not
            # differentiable; this one is (its backward all-reduces the gradient), which the backward needs.
            warnings.simplefilter("ignore", FutureWarning)
            total = dist_functional.all_reduce(local, op=dist.ReduceOp.SUM)
        n = total[-1]
        mean = total[:channels] / n
        var = total[channels:2 * channels] / n - mean.square()
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = (1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum)
                unbiased = var * (n / (n - 1)) if n > 1 else var
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        shape = (1, channels, 1, 1)
        compute = torch.promote_types(input.dtype, torch.float32)
        y = (input.to(compute) - mean.to(compute).view(shape)) * torch.rsqrt(var + self.eps).to(compute).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(input.dtype).contiguous(memory_format=_memory_format(input))


def _memory_format(t: torch.Tensor) -> torch.memory_format:
    nhwc = t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
    return torch.channels_last if nhwc else torch.contiguous_format


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replaces every plain nn.BatchNorm2d in `module` (in place; returns it) by SyncBatchNorm2d,
    keeping parameters and running statistics. Use torch's nn.SyncBatchNorm on GPUs (faster)."""
    if type(module) is nn.BatchNorm2d:
        reference = next(iter(module.state_dict().values()), None)
        factory = {} if reference is None else {"device": reference.device}
        new = SyncBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats, **factory)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        setattr(module, name, convert_sync_batchnorm(child))
    return module
