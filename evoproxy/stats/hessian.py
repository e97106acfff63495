"""Hessian information per layer from Hessian-vector products (double backpropagation): the
Hutchinson estimates of the diagonal and the trace of each layer's diagonal block (HAWQ-V2), and
the dominant eigenvalue of each block (HAWQ) by the Lanczos method."""

from __future__ import annotations

import time

import torch
from torch import nn

from ..pace import paced


class _Hardsigmoid(nn.Module):
    """nn.Hardsigmoid as relu6(x + 3) / 6: the same values, with the second derivative (zero almost
    everywhere) that torch's own kernel lacks (MobileNetV3's squeeze-and-excitation gates use it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.relu6(x + 3) / 6


def twice_differentiable(model: nn.Module) -> nn.Module:
    """`model` with each module whose backward torch cannot differentiate again replaced, in place,
    by one that computes the same values and can be."""
    for name, module in list(model.named_modules()):
        if type(module) is nn.Hardsigmoid:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, _Hardsigmoid())
    return model


def missing_second_derivative(exc: RuntimeError) -> str | None:
    """The op named by torch's error for a backward it cannot differentiate again, else None."""
    text = str(exc)
    if "derivative for" in text and "is not implemented" in text:
        return text.split("derivative for", 1)[1].split("is not implemented", 1)[0].strip()
    return None


def hutchinson(
    grads: list[torch.Tensor],
    params: list[torch.Tensor],
    max_samples: int,
    tol: float,
    generator: torch.Generator,
    min_samples: int = 8,
    log=lambda msg: None,
    deadline: float | None = None,
) -> tuple[list[torch.Tensor], list[float], int]:
    """Estimate diag(H_ll) and tr(H_ll) for every layer l from E[v ⊙ Hv] with Rademacher v.

    `grads` are the loss gradients w.r.t. `params`, built with create_graph=True. One product
    Hv with v drawn over all layers at once serves every layer: the cross-layer terms vanish in
    expectation. Sampling stops after `max_samples`, or once `min_samples` are drawn and the
    summed trace estimate moves by less than `tol` (relative) from one sample to the next.
    Returns the per-layer diagonals (shaped like the params), traces, and samples used. After the
    first sample, `log` gets the time it took and the most the rest can take. With `deadline` (a
    time.perf_counter() value), sampling also stops once it has passed."""
    diag_sum = [torch.zeros_like(p) for p in params]
    previous, start = None, time.perf_counter()
    for n in paced(range(1, max_samples + 1), max_samples, "Hutchinson sample", log):
        # Drawn on the CPU generator and moved, so that every device sees the same probes.
        vs = [(torch.randint(0, 2, p.shape, generator=generator, dtype=p.dtype) * 2 - 1).to(p.device) for p in params]
        hvs = torch.autograd.grad(grads, params, grad_outputs=vs, retain_graph=True)
        for d, v, hv in zip(diag_sum, vs, hvs):
            d.add_(v * hv)
        total = sum(d.sum().item() for d in diag_sum) / n
        if n == 1:
            took = time.perf_counter() - start
            log(
                f"Hessian: {took:.2f} s per Hutchinson sample; at most {max_samples} samples "
                f"(≤ {took * max_samples:.0f} s), then the top eigenvalue per layer"
            )
        if previous is not None and n >= min_samples and abs(total - previous) <= tol * (abs(previous) + 1e-12):
            break
        if deadline is not None and time.perf_counter() >= deadline:
            log(f"Hutchinson stopped by the time budget after {n} of at most {max_samples} samples")
            break
        previous = total
    diags = [d / n for d in diag_sum]
    return diags, [d.sum().item() for d in diags], n


def top_eigenvalue(
    grad: torch.Tensor,
    param: torch.Tensor,
    max_iter: int,
    tol: float,
    generator: torch.Generator,
    deadline: float | None = None,
) -> tuple[float, int]:
    """Dominant eigenvalue (largest in magnitude, with its sign) of the Hessian block of one
    layer, by the Lanczos method on products H_ll v: after each product, the Ritz value of largest
    magnitude of the tridiagonal matrix so far. It reaches an extreme eigenvalue in far fewer products
    than power iteration (HAWQ's), whose error shrinks only by the ratio of the two largest magnitudes
    per product. Stops after `max_iter` products, when that value changes by less than `tol`
    (relative), or once time.perf_counter() has passed `deadline`. Returns it and the products used.
    Without reorthogonalisation (three vectors in memory, whatever the layer's size): lost orthogonality
    repeats a converged Ritz value but leaves the extreme ones within the spectrum."""
    v = torch.randn(param.shape, generator=generator, dtype=param.dtype).to(param.device)
    v /= v.norm()
    previous, beta = torch.zeros_like(v), 0.0
    alphas: list[float] = []
    betas: list[float] = []
    eig = None
    for n in range(1, max_iter + 1):
        (hv,) = torch.autograd.grad(grad, param, grad_outputs=v, retain_graph=True)
        alpha = torch.dot(hv.flatten(), v.flatten()).item()
        alphas.append(alpha)
        tridiagonal = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if betas:
            off = torch.tensor(betas, dtype=torch.float64)
            tridiagonal += torch.diag(off, 1) + torch.diag(off, -1)
        ritz = torch.linalg.eigvalsh(tridiagonal)
        new = ritz[ritz.abs().argmax()].item()
        hv -= alpha * v + beta * previous
        beta = hv.norm().item()
        if beta <= 1e-12 * (abs(new) + 1e-30):  # an invariant subspace: the Ritz values are exact
            return new, n
        if eig is not None and abs(new - eig) <= tol * (abs(eig) + 1e-12):
            return new, n
        if deadline is not None and time.perf_counter() >= deadline:
            return new, n
        betas.append(beta)
        previous, v = v, hv / beta
        eig = new
    return eig, max_iter
