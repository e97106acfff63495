"""Quantization-aware training with learned step sizes (LSQ, Esser et al., ICLR 2020).

Every layer of the registry gets two fake quantizers that learn their step size s:
x ↦ s · round(clamp(x / s, −Qn, Qp)), rounding passed straight through (gradient 1 inside the
range, 0 outside) and the gradient of s scaled by g = 1 / sqrt(numel(x) · Qp), as LSQ does so
that steps learn at the pace of the weights.

- Weights: one step per output channel, levels {−q..q} with q = 2^(b−1) − 1, as the PTQ
  quantizer (`fakequant.quantize_weight`) uses; each step starts at that quantizer's
  MSE-searched clipping scale.
- Activations (the input of each layer): one step per tensor, starting at the PTQ quantizer's
  calibrated range and integer zero point (kept fixed): Qn = zero, Qp = 2^b − 1 − zero, so an
  unsigned input (zero 0) is LSQ's unsigned case.

So before training, a QAT model computes what `quantize_model` gives (BatchNorm statistics
included); training then moves weights, steps and BatchNorm together. The weight quantizer is a
torch parametrization, so every layer keeps its name and type and `module.weight` reads the
quantized weight. Training: SGD (momentum 0.9) or Adam, cosine learning rate from `lr` to 0 over
all steps, cross-entropy with the labels or (distillation) the KL divergence to the full-precision
model's outputs; a checkpoint after every epoch, from which a killed run resumes exactly.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from ..errors import ParameterError
from ..model import LayerInfo, accuracy, quantizable_modules, weights_hash
from ..pace import paced
from ..params import Interval, OneOf, check_parameters
from .checkpoint import EpochRecord, check_writable, read_checkpoint, save_checkpoint
from .fakequant import ActQuant, QuantSettings, quantize_model, weight_steps

DEFAULT_LR = {"sgd": 0.01, "adam": 1e-4}  # fine-tuning rates: a tenth of what training from scratch takes


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward, identity backward (the straight-through estimator)."""
    return (x.round() - x).detach() + x


def _scale_grad(x: torch.Tensor, g: float) -> torch.Tensor:
    """x forward, gradient multiplied by g backward."""
    return (x - x * g).detach() + x * g


class LsqQuantizer(nn.Module):
    """x ↦ s · round(clamp(x / s, −qn, qp)) with a learned step s (LSQ). `step` has a shape that
    broadcasts against x: () per tensor, (C, 1, ...) per output channel of a weight."""

    def __init__(self, step: torch.Tensor, qn: int, qp: int):
        super().__init__()
        self.step = nn.Parameter(step.detach().clone())
        self.qn, self.qp = qn, qp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = 1.0 / math.sqrt(x.numel() * max(self.qp, 1))  # qp is 0 only for an input that is never positive
        s = _scale_grad(self.step, g)
        return _round_ste(torch.clamp(x / s, -self.qn, self.qp)) * s

    # qn and qp are part of the state, so that a checkpoint holds the whole quantizer.
    def get_extra_state(self) -> dict:
        return {"qn": self.qn, "qp": self.qp}

    def set_extra_state(self, state: dict) -> None:
        self.qn, self.qp = int(state["qn"]), int(state["qp"])


def _quantize_input(module: nn.Module, inputs: tuple) -> tuple:
    """Forward pre-hook of a QAT layer: its input through its activation quantizer."""
    return (module.act_quantizer(inputs[0]), *inputs[1:])


def lsq_model(
    model: nn.Module,
    layers: Sequence[LayerInfo],
    w_bits: Sequence[int],
    act_bits: int | Sequence[int],
    calib_images: torch.Tensor,
    bn_recalibration: bool = True,
    log: Callable[[str], None] | None = None,
) -> nn.Module:
    """A copy of `model` (train mode) with LSQ quantizers on the weights (`w_bits`, aligned with
    `layers`) and inputs (`act_bits`: one for every layer or one per layer; 32: none) of every
    registry layer, initialised from the PTQ quantizer calibrated on `calib_images` (N, ...):
    before training, the outputs of `quantize_model` up to float rounding (`log` gets its passes'
    progress lines). The model itself is not modified."""
    ptq = quantize_model(model, layers, w_bits, calib_images, QuantSettings(act_bits, bn_recalibration), log=log)
    qmodel = copy.deepcopy(model)
    # The PTQ copy differs from the model in its quantized weights and its buffers (BatchNorm
    # statistics re-estimated after weight quantization): start from those buffers.
    with torch.no_grad():
        for buf, ptq_buf in zip(qmodel.buffers(), ptq.buffers()):
            buf.copy_(ptq_buf)
    modules, ptq_modules = dict(quantizable_modules(qmodel)), dict(quantizable_modules(ptq))
    for layer, bits in zip(layers, w_bits):
        module, ptq_module = modules[layer.name], ptq_modules[layer.name]
        wq = ptq_module.weight.detach()
        if bits < 32:
            q = 2 ** (int(bits) - 1) - 1
            step = weight_steps(wq, int(bits))
            parametrize.register_parametrization(
                module, "weight", LsqQuantizer(step.reshape(-1, *[1] * (wq.dim() - 1)), q, q)
            )
        hook = next((h for h in ptq_module._forward_pre_hooks.values() if isinstance(h, ActQuant)), None)
        if hook is not None:
            scale, zero = hook.scale_and_zero()
            step = torch.tensor(scale, dtype=wq.dtype, device=wq.device)
            module.act_quantizer = LsqQuantizer(step, zero, 2**hook.bits - 1 - zero)
            module.register_forward_pre_hook(_quantize_input)
    return qmodel.train()


@dataclass(frozen=True)
class QatSettings:
    """How QAT trains: `epochs` over the training images in batches of `batch_size` (shuffled
    with `seed` + epoch), `optimizer` "sgd" or "adam" at learning rate `lr` (None: DEFAULT_LR of
    the optimizer) following a cosine to 0, and `distill`: the loss is the KL divergence to the
    full-precision model's outputs instead of the cross-entropy with the labels."""

    epochs: int = 1
    lr: float | None = None
    batch_size: int = 128
    optimizer: str = "sgd"
    distill: bool = False
    seed: int = 0

    CONSTRAINTS = {
        "optimizer": OneOf(tuple(DEFAULT_LR)),
        "epochs": Interval(1, None, integer=True),
        "lr": [Interval(0, math.inf, closed="neither"), OneOf((None,))],
        "batch_size": Interval(1, None, integer=True),
    }

    def __post_init__(self):
        check_parameters(self)
        if self.lr is None:
            object.__setattr__(self, "lr", DEFAULT_LR[self.optimizer])


def epoch_batches(
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    epochs: int,
    epoch: int,
    seed: int,
    base_lr: float,
    device: torch.device | str,
    log=None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The (images, labels) batches of epoch `epoch` of `epochs` on `device`, each after setting
    `optimizer`'s rate: whole batches only (BatchNorm needs more than one sample), shuffled by the
    global generator seeded with `seed` + `epoch` (so a resumed epoch draws what the first run drew,
    dropout included), the rate on a cosine from `base_lr` to 0 over all epochs. With `log`, a line
    of progress every pace.PROGRESS_SECONDS within the epoch (an epoch over a large set takes long)."""
    n = len(images)
    batch = min(batch_size, n)
    per_epoch = n // batch
    total = epochs * per_epoch
    torch.manual_seed(seed + epoch)
    order = torch.randperm(n)
    for i in paced(range(per_epoch), per_epoch, f"epoch {epoch + 1}/{epochs}: batch", log):
        for group in optimizer.param_groups:
            group["lr"] = base_lr * 0.5 * (1 + math.cos(math.pi * (epoch * per_epoch + i) / total))
        idx = order[i * batch : (i + 1) * batch]
        yield images[idx].to(device), labels[idx].to(device)


def _optimizer(qmodel: nn.Module, settings: QatSettings) -> torch.optim.Optimizer:
    if settings.optimizer == "adam":
        return torch.optim.Adam(qmodel.parameters(), lr=settings.lr)
    return torch.optim.SGD(qmodel.parameters(), lr=settings.lr, momentum=0.9)


def _identity(qmodel: nn.Module, model: nn.Module, settings: QatSettings) -> dict:
    """What a checkpoint must share with the run that resumes it."""
    quantizers = {k: v for k, v in qmodel.state_dict().items() if k.endswith("_extra_state")}
    return {
        "model": weights_hash(model),
        "quantizers": {k: dict(v) for k, v in quantizers.items()},
        "settings": asdict(settings),
    }


def load_qat_state(qmodel: nn.Module, path: str | Path) -> int:
    """Load the weights, steps and BatchNorm statistics of the QAT checkpoint `path` into
    `qmodel` (made by `lsq_model` for the same model and bits); returns its finished epochs."""
    ckpt = read_checkpoint(path, qmodel)
    qmodel.load_state_dict(ckpt["state"])
    return ckpt["epoch"]


def train_qat(
    qmodel: nn.Module,
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    evaluation: tuple[torch.Tensor, torch.Tensor],
    settings: QatSettings = QatSettings(),
    checkpoint: str | Path | None = None,
    resume: bool = False,
    log: Callable[[str], None] = print,
) -> list[EpochRecord]:
    """Train `qmodel` (from `lsq_model`, on the device of `evaluation`) in place on `train`
    = (images (N, ...), labels (N,)); `model` is the full-precision model (the teacher when
    distilling). After every epoch: test accuracy on `evaluation`, a checkpoint written atomically
    to `checkpoint` (if given), and one line to `log`. `resume` continues from the checkpoint's
    last finished epoch, which must come from the same model, bits and settings. Returns one
    record per epoch, those of the resumed run included."""
    device = evaluation[0].device
    images, labels = train
    opt = _optimizer(qmodel, settings)
    identity = _identity(qmodel, model, settings)
    path = Path(checkpoint) if checkpoint is not None else None
    history: list[EpochRecord] = []
    # Every input checked before the first step: a bad one is found in seconds, not after an epoch.
    if resume and path is None:
        raise ParameterError("train_qat", "checkpoint", "given, the file to resume from", None)
    if resume:
        ckpt = read_checkpoint(path, qmodel, opt, identity)
        qmodel.load_state_dict(ckpt["state"])
        opt.load_state_dict(ckpt["optimizer"])
        history = [EpochRecord(**r) for r in ckpt["history"]]
    if path is not None:
        check_writable(path)
    teacher = model.eval() if settings.distill else None
    for epoch in range(len(history), settings.epochs):
        start = time.perf_counter()
        qmodel.train()
        loss_sum, steps = 0.0, 0
        for x, y in epoch_batches(
            images, labels, opt, settings.batch_size, settings.epochs, epoch, settings.seed, settings.lr, device, log
        ):
            out = qmodel(x)
            if teacher is not None:
                with torch.no_grad():
                    target = F.log_softmax(teacher(x), 1)
                loss = F.kl_div(F.log_softmax(out, 1), target, log_target=True, reduction="batchmean")
            else:
                loss = F.cross_entropy(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum, steps = loss_sum + loss.item(), steps + 1
        train_s = time.perf_counter() - start
        history.append(EpochRecord(epoch + 1, loss_sum / steps, accuracy(qmodel, *evaluation), train_s))
        if path is not None:
            save_checkpoint(path, identity, qmodel, opt, history)
        r = history[-1]
        log(
            f"epoch {r.epoch}/{settings.epochs}: loss {r.loss:.4f}, test accuracy {r.accuracy:.2f} % "
            f"({r.train_s:.1f} s training)"
        )
    return history
