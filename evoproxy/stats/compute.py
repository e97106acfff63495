"""Per-layer network statistics (the inputs of every proxy), computed once per (model, batch,
settings) and cached on disk:

- W  the layer's weight;
- G  ∂L/∂W of the mean cross-entropy on the calibration batch (model in eval mode);
- A  the layer's output activation on the batch; a conv's subsampled to at most
     `settings.act_max_elems` elements (every s-th row and column, or position of a Conv1d,
     s as small as fits);
- H  Hutchinson estimate of the diagonal of the layer's Hessian block, plus its trace
     (HAWQ-V2) and dominant eigenvalue by power iteration (HAWQ);
- V  the data-free SynFlow gradient ∂R/∂|W| divided by e^synflow_log_scale (see synflow.py);
- Q  the squared weight quantization error (Q_b(W) − W)² of the benches' weight quantizer, for
     every bit-width b of QBITS (the input of bit-aware proxies, such as HAWQ-V2's perturbation);
- metadata from the layer registry (numel, params, MACs, kind, depth index).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

import torch
from torch import nn

from ..errors import EvoproxyError, EvoproxyWarning
from ..files import write_atomically
from ..hashing import tensors_hash
from ..model import LayerInfo, check_device, layer_registry, quantizable_modules, run_with_outputs, weights_hash
from ..quant import weight_quantization_error
from .hessian import hutchinson, top_eigenvalue
from .synflow import synflow_gradients

TENSOR_FIELDS = ("W", "G", "A", "H", "V")
CACHE_ENV = "EVOPROXY_CACHE_DIR"
FORMAT_VERSION = 2
QBITS = (2, 3, 4, 5, 6, 7, 8)  # the weight bit-widths whose quantization error Q is kept


@dataclass(frozen=True)
class StatsSettings:
    """How the statistics are computed; part of the cache key."""

    hutchinson_samples: int = 64  # most Rademacher samples for diag/trace
    hutchinson_tol: float = 1e-3  # relative change of the summed trace that stops sampling early
    power_iters: int = 20  # most power-iteration steps per layer
    power_tol: float = 1e-3  # relative change of the eigenvalue that stops the iteration
    act_max_elems: int = 65536  # cap on stored activation elements per layer
    seed: int = 0
    exclude: tuple[str, ...] = ()  # layer names or patterns kept out of the layer registry
    output: str | None = None  # the model's --output selector: which output the loss is taken on
    hessian: bool = True  # H, its trace and top eigenvalue (most of the cost); off for proxies that read none

    def __post_init__(self):
        object.__setattr__(self, "exclude", tuple(self.exclude))  # a list when read back from a cache file
        for name in ("hutchinson_samples", "power_iters", "act_max_elems"):
            if getattr(self, name) < 1:
                raise EvoproxyError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("hutchinson_tol", "power_tol"):
            if getattr(self, name) < 0:
                raise EvoproxyError(f"{name} must be non-negative, got {getattr(self, name)}")


@dataclass
class LayerStats:
    """Statistics of one quantizable layer; tensors are float32 except V and Q (float64)."""

    info: LayerInfo
    W: torch.Tensor  # weight_shape
    G: torch.Tensor  # weight_shape
    A: torch.Tensor  # (batch, out_channels, h, w) or (batch, out_channels, length) subsampled, or a Linear's output
    H: torch.Tensor  # weight_shape, Hessian diagonal estimate
    V: torch.Tensor  # weight_shape, SynFlow gradient / e^synflow_log_scale
    hessian_trace: float
    hessian_eig: float
    Q: dict[int, torch.Tensor] = field(default_factory=dict)  # bit-width → weight_shape, (Q_b(W) − W)²

    @property
    def numel(self) -> int:
        return self.W.numel()


@dataclass
class ModelStats:
    """Statistics of all quantizable layers of one model on one calibration batch."""

    model: str
    weights_hash: str
    batch_hash: str
    settings: StatsSettings
    layers: list[LayerStats]
    synflow_log_scale: float
    hutchinson_samples_used: int
    timings: dict[str, float] = field(default_factory=dict)  # seconds per statistic

    def to_blob(self) -> dict:
        """Plain dict of tensors, numbers and strings, loadable with torch.load(weights_only=True)."""
        return {
            "format": FORMAT_VERSION,
            "model": self.model,
            "weights_hash": self.weights_hash,
            "batch_hash": self.batch_hash,
            "settings": asdict(self.settings),
            "synflow_log_scale": self.synflow_log_scale,
            "hutchinson_samples_used": self.hutchinson_samples_used,
            "timings": dict(self.timings),
            "layers": [
                {
                    "info": l.info.to_dict(),
                    **{k: getattr(l, k) for k in TENSOR_FIELDS},
                    "hessian_trace": l.hessian_trace,
                    "hessian_eig": l.hessian_eig,
                    "Q": l.Q,
                }
                for l in self.layers
            ],
        }

    @classmethod
    def from_blob(cls, blob: dict) -> "ModelStats":
        layers = []
        for d in blob["layers"]:
            info = dict(d["info"], weight_shape=tuple(d["info"]["weight_shape"]))
            layers.append(
                LayerStats(
                    LayerInfo(**info), *(d[k] for k in TENSOR_FIELDS), d["hessian_trace"], d["hessian_eig"], d["Q"]
                )
            )
        return cls(
            blob["model"],
            blob["weights_hash"],
            blob["batch_hash"],
            StatsSettings(**blob["settings"]),
            layers,
            blob["synflow_log_scale"],
            blob["hutchinson_samples_used"],
            blob["timings"],
        )

    def table(self) -> list[dict]:
        """One row of scalar summaries per layer, for printing or JSON."""
        return [
            {
                "index": l.info.index,
                "name": l.info.name,
                "kind": l.info.kind,
                "shape": list(l.info.weight_shape),
                "params": l.info.params,
                "macs": l.info.macs,
                "hessian_trace": l.hessian_trace,
                "hessian_eig": l.hessian_eig,
                "grad_norm": l.G.norm().item(),
                "weight_norm": l.W.norm().item(),
                "act_std": l.A.std().item(),
                "synflow": (l.V * l.W.abs().double()).sum().item(),
            }
            for l in self.layers
        ]


def batch_hash(images: torch.Tensor, labels: torch.Tensor) -> str:
    return tensors_hash([("images", images), ("labels", labels)])


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """`override`, else $EVOPROXY_CACHE_DIR, else ~/.cache/evoproxy."""
    return Path(override or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "evoproxy")


def _subsample(act: torch.Tensor, max_elems: int, module: nn.Module) -> torch.Tensor:
    """Every s-th position of a conv output's spatial axes (2 of Conv2d's, 1 of Conv1d's), s the
    smallest that fits `max_elems`; a Linear layer's output as it is."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d)) and act.numel() > max_elems:
        spatial = act.dim() - 2
        stride = math.ceil((act.numel() / max_elems) ** (1 / spatial))
        pick = lambda s: act[(slice(None), slice(None), *[slice(None, None, s)] * spatial)]  # noqa: E731
        while pick(stride).numel() > max_elems and stride < max(act.shape[2:]):
            stride += 1
        act = pick(stride)
    return act.contiguous()


def _check_batch(images: torch.Tensor, labels: torch.Tensor) -> None:
    if not (isinstance(images, torch.Tensor) and images.is_floating_point() and images.dim() >= 2):
        raise EvoproxyError("calibration images must be a float tensor shaped (batch, ...)")
    if labels.dim() != 1 or len(labels) != len(images) or labels.is_floating_point():
        raise EvoproxyError(f"calibration labels must be integers shaped ({len(images)},), got {tuple(labels.shape)}")


def compute_stats(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    model_name: str = "model",
    settings: StatsSettings = StatsSettings(),
    log=lambda msg: None,
    device: str = "cpu",
) -> ModelStats:
    """Compute the statistics of every quantizable layer of `model` on one batch, on `device`.

    `images` are (batch, *input_shape) floats, `labels` int64 class indices. The model itself is
    never modified: all work happens on a copy in eval mode. The statistics come back on the CPU.

    The CPU work runs on one intra-op thread: torch's reductions then add in one order whatever
    the machine's core count, so the same model and batch give the same statistics everywhere
    (and a busy 2-core machine is not slowed many times over by two threads waiting on each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _compute_stats(model, images, labels, model_name, settings, log, device)
    finally:
        torch.set_num_threads(threads)


def _compute_stats(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    model_name: str,
    settings: StatsSettings,
    log,
    device: str,
) -> ModelStats:
    _check_batch(images, labels)
    input_shape = tuple(images.shape[1:])
    registry = layer_registry(model, input_shape, settings.exclude)
    device = check_device(device)
    work = copy.deepcopy(model).float().eval().to(device)
    images, labels = images.to(device), labels.to(device)
    names = [info.name for info in registry]
    modules = dict(quantizable_modules(work))
    params = [modules[n].weight for n in names]
    for p in work.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    gen = torch.Generator().manual_seed(settings.seed)
    timings = {}

    start = time.perf_counter()
    acts = {}
    logits = run_with_outputs(
        work,
        images.float(),
        modules,
        lambda n, out: acts.__setitem__(n, _subsample(out.detach(), settings.act_max_elems, modules[n])),
        f"the calibration batch of shape {tuple(images.shape)} does not fit the model",
    )
    if not isinstance(logits, torch.Tensor):
        raise EvoproxyError(
            f"the model returns a {type(logits).__name__}, not a tensor of logits: pass --output "
            "with the index or key of its logits"
        )
    if (
        logits.dim() != 2
        or logits.shape[0] != len(labels)
        or int(labels.max()) >= logits.shape[1]
        or int(labels.min()) < 0
    ):
        raise EvoproxyError(
            f"the model gives outputs of shape {tuple(logits.shape)}, which do not fit labels "
            f"in [{int(labels.min())}, {int(labels.max())}]: a classifier with (batch, classes) logits is needed"
        )
    loss = nn.functional.cross_entropy(logits, labels)
    grads = torch.autograd.grad(loss, params, create_graph=settings.hessian)
    timings["W,G,A"] = time.perf_counter() - start
    log("gradients and activations done")

    if settings.hessian:
        start = time.perf_counter()
        diags, traces, used = hutchinson(
            list(grads), params, settings.hutchinson_samples, settings.hutchinson_tol, gen, log=log
        )
        timings["H diag+trace"] = time.perf_counter() - start
        log(f"Hutchinson diagonal and trace done ({used} samples, {timings['H diag+trace']:.1f} s)")

        start = time.perf_counter()
        eigs = [top_eigenvalue(g, p, settings.power_iters, settings.power_tol, gen)[0] for g, p in zip(grads, params)]
        timings["H top eigenvalue"] = time.perf_counter() - start
        log("top eigenvalues done")
    else:  # left undefined, so that a proxy that reads them is invalid rather than wrong
        diags, used = [torch.full_like(p, math.nan) for p in params], 0
        traces = eigs = [math.nan] * len(params)

    start = time.perf_counter()
    try:
        synflow, log_scale = synflow_gradients(work, input_shape, names)
    except EvoproxyError as exc:  # e.g. attention: the statistics stand without V, and proxies reading V fail
        warnings.warn(
            f"SynFlow statistics (V) are not defined for {model_name}, so proxies that read V are invalid on it: {exc}",
            EvoproxyWarning,
            stacklevel=3,
        )
        synflow, log_scale = [torch.full(p.shape, math.nan, dtype=torch.float64) for p in params], 0.0
    timings["V synflow"] = time.perf_counter() - start

    start = time.perf_counter()
    errors = [quantization_errors(p.detach()) for p in params]
    timings["Q quantization error"] = time.perf_counter() - start

    layers = [
        LayerStats(
            info,
            p.detach().cpu().clone(),
            g.detach().cpu().clone(),
            acts[info.name].cpu(),
            d.detach().cpu(),
            v,
            t,
            e,
            {b: x.cpu() for b, x in q.items()},
        )
        for info, p, g, d, v, t, e, q in zip(registry, params, grads, diags, synflow, traces, eigs, errors)
    ]
    return ModelStats(
        model_name, weights_hash(model), batch_hash(images, labels), settings, layers, log_scale, used, timings
    )


def quantization_errors(weight: torch.Tensor) -> dict[int, torch.Tensor]:
    """(Q_b(W) − W)², float64, for every b of QBITS, with the weight quantizer of the benches."""
    return {b: weight_quantization_error(weight, b) for b in QBITS}


def cache_key(weights: str, batch: str, settings: StatsSettings) -> str:
    described = asdict(settings)
    for name, default in (("exclude", ()), ("output", None), ("hessian", True)):
        if described[name] == default:  # left out when default, so that older cache keys stay what they were
            del described[name]
    payload = json.dumps(
        {"weights": weights, "batch": batch, "settings": described, "format": FORMAT_VERSION}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def stats_cache_path(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: StatsSettings,
    cache: str | os.PathLike | None = None,
) -> Path:
    """The cache file of the statistics of (model weights, batch, settings)."""
    return cache_dir(cache) / f"stats-{cache_key(weights_hash(model), batch_hash(images, labels), settings)}.pt"


def load_stats_file(path: str | os.PathLike | BinaryIO) -> ModelStats:
    """Statistics from a cache file or its open bytes (loading runs no code: plain tensors and numbers)."""
    return ModelStats.from_blob(torch.load(path, weights_only=True))


def _checksum_path(path: Path) -> Path:
    """Where the sha256 of a cache entry is recorded: beside it, as stats-KEY.pt.sha256."""
    return path.with_name(path.name + ".sha256")


def _read_cache_entry(path: Path, log) -> ModelStats | None:
    """A cache entry whose bytes match the sha256 recorded beside it; None (recompute) for an
    entry without a checksum (written by an earlier version), a doctored or damaged one."""
    try:
        data, recorded = path.read_bytes(), _checksum_path(path).read_text(encoding="ascii").strip()
    except FileNotFoundError:
        log(f"recomputing cache entry {path}: it has no checksum beside it")
        return None
    except (OSError, UnicodeDecodeError) as exc:
        log(f"recomputing cache entry {path}: {exc}")
        return None
    if hashlib.sha256(data).hexdigest() != recorded:
        warnings.warn(
            f"the statistics cache entry {path} does not match the checksum recorded beside it "
            "(changed or damaged since it was written); recomputing it",
            EvoproxyWarning,
            stacklevel=3,
        )
        return None
    try:
        return load_stats_file(io.BytesIO(data))
    except Exception:  # a matching but unreadable entry: another format, recomputed, never trusted
        log(f"recomputing unreadable cache entry {path}")
        return None


def load_or_compute_stats(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    model_name: str = "model",
    settings: StatsSettings = StatsSettings(),
    cache: str | os.PathLike | None = None,
    use_cache: bool = True,
    log=lambda msg: None,
    device: str = "cpu",
) -> tuple[ModelStats, bool]:
    """The statistics from the on-disk cache if present and matching the sha256 recorded beside
    it, else computed and stored there with their checksum. Returns them and whether they came
    from the cache. A cache hit gives identical tensors. Statistics without the Hessian are also
    served by a cached entry that has it (the Hessian terms are then simply there)."""
    _check_batch(images, labels)
    path = stats_cache_path(model, images, labels, settings, cache)
    if use_cache:
        for candidate in dict.fromkeys(
            [stats_cache_path(model, images, labels, replace(settings, hessian=True), cache), path]
        ):
            if candidate.is_file() and (stats := _read_cache_entry(candidate, log)) is not None:
                return stats, True
    stats = compute_stats(model, images, labels, model_name, settings, log, device)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(stats.to_blob(), buffer)
        data = buffer.getvalue()
        write_atomically(path, data)  # the entry, then its checksum: a reader in between recomputes
        write_atomically(_checksum_path(path), hashlib.sha256(data).hexdigest().encode("ascii"))
    return stats, False
