"""Per-layer network statistics (the inputs of every proxy), computed once per (model, batch,
settings) and cached on disk (cache.py):

- W  the layer's weight;
- G  ∂L/∂W of the mean cross-entropy on the calibration batch (model in eval mode): of the labels
     for a classifier, of every next token for a language model (token windows (batch, T));
- A  the layer's output activation on the batch; a conv's subsampled to at most
     `settings.act_max_elems` elements (every s-th row and column, or position of a Conv1d,
     s as small as fits), a language model's layer's every s-th token;
- H  Hutchinson estimate of the diagonal of the layer's Hessian block, plus its trace
     (HAWQ-V2) and dominant eigenvalue (HAWQ; by Lanczos, where HAWQ iterates powers);
- V  the data-free SynFlow gradient ∂R/∂|W| divided by e^synflow_log_scale (see synflow.py);
- Q  the squared weight quantization error (Q_b(W) − W)² of the benches' weight quantizer (per
     channel, or per group: `settings.weight_format`), for every bit-width b of QBITS (the input of
     bit-aware proxies, such as HAWQ-V2's perturbation), computed from W when read (quant_errors.py);
- MSE, KL, TAYLOR  the measured output perturbations of quantizing the layer alone to each b of
     QBITS, per calibration sample (perturbation.py: the scores of MCT, AIMET, ZeroQ and ModelOpt);
- metadata from the layer registry (numel, params, MACs, kind, depth index).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
import warnings

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..errors import EvoproxyError, EvoproxyWarning, ParameterError
from ..hashing import tensors_hash
from ..pace import paced
from ..model import (
    LayerInfo,
    check_device,
    layer_registry,
    next_token_loss,
    normalized_outputs,
    quantizable_modules,
    run_with_outputs,
    weights_hash,
)
from .hessian import hutchinson, missing_second_derivative, top_eigenvalue, twice_differentiable
from .model_stats import LayerStats, ModelStats, StatsSettings
from .perturbation import PERTURBATIONS, output_perturbations
from .quant_errors import QBITS, QuantizationErrors
from .synflow import synflow_gradients


def batch_hash(images: torch.Tensor, labels: torch.Tensor) -> str:
    """The hash of a calibration batch that ModelStats record and the cache is keyed by."""
    return tensors_hash([("images", images), ("labels", labels)])


def _subsample(act: torch.Tensor, max_elems: int, module: nn.Module) -> torch.Tensor:
    """Every s-th position of a conv output's spatial axes (2 of Conv2d's, 1 of Conv1d's), or every
    s-th token of a Linear layer's output over a sequence (batch, T, features), s the smallest that
    fits `max_elems`; a Linear layer's output over samples (batch, features) as it is."""
    if isinstance(module, nn.Linear) and act.dim() == 3 and act.numel() > max_elems:
        return act[:, :: math.ceil(act.numel() / max_elems)].contiguous()
    if isinstance(module, (nn.Conv1d, nn.Conv2d)) and act.numel() > max_elems:
        spatial = act.dim() - 2
        stride = math.ceil((act.numel() / max_elems) ** (1 / spatial))
        pick = lambda s: act[(slice(None), slice(None), *[slice(None, None, s)] * spatial)]  # noqa: E731
        while pick(stride).numel() > max_elems and stride < max(act.shape[2:]):
            stride += 1
        act = pick(stride)
    return act.contiguous()


def check_batch(images: torch.Tensor, labels: torch.Tensor) -> None:
    """EvoproxyError unless `images` are floats (batch, ...) and `labels` integers (batch,), or
    `images` are token ids (batch, T) and `labels` their next tokens (batch, T)."""
    tokens = isinstance(images, torch.Tensor) and images.dim() == 2 and not images.is_floating_point()
    if not (isinstance(images, torch.Tensor) and (images.is_floating_point() or tokens) and images.dim() >= 2):
        raise EvoproxyError("calibration images must be a float tensor shaped (batch, ...), or token ids (batch, T)")
    shape = tuple(images.shape) if tokens else (len(images),)
    if tuple(labels.shape) != shape or labels.is_floating_point():
        raise EvoproxyError(f"calibration labels must be integers shaped {shape}, got {tuple(labels.shape)}")


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
    check_batch(images, labels)
    input_shape = tuple(images.shape[1:])
    registry = layer_registry(model, input_shape, settings.exclude, images.dtype)
    device = check_device(device)
    work = copy.deepcopy(model).float().eval().to(device)
    if settings.hessian:
        twice_differentiable(work)
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
    inputs = images if labels.dim() == 2 else images.float()
    normalized = normalized_outputs(work, inputs[:1], {n: modules[n] for n in names})
    # scaled_dot_product_attention's fused CPU kernels (nn.MultiheadAttention's, SplitAttention's) have no second
    # derivative; its plain math form, the same attention, does.
    with sdpa_kernel([SDPBackend.MATH]) if settings.hessian else contextlib.nullcontext():
        logits = run_with_outputs(
            work,
            inputs,
            modules,
            lambda n, out: acts.__setitem__(n, _subsample(out.detach(), settings.act_max_elems, modules[n])),
            f"the calibration batch of shape {tuple(images.shape)} does not fit the model",
        )
    if not isinstance(logits, torch.Tensor):
        raise ParameterError(
            "load_model",
            "output",
            f"the index or key of its logits (the model returns a {type(logits).__name__}, not a tensor of logits)",
            settings.output,
        )
    if (
        logits.shape[:-1] != labels.shape
        or logits.dim() != labels.dim() + 1
        or int(labels.max()) >= logits.shape[-1]
        or int(labels.min()) < 0
    ):
        kind = (
            "a language model with (batch, T, vocabulary)"
            if labels.dim() == 2
            else "a classifier with (batch, classes)"
        )
        raise EvoproxyError(
            f"the model gives outputs of shape {tuple(logits.shape)}, which do not fit labels "
            f"in [{int(labels.min())}, {int(labels.max())}]: {kind} logits is needed"
        )
    loss = next_token_loss(logits, labels)
    grads = torch.autograd.grad(loss, params, create_graph=settings.hessian)
    timings["W,G,A"] = time.perf_counter() - start
    log("gradients and activations done")

    hessian = None
    if settings.hessian:
        try:
            hessian = _hessian(grads, params, settings, gen, timings, log)
        except RuntimeError as exc:  # an op of the user's own forward that torch cannot differentiate twice
            if (op := missing_second_derivative(exc)) is None:
                raise
            warnings.warn(
                f"the Hessian statistics (H) are not defined for {model_name}: torch has no second derivative "
                f"of {op}, which its forward uses, so proxies that read H are invalid on it",
                EvoproxyWarning,
                stacklevel=3,
            )
    if hessian is None:  # left undefined, so that a proxy that reads them is invalid rather than wrong
        hessian = [torch.full_like(p, math.nan) for p in params], [math.nan] * len(params), [math.nan] * len(params), 0
    diags, traces, eigs, used = hessian

    start = time.perf_counter()
    try:
        synflow, log_scale = synflow_gradients(model, input_shape, names)  # the model as given: it copies it
    except EvoproxyError as exc:  # e.g. attention: the statistics stand without V, and proxies reading V fail
        warnings.warn(
            f"SynFlow statistics (V) are not defined for {model_name}, so proxies that read V are invalid on it: {exc}",
            EvoproxyWarning,
            stacklevel=3,
        )
        synflow, log_scale = [torch.full(p.shape, math.nan, dtype=torch.float64) for p in params], 0.0
    timings["V synflow"] = time.perf_counter() - start

    settings.weight_format.check_layers(registry)  # Q's and the perturbations' quantizer fits every layer
    measured = [{p: {} for p in PERTURBATIONS} for _ in params]
    if settings.perturbations:
        start = time.perf_counter()
        measured = output_perturbations(
            work, inputs, labels, modules, names, QBITS, settings.weight_format, log, settings.perturb_around
        )
        timings["output perturbations"] = time.perf_counter() - start
        log(f"output perturbations done ({timings['output perturbations']:.1f} s)")

    weights = [p.detach().cpu().clone() for p in params]
    layers = [
        LayerStats(
            info,
            w,
            g.detach().cpu().clone(),
            acts[info.name].cpu(),
            d.detach().cpu(),
            v,
            t,
            e,
            QuantizationErrors(w, settings.weight_format),
            **m,
            **_structure(info, len(registry), info.name in normalized),
        )
        for info, w, g, d, v, t, e, m in zip(registry, weights, grads, diags, synflow, traces, eigs, measured)
    ]
    return ModelStats(
        model_name, weights_hash(model), batch_hash(images, labels), settings, layers, log_scale, used, timings
    )


def _structure(info: LayerInfo, n_layers: int, normalized: bool) -> dict[str, torch.Tensor]:
    """The STRUCTURE_FIELDS of one layer of `n_layers`, `normalized` if a BatchNorm takes its output."""
    values = {
        "NORM": float(normalized),
        "DEPTH": info.index / max(n_layers - 1, 1),
        "FANIN": float(math.prod(info.weight_shape[1:])),
        "GROUPED": float(info.kind in ("depthwise", "grouped")),
        "HEAD": float(info.index == n_layers - 1),
    }
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in values.items()}


def _hessian(grads, params, settings: StatsSettings, gen: torch.Generator, timings: dict, log) -> tuple:
    """Hutchinson's diagonals and traces, the top eigenvalues and the samples used, per layer;
    within `settings.hessian_seconds` if set: half for Hutchinson, the rest shared by the layers
    whose eigenvalue is still to find."""
    start = time.perf_counter()
    budget = settings.hessian_seconds
    diags, traces, used = hutchinson(
        list(grads),
        params,
        settings.hutchinson_samples,
        settings.hutchinson_tol,
        gen,
        log=log,
        deadline=None if budget is None else start + budget / 2,
    )
    timings["H diag+trace"] = time.perf_counter() - start
    log(f"Hutchinson diagonal and trace done ({used} samples, {timings['H diag+trace']:.1f} s)")
    start = time.perf_counter()
    eigs, steps = [], []
    for i, (g, p) in paced(enumerate(zip(grads, params)), len(params), "top eigenvalues: layer", log):
        now = time.perf_counter()
        deadline = (
            None if budget is None else now + (budget - (now - start) - timings["H diag+trace"]) / (len(params) - i)
        )
        eig, n = top_eigenvalue(g, p, settings.power_iters, settings.power_tol, gen, deadline)
        eigs.append(eig)
        steps.append(n)
    timings["H top eigenvalue"] = time.perf_counter() - start
    log(f"top eigenvalues done ({min(steps)} to {max(steps)} Lanczos steps per layer)")
    return diags, traces, eigs, used
