"""Training of the shipped models: the classifiers on Fashion-MNIST, each by a named recipe
(recipes.RECIPES), the language model on the shipped text (used once, to make the package's
checkpoints and calibration subset; `evoproxy train` reruns it)."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from ..files import replacing
from .data import load_fmnist, normalize
from .metrics import accuracy, next_token_loss, perplexity
from .recipes import RECIPES, warmup_cosine
from .registry import MODELS


def train(
    model_name: str,
    epochs: int = 4,
    batch_size: int = 128,
    lr: float | None = None,
    seed: int = 0,
    data_dir: str | None = None,
    device: str = "cpu",
    log=print,
    recipe: str | None = None,
) -> tuple[nn.Module, float]:
    """Train registry model `model_name` from scratch by `recipe` (a name of RECIPES; None: the
    model's own) at peak rate `lr` (None: the recipe's). Returns the model (eval mode, on the CPU)
    and its test accuracy in percent."""
    spec = MODELS[model_name]
    how = RECIPES[recipe or spec.recipe]
    torch.manual_seed(seed)
    train_x, train_y = load_fmnist("train", data_dir)
    test_x, test_y = load_fmnist("test", data_dir)
    train_x, test_x = normalize(train_x).to(device), normalize(test_x).to(device)
    train_y, test_y = train_y.to(device), test_y.to(device)
    model = spec.build().to(device)
    steps = epochs * ((len(train_x) + batch_size - 1) // batch_size)
    opt = how.optimizer_for(model.parameters(), lr)
    sched = how.scheduler_for(opt, steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=how.label_smoothing)
    start = time.time()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train_x)).to(device)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            x = train_x[idx]
            if how.flips:
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
    with replacing(out) as tmp:
        torch.save({"images": images[idx].clone(), "labels": labels[idx].clone()}, tmp)


def train_language_model(
    model: nn.Module,
    train_part: tuple[torch.Tensor, torch.Tensor],
    test_part: tuple[torch.Tensor, torch.Tensor],
    steps: int = 600,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    device: str = "cpu",
    log=print,
) -> tuple[nn.Module, float]:
    """Train a language model on windows (inputs, targets) of `train_part` with AdamW (weight
    decay 0.1), linear warm-up over the first 5 % of `steps` and cosine decay after. Returns the
    model (eval mode, on the CPU) and its perplexity on `test_part`."""
    torch.manual_seed(seed)
    model = model.to(device)
    inputs, targets = (t.to(device) for t in train_part)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    sched = warmup_cosine(opt, steps)
    start, generator = time.time(), torch.Generator().manual_seed(seed)
    for step in range(steps):
        model.train()
        idx = torch.randint(0, len(inputs), (batch_size,), generator=generator).to(device)
        loss = next_token_loss(model(inputs[idx]), targets[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if (step + 1) % 50 == 0 or step + 1 == steps:
            log(f"step {step + 1}/{steps}: train loss {loss.item():.4f} ({time.time() - start:.0f} s)")
    ppl = perplexity(model, *(t.to(device) for t in test_part))
    log(f"test perplexity {ppl:.3f} ({time.time() - start:.0f} s)")
    return model.cpu().eval(), ppl
