"""Training of the shipped models on Fashion-MNIST (used once, to make the package's checkpoint
and calibration subset; `evoproxy train` reruns it), and a classifier's accuracy."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from ..errors import EvoproxyError
from .data import load_fmnist, normalize
from .registry import MODELS


# Small nets on small images spend much of their time in elementwise work (BatchNorm, ReLU, fake
# quantization) that streams every activation through memory: 100 images' activations stay in the
# caches where 1000 do not. Outputs per image do not depend on it (checked bit for bit).
EVAL_BATCH = 100


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = EVAL_BATCH) -> float:
    """Top-1 accuracy in percent of `model` (put in eval mode) on normalized `images`."""
    model.eval()
    top = int(labels.max())
    correct = sum(
        count_correct(model(images[i : i + batch_size]), labels[i : i + batch_size], top)
        for i in range(0, len(images), batch_size)
    )
    return 100.0 * correct / len(images)


def count_correct(logits: torch.Tensor, labels: torch.Tensor, top: int) -> int:
    """How many of `labels` are the argmax of `logits`, for a classifier whose labels go up to `top`."""
    if logits.dim() != 2 or top >= logits.shape[1]:
        raise EvoproxyError(
            f"the model gives outputs of shape {tuple(logits.shape)}, which do not fit labels up "
            f"to {top}: a classifier with (batch, classes) logits is needed"
        )
    return int((logits.argmax(1) == labels).sum())


def train(
    model_name: str,
    epochs: int = 4,
    batch_size: int = 128,
    lr: float = 0.1,
    seed: int = 0,
    data_dir: str | None = None,
    device: str = "cpu",
    log=print,
) -> tuple[nn.Module, float]:
    """Train registry model `model_name` from scratch with SGD and a one-cycle schedule, random
    horizontal flips as the only augmentation. Returns the model (eval mode, on the CPU) and its
    test accuracy in percent."""
    torch.manual_seed(seed)
    train_x, train_y = load_fmnist("train", data_dir)
    test_x, test_y = load_fmnist("test", data_dir)
    train_x, test_x = normalize(train_x).to(device), normalize(test_x).to(device)
    train_y, test_y = train_y.to(device), test_y.to(device)
    model = MODELS[model_name].build().to(device)
    steps = epochs * ((len(train_x) + batch_size - 1) // batch_size)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    start = time.time()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train_x)).to(device)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            x = train_x[idx]
            flip = torch.rand(len(x)).to(device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), train_y[idx]).backward()
            opt.step()
            sched.step()
        acc = accuracy(model, test_x, test_y)
        log(f"epoch {epoch + 1}/{epochs}: test accuracy {acc:.2f}% ({time.time() - start:.0f} s)")
    return model.cpu().eval(), acc


def make_calibration_subset(out: Path, size: int = 512, seed: int = 0, data_dir: str | None = None) -> None:
    """Write `size` training images (uint8) and labels, drawn with a fixed seed, to `out`."""
    images, labels = load_fmnist("train", data_dir)
    idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:size]
    torch.save({"images": images[idx].clone(), "labels": labels[idx].clone()}, out)
