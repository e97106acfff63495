"""The QAT checkpoint: what `train_qat` writes after every epoch, and the one schema check that
every reader goes through before using a byte of it, so that a damaged or doctored file is refused
in one line naming what is wrong, before any training, rather than in a traceback mid-run or,
worse, by training on (NaN weights).

A checkpoint is a dict, read with torch.load(weights_only=True) (no code runs on load):
- format: CHECKPOINT_FORMAT;
- identity: {model: weights hash, quantizers: {name: {qn, qp}}, settings: QatSettings as a dict},
  what a resumed run must share with the run that wrote it;
- epoch: finished epochs; history: one EpochRecord (as a dict) per finished epoch;
- state: the QAT model's state_dict; optimizer: its optimizer's state_dict.
"""

from __future__ import annotations

import io
import math
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn

from ..errors import EvoproxyError, ParameterError
from ..files import write_atomically

CHECKPOINT_FORMAT = "evoproxy-qat/1"
KEYS = ("format", "identity", "epoch", "state", "optimizer", "history")
IDENTITY = {"model": str, "quantizers": dict, "settings": dict}


@dataclass(frozen=True)
class EpochRecord:
    """One finished epoch: mean training loss over its batches, test accuracy (%) after it, and
    the seconds its training took (evaluation excluded)."""

    epoch: int
    loss: float
    accuracy: float
    train_s: float


def check_writable(path: Path) -> None:
    """Refuse a checkpoint `path` that cannot be written, before any training: a folder or a
    symbolic link in its place, a missing folder, or one where no file can be created (tried, as
    permissions alone do not tell: a read-only mount, say; the trial file has no name and leaves
    nothing behind)."""
    try:
        if path.is_symlink() or path.is_dir():
            raise OSError(
                "a symbolic link, never written through, is in its place"
                if path.is_symlink()
                else "a folder is in its place"
            )
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise ParameterError(
            "train_qat", "checkpoint", f"a file in an existing, writable folder ({why})", str(path)
        ) from None


def save_checkpoint(
    path: Path, identity: dict, qmodel: nn.Module, optimizer: torch.optim.Optimizer, history: list[EpochRecord]
) -> None:
    """Write the checkpoint after `len(history)` finished epochs in one step: a kill leaves the old
    checkpoint or the new."""
    buffer = io.BytesIO()
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "identity": identity,
            "epoch": len(history),
            "state": qmodel.state_dict(),
            "optimizer": optimizer.state_dict(),
            "history": [asdict(r) for r in history],
        },
        buffer,
    )
    write_atomically(path, buffer.getvalue())


def _load(path: Path) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise EvoproxyError(f"checkpoint {path} does not exist") from None
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        raise EvoproxyError(f"cannot read {path} as a QAT checkpoint ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise EvoproxyError(f"{path} is not a QAT checkpoint of this version ({CHECKPOINT_FORMAT})")
    return ckpt


def _check_identity(ckpt: dict, identity: dict, path: Path) -> None:
    for key, what in (
        ("model", "another model or weights"),
        ("quantizers", "another bit configuration or data"),
        ("settings", "other QAT settings"),
    ):
        if ckpt["identity"][key] != identity[key]:
            detail = "".join(
                f", {k} {v} (now {identity[key][k]})"
                for k, v in ckpt["identity"][key].items()
                if key == "settings" and k in identity[key] and identity[key][k] != v
            )
            raise EvoproxyError(
                f"{path} was made with {what}{detail}: resume with the same settings, or start over without resuming"
            )


def _levels(state: dict) -> dict[str, int]:
    """The number of levels of each quantizer of a QAT state: what its bits fix (an activation's
    zero point comes from the data)."""
    return {k: v["qn"] + v["qp"] for k, v in state.items() if k.endswith("_extra_state")}


def _state_problem(state: object, wanted: dict) -> str | None:
    """What is wrong with a checkpoint's model state against the model's own `wanted`, or None."""
    if not isinstance(state, dict) or state.keys() != wanted.keys():
        return "holds another QAT model: use the model and bits file it was made with"
    for key, want in wanted.items():
        got = state[key]
        if key.endswith("_extra_state"):
            if not isinstance(got, dict) or any(type(got.get(k)) is not int for k in ("qn", "qp")):
                return f"has a damaged quantizer {key} (want integer qn and qp)"
        elif not isinstance(got, torch.Tensor) or got.shape != want.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            return f"has {key} of shape {shape} where the model's is {tuple(want.shape)}"
        elif got.is_floating_point() and not torch.isfinite(got).all():
            return f"has non-finite values (NaN or infinity) in {key}: the run that wrote it diverged"
    return None


def _optimizer_problem(saved: object, optimizer: torch.optim.Optimizer, epoch: int) -> str | None:
    """What is wrong with a checkpoint's optimizer state against `optimizer` (built for the model),
    or None: each parameter's buffers (momentum, Adam's moments) must have the parameter's shape."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    groups = optimizer.state_dict()["param_groups"]
    if (
        not isinstance(saved, dict)
        or not isinstance(saved.get("state"), dict)
        or not isinstance(saved.get("param_groups"), list)
        or [g.get("params") if isinstance(g, dict) else None for g in saved["param_groups"]]
        != [g["params"] for g in groups]
    ):
        return "has an optimizer state of another model or optimizer"
    if epoch > 0 and not saved["state"]:
        return f"has an empty optimizer state after {epoch} finished epoch(s)"
    for index, buffers in saved["state"].items():
        if not (isinstance(index, int) and 0 <= index < len(params)) or not isinstance(buffers, dict):
            return f"has an optimizer state for parameter {index!r}, which the model lacks"
        for name, value in buffers.items():
            if not isinstance(value, torch.Tensor) or (value.dim() > 0 and value.shape != params[index].shape):
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                return f"has an optimizer {name} of shape {shape} for a parameter of shape {tuple(params[index].shape)}"
            if value.is_floating_point() and not torch.isfinite(value).all():
                return f"has non-finite values (NaN or infinity) in the optimizer's {name}"
    return None


def _history_problem(history: object, epoch: int) -> str | None:
    """What is wrong with a checkpoint's history rows (one EpochRecord dict per finished epoch), or None."""
    names = [f.name for f in fields(EpochRecord)]
    if not isinstance(history, list) or len(history) != epoch:
        return f"has {len(history) if isinstance(history, list) else 'no'} history rows for {epoch} finished epoch(s)"
    for i, row in enumerate(history):
        if not isinstance(row, dict) or sorted(row) != sorted(names):
            return f"has history row {i + 1} with fields other than {', '.join(names)}"
        if row["epoch"] != i + 1 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in row.values()
        ):
            return f"has history row {i + 1} that is not epoch {i + 1} with finite numbers"
    return None


def read_checkpoint(
    path: str | Path,
    qmodel: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    identity: dict | None = None,
) -> dict:
    """The checkpoint `path`, checked whole against the QAT model `qmodel` (and, for a resume, its
    `optimizer` and run `identity`): its keys, identity tag, epoch and history rows, every state
    tensor's shape and finiteness, the quantizers' bits, the optimizer buffers' shapes. Raises
    EvoproxyError, one line naming the file and what is wrong."""
    path = Path(path)
    ckpt = _load(path)
    problem = _structure_problem(ckpt)
    if problem is None and identity is not None:
        _check_identity(ckpt, identity, path)
    wanted = qmodel.state_dict()
    if problem is None and _levels_differ(ckpt["state"], wanted):
        # Same quantizers, other bits: the state would load and silently bring the checkpoint's bits.
        raise EvoproxyError(f"{path} was trained with other bits: use the bits file it was made with")
    problem = (
        problem
        or _state_problem(ckpt["state"], wanted)
        or (_optimizer_problem(ckpt["optimizer"], optimizer, ckpt["epoch"]) if optimizer is not None else None)
        or _history_problem(ckpt["history"], ckpt["epoch"])
    )
    if problem:
        raise EvoproxyError(f"QAT checkpoint {path} {problem}")
    return ckpt


def _structure_problem(ckpt: dict) -> str | None:
    """What is wrong with a checkpoint's keys, identity tag or epoch, or None."""
    missing = [k for k in KEYS if k not in ckpt]
    if missing:
        return f"lacks {', '.join(missing)}"
    tag = ckpt["identity"]
    if not isinstance(tag, dict) or any(not isinstance(tag.get(k), t) for k, t in IDENTITY.items()):
        return f"has a damaged identity tag (want {', '.join(IDENTITY)})"
    if type(ckpt["epoch"]) is not int or ckpt["epoch"] < 0:
        return f"has epoch {ckpt['epoch']!r}, not a count of finished epochs"
    return None


def _levels_differ(state: object, wanted: dict) -> bool:
    """Whether a state of the model's quantizers holds other bits (levels) than the model's."""
    if not isinstance(state, dict) or state.keys() != wanted.keys():
        return False
    saved = _levels({k: v for k, v in state.items() if isinstance(v, dict) and {"qn", "qp"} <= v.keys()})
    return saved.keys() == _levels(wanted).keys() and saved != _levels(wanted)
