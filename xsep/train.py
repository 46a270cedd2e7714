"""`python -m xsep train`: trains Xception on an offline dataset, on CPU or GPU, one process or many.

    python -m xsep train --epochs 5                               # digits, tiny Xception, this machine
    python -m xsep train --data path/to/images --model xception --batch-size 64
    torchrun --nproc-per-node 2 -m xsep train --epochs 5 --sync-bn  # data parallel (gloo on CPU, NCCL on GPU)

Data: scikit-learn's handwritten digits (1797 8x8 images, 10 classes, shipped with the package, so no
download) upsampled to --image-size and repeated to 3 channels, split 80/20 (stratified, fixed seed);
or an image folder (torchvision ImageFolder: one subfolder per class; `train/` and `val/` subfolders
are used as the split when present, else a random 80/20 split).

Per epoch: training loss and accuracy, held-out loss and accuracy, and a checkpoint (model,
optimizer, scheduler, epoch) at --output-dir/checkpoint.pt that --resume continues from. On GPU,
bf16 autocast and channels_last are on by default. SGD with momentum 0.9, weight decay 1e-5 and the
learning rate decayed x0.94 every 2 epochs, as in the paper.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from xsep import models
from xsep._optional import MissingDependency, require

MODELS = {"xception_tiny": models.xception_tiny, "xception": models.xception}
# Xception's mean = std = 0.5 normalisation (Keras scales to [-1, 1]).
MEAN = STD = (0.5, 0.5, 0.5)
CHECKPOINT = "checkpoint.pt"
MIN_IMAGE_SIZE = 32  # five stride-2 stages: 32 leaves a 1x1 final map (the paper's minimum is 71)


class TrainingError(ValueError):
    """A problem with what the user asked for (arguments, data, checkpoint): reported without a traceback."""


# --------------------------------------------------------------------------------------------------
# Processes and devices


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: str | None = None) -> Distributed:
    """One process per device under torchrun (WORLD_SIZE, RANK, LOCAL_RANK set): NCCL when training on
    GPUs, gloo on CPU. Without torchrun, one process on `device` (default: CUDA if available)."""
    wants_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed(device=torch.device(device or ("cuda" if wants_cuda else "cpu")))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if wants_cuda:
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    else:
        target = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if wants_cuda else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), target)


def wrap_for_data_parallel(model: nn.Module, distributed: Distributed, sync_bn: bool) -> nn.Module:
    """DistributedDataParallel around `model` (already on its device); with `sync_bn`, BatchNorm
    statistics over the global batch (torch's SyncBatchNorm on GPU, xsep's gloo-capable one on CPU)."""
    if not distributed.enabled:
        return model
    if sync_bn:
        if distributed.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            from xsep.sync_batchnorm import convert_sync_batchnorm

            model = convert_sync_batchnorm(model)
    device_ids = [distributed.device.index] if distributed.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


# --------------------------------------------------------------------------------------------------
# Data


class DigitsDataset(torch.utils.data.Dataset):
    """scikit-learn's 8x8 digits as 3 x size x size images in [-1, 1] (bilinear upsampling)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, size: int):
        self.images, self.labels, self.size = images, labels, size

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = self.images[index][None, None] / 16.0  # pixel values are 0..16
        image = F.interpolate(image, size=(self.size, self.size), mode="bilinear", align_corners=False)[0]
        return (image.expand(3, -1, -1) - 0.5) / 0.5, self.labels[index]


def digits_datasets(image_size: int, seed: int = 0) -> tuple[DigitsDataset, DigitsDataset, int]:
    """(train, held-out, number of classes): a stratified 80/20 split of the 1797 digits."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    train_idx, val_idx = train_test_split(range(len(digits.target)), test_size=0.2, random_state=seed,
                                          stratify=digits.target)
    images = torch.tensor(digits.images, dtype=torch.float32)
    labels = torch.tensor(digits.target, dtype=torch.long)
    return (DigitsDataset(images[train_idx], labels[train_idx], image_size),
            DigitsDataset(images[val_idx], labels[val_idx], image_size), 10)


def folder_datasets(root: Path, image_size: int, seed: int = 0):
    """(train, held-out, number of classes) from an ImageFolder tree."""
    from torchvision import datasets, transforms

    if not root.is_dir():
        raise TrainingError(f"--data {str(root)!r} is not a directory (expected one subfolder per class, or "
                         f"train/ and val/ holding those)")
    resize = round(image_size / 0.8975)  # timm's crop_pct for Xception
    train_tf = transforms.Compose([transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    val_tf = transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(image_size),
                                 transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    if (root / "train").is_dir() and (root / "val").is_dir():
        train = datasets.ImageFolder(root / "train", train_tf)
        return train, datasets.ImageFolder(root / "val", val_tf), len(train.classes)
    train, val = datasets.ImageFolder(root, train_tf), datasets.ImageFolder(root, val_tf)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
    cut = int(0.8 * len(order))
    return (torch.utils.data.Subset(train, order[:cut]), torch.utils.data.Subset(val, order[cut:]),
            len(train.classes))


def make_loaders(train, val, batch_size: int, distributed: Distributed, seed: int, workers: int = 0):
    """Shuffled training batches (a DistributedSampler shard per process) and held-out batches (each
    process takes every world_size-th sample, so each is counted exactly once)."""
    from torch.utils.data import DataLoader, DistributedSampler, Subset

    if distributed.enabled:
        sampler = DistributedSampler(train, distributed.world_size, distributed.rank, shuffle=True, seed=seed)
        train_loader = DataLoader(train, batch_size, sampler=sampler, num_workers=workers, drop_last=True)
        val = Subset(val, range(distributed.rank, len(val), distributed.world_size))
    else:
        generator = torch.Generator().manual_seed(seed)
        train_loader = DataLoader(train, batch_size, shuffle=True, generator=generator, num_workers=workers,
                                  drop_last=True)
    return train_loader, DataLoader(val, batch_size, num_workers=workers)


# --------------------------------------------------------------------------------------------------
# Steps


def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 1e-5):
    """The paper's recipe: SGD momentum 0.9, weight decay 1e-5, learning rate x0.94 every 2 epochs."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.94)


def _prepare(images, labels, device, channels_last: bool):
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels.to(device, non_blocking=True)


def train_step(model: nn.Module, optimizer, images: torch.Tensor, labels: torch.Tensor,
               amp_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step on a batch; returns (mean loss, number correct), both detached."""
    with torch.autocast(images.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        logits = model(images)
        loss = F.cross_entropy(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), (logits.argmax(1) == labels).sum().detach()


@torch.no_grad()
def evaluate(model: nn.Module, loader, device, channels_last: bool = False, amp_dtype=None,
             distributed: Distributed | None = None) -> tuple[float, float]:
    """(mean loss, accuracy) over the loader (summed over processes when distributed)."""
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
    for images, labels in loader:
        images, labels = _prepare(images, labels, device, channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images).float()
        totals += torch.stack([F.cross_entropy(logits, labels, reduction="sum").double(),
                               (logits.argmax(1) == labels).sum().double(),
                               torch.tensor(len(labels), dtype=torch.float64, device=device)])
    if distributed is not None and distributed.enabled:
        dist.all_reduce(totals)
    loss_sum, correct, count = totals.tolist()
    return (loss_sum / count, correct / count) if count else (math.nan, math.nan)


def train_epoch(model, optimizer, loader, device, *, channels_last=False, amp_dtype=None,
                distributed: Distributed | None = None, progress: bool = True, description: str = "",
                on_step=None) -> tuple[float, float]:
    """One pass over `loader`; (mean loss, accuracy) over every process's samples. `on_step(loss)` is
    called with each step's loss tensor (for tests and curves)."""
    from tqdm import tqdm

    model.train()
    show = progress and (distributed is None or distributed.is_main)
    totals = torch.zeros(3, dtype=torch.float64, device=device)
    bar = tqdm(loader, desc=description, disable=not show, leave=False, dynamic_ncols=True)
    for images, labels in bar:
        images, labels = _prepare(images, labels, device, channels_last)
        loss, correct = train_step(model, optimizer, images, labels, amp_dtype)
        totals += torch.stack([loss.double() * len(labels), correct.double(),
                               torch.tensor(len(labels), dtype=torch.float64, device=device)])
        if on_step is not None:
            on_step(loss)
        if show:
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    if distributed is not None and distributed.enabled:
        dist.all_reduce(totals)
    loss_sum, correct, count = totals.tolist()
    return (loss_sum / count, correct / count) if count else (math.nan, math.nan)


# --------------------------------------------------------------------------------------------------
# Checkpoints


def save_checkpoint(path: Path, model: nn.Module, optimizer, scheduler, epoch: int, args: dict) -> None:
    """Written to a temporary name, then renamed: an interrupted save never clobbers the last good one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"model": _unwrapped(model).state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "epoch": epoch,
             "args": {k: v for k, v in args.items() if isinstance(v, (str, int, float, bool, type(None)))}}
    temporary = path.with_suffix(".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def load_checkpoint(path: Path, model: nn.Module, optimizer, scheduler) -> int:
    """Restores a checkpoint written by save_checkpoint; returns the number of epochs it had completed."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TrainingError(f"--resume {str(path)!r}: no such file") from None
    missing = {"model", "optimizer", "scheduler", "epoch"} - set(state if isinstance(state, dict) else ())
    if missing:
        raise TrainingError(f"--resume {str(path)!r} is not an xsep training checkpoint (lacks {sorted(missing)})")
    _unwrapped(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["epoch"])


def _unwrapped(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# --------------------------------------------------------------------------------------------------
# Command line


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train Xception on digits (default) or an image folder",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="digits",
                        help="'digits' (scikit-learn's, offline) or an ImageFolder directory (default: digits)")
    parser.add_argument("--model", choices=sorted(MODELS), default="xception_tiny",
                        help="xception_tiny: 1/8 width, 1 middle module, for CPUs; xception: the paper's "
                             "(default: xception_tiny)")
    parser.add_argument("--image-size", type=int, default=71, help="input side (default 71, Xception's minimum)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32, help="per process (default 32)")
    parser.add_argument("--lr", type=float, default=0.045, help="SGD learning rate (default 0.045, the paper's)")
    parser.add_argument("--weight-decay", type=float, default=1e-5)
    parser.add_argument("--drop-rate", type=float, default=0.0, help="dropout before the classifier (paper: 0.5)")
    parser.add_argument("--backend", default=None, help="xsep backend: native, triton, torch (default: automatic)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                        help="bf16 autocast (default: on for CUDA, off on CPU)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="channels_last memory format (default: on for CUDA)")
    parser.add_argument("--sync-bn", action="store_true",
                        help="with several processes: BatchNorm statistics over the global batch")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default 0)")
    parser.add_argument("--output-dir", type=Path, default=Path("checkpoints"),
                        help=f"where {CHECKPOINT} is written after every epoch (default: ./checkpoints)")
    parser.add_argument("--resume", type=Path, default=None, help="a checkpoint to continue from")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.set_defaults(func=run)


def _check_args(args) -> None:
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise TrainingError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.image_size < MIN_IMAGE_SIZE:
        raise TrainingError(f"--image-size must be >= {MIN_IMAGE_SIZE}, got {args.image_size}")
    if not args.lr > 0:
        raise TrainingError(f"--lr must be positive, got {args.lr}")
    if args.device is not None and args.device.split(":")[0] not in ("cpu", "cuda"):
        raise TrainingError(f"--device must be cpu or cuda, got {args.device!r}")


def _check_dependencies(args) -> None:
    """Before any process group exists, so that every rank fails the same way, at once."""
    if args.data == "digits":
        require("sklearn", package="scikit-learn", extra="train", what="xsep train")
    else:
        require("torchvision", package="torchvision", extra="train", what="xsep train --data FOLDER")
    require("tqdm", package="tqdm", extra="train", what="xsep train")


def run(args) -> int:
    try:
        _check_dependencies(args)
    except MissingDependency as e:
        if int(os.environ.get("RANK", "0")) == 0:  # one line under torchrun too; every rank exits
            print(e, file=sys.stderr)
        return 1
    try:
        _check_args(args)
        distributed = setup_distributed(args.device)
        try:
            return _train(args, distributed)
        finally:
            if distributed.enabled:
                dist.destroy_process_group()
    except TrainingError as e:
        print(f"python -m xsep train: error: {e}", file=sys.stderr)
        return 2


def _train(args, distributed: Distributed) -> int:
    device = distributed.device
    on_gpu = device.type == "cuda"
    amp_dtype = torch.bfloat16 if (on_gpu if args.amp is None else args.amp) else None
    channels_last = on_gpu if args.channels_last is None else args.channels_last
    log = print if distributed.is_main else (lambda *a, **k: None)

    torch.manual_seed(args.seed)  # the same initial weights in every process
    if args.data == "digits":
        train, val, num_classes = digits_datasets(args.image_size, args.seed)
    else:
        train, val, num_classes = folder_datasets(Path(args.data), args.image_size, args.seed)
    model = MODELS[args.model](num_classes=num_classes, drop_rate=args.drop_rate, backend=args.backend).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = wrap_for_data_parallel(model, distributed, args.sync_bn)
    optimizer, scheduler = make_optimizer(model, args.lr, args.weight_decay)
    start = load_checkpoint(args.resume, model, optimizer, scheduler) if args.resume else 0
    train_loader, val_loader = make_loaders(train, val, args.batch_size, distributed, args.seed, args.workers)

    parameters = sum(p.numel() for p in model.parameters())
    log(f"{args.model}: {parameters:,} parameters, {num_classes} classes; {len(train)} training / {len(val)} "
        f"held-out images at {args.image_size}x{args.image_size}; {distributed.world_size} process(es) on "
        f"{device.type}; batch {args.batch_size} per process; amp {'bf16' if amp_dtype else 'off'}; "
        f"channels_last {'on' if channels_last else 'off'}" + (f"; resuming after epoch {start}" if start else ""))
    for epoch in range(start, args.epochs):
        if distributed.enabled:
            train_loader.sampler.set_epoch(epoch)
        began = time.perf_counter()
        train_loss, train_acc = train_epoch(model, optimizer, train_loader, device, channels_last=channels_last,
                                            amp_dtype=amp_dtype, distributed=distributed, progress=args.progress,
                                            description=f"epoch {epoch + 1}/{args.epochs}")
        scheduler.step()
        val_loss, val_acc = evaluate(model, val_loader, device, channels_last, amp_dtype, distributed)
        log(f"epoch {epoch + 1}/{args.epochs}  train loss {train_loss:.4f} acc {train_acc:.4f}  "
            f"held-out loss {val_loss:.4f} acc {val_acc:.4f}  ({time.perf_counter() - began:.1f} s)", flush=True)
        if distributed.is_main:
            save_checkpoint(args.output_dir / CHECKPOINT, model, optimizer, scheduler, epoch + 1, vars(args))
    return 0
