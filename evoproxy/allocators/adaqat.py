"""AdaQAT (Gernigon, Filip, Sentieys, Coggiola & Bruno): bit-widths learned during quantization-aware training.

The weight and activation bit-widths are real numbers N_w, N_a (one pair for the network, as in the
paper; with `per_layer`, one N_w per free layer and still one N_a), and every forward pass quantizes
at ⌈N⌉ (`fractional_bits`: the grid, N's range and its freeze rule, the network). The loss is

    task cross-entropy + λ · BitOPs(⌈N_w⌉, ⌈N_a⌉) / BitOPs at the most bits,

the BitOPs (Σ_l MACs_l · w_l · a) taken relative to the all-max configuration so that one λ means
the same on any model (the paper's L_Hard = ⌈N_w⌉⌈N_a⌉ is this up to a constant for one pair). On
every batch, before the weights' SGD step, the total loss is also measured (no gradient, BatchNorm
statistics untouched) with each unfrozen N's bit-width one grid point lower (one higher at the
bottom), and N moves by the finite difference, the paper's eq. 3-4:

    N ← N − η · (L_total(here) − L_total(other)) / (here − other),

the task loss's difference ⌈N⌉ − ⌊N⌋ of the paper divided by the grid step (1 on whole bits), and the
hardware term's exact slope. When the loss rises as bits fall, the slope is negative and N grows; λ
pushes it down; where they balance, ⌈N⌉ oscillates until the freeze rule fixes it, and the rest of
the epochs are ordinary QAT of the weights and steps at the frozen bits. An N that never oscillates
ends at its last ⌈N⌉.

Budget: λ trades loss for BitOPs but guarantees no size (or BOPs) budget. Like EdMIPS, the found bits
are projected onto the budget when over it, by the allocation stage's ILP: the configuration within
the budget nearest to them (least Σ_l (w_l − found w_l)², activations at the found bit-width, or at
the highest lower one that makes a BOPs budget feasible). The record says whether it was projected and
keeps the bits found before. Activations take one bit-width for every layer, fixed layers included
(the bits file holds one activation bit-width); fixed layers keep their weight bits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..allocation import Allocation, AllocationProblem, allocate, build_problem
from ..params import Interval, OneOf
from ..quant import epoch_batches, model_bops
from .fractional_bits import FractionalBits, adaqat_network
from .interface import NON_NEGATIVE, POSITIVE, Allocator, SearchData, SearchResult, TrainingSettings, setting


@dataclass(frozen=True, kw_only=True)
class AdaqatSettings(TrainingSettings):
    """How AdaQAT searches: the training of `TrainingSettings` (weights and steps); N_w and N_a
    start at `init_w_bits` / `init_a_bits` (None: the most bits of their choices) and move by
    `w_lr` / `a_lr` (η) times the finite-difference slope of the task loss + `lam` (λ) × BitOPs
    relative to the most bits; each freezes after `oscillations` reversals of ⌈N⌉. `per_layer`: one
    N_w per free layer instead of one for the network. The paper's η (0.001, 0.0005) are for 150-300
    epochs; these defaults move N by up to about a tenth of a bit a step, so that a search of a few
    hundred steps settles."""

    lam: float = setting(1.0, "weight λ of the BitOPs relative to the most bits")
    w_lr: float = setting(0.5, "learning rate η_w of N_w")
    a_lr: float = setting(0.5, "learning rate η_a of N_a")
    init_w_bits: float | None = setting(None, "initial N_w (default: the most weight bit choice)")
    init_a_bits: float | None = setting(None, "initial N_a (default: the most activation bit choice)")
    oscillations: int = setting(10, "reversals of ⌈N⌉ after which it is frozen")
    per_layer: bool = setting(False, "one N_w per free layer instead of one for the network (N_a stays one)")

    CONSTRAINTS = {
        **TrainingSettings.CONSTRAINTS,
        "lam": NON_NEGATIVE,
        "w_lr": POSITIVE,
        "a_lr": POSITIVE,
        "init_w_bits": [OneOf((None,)), Interval()],  # its range is its choices': FractionalBits checks it
        "init_a_bits": [OneOf((None,)), Interval()],
        "oscillations": Interval(1, None, integer=True),
        "per_layer": OneOf((False, True)),
    }

    def scope(self, problem: AllocationProblem) -> str:
        return (
            f"weight bits {','.join(map(str, problem.w_choices))} for {len(problem.free)} layers "
            f"({'one each' if self.per_layer else 'one for all'}), activation bits "
            f"{','.join(map(str, problem.a_choices))} (one for all layers)"
        )

    def knobs(self, data: SearchData) -> str:
        return f"λ {self.lam:g}, η_w {self.w_lr:g}, η_a {self.a_lr:g}"


@contextmanager
def _buffers_kept(net: nn.Module) -> Iterator[None]:
    """Restore `net`'s buffers (BatchNorm statistics) on exit: the finite differences' extra forward
    passes run in train mode, as the step's does, but must not move the statistics."""
    saved = [b.clone() for b in net.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, s in zip(net.buffers(), saved):
                b.copy_(s)


@dataclass(frozen=True)
class AdaqatEpoch:
    """One finished epoch: N_w (one per free layer with `per_layer`, else one) and N_a after it,
    the mean task loss of its steps, the BitOPs per sample of ⌈N⌉ after it, whether each of N_w and
    N_a is frozen (all of N_w for per-layer), and its seconds."""

    epoch: int
    n_w: tuple[float, ...]
    n_a: float
    task_loss: float
    bitops: float
    w_frozen: bool
    a_frozen: bool
    seconds: float


def _fit_to_budget(
    problem: AllocationProblem, w_bits: Sequence[int], a: int, seconds: float, note: str
) -> tuple[Allocation, Allocation]:
    """(found, within budget): `w_bits` (L,) with every input at `a` bits as an allocation, and the
    same or, over the budget, its projection: the nearest configuration within it (module docstring)."""
    value = -((np.asarray(problem.w_choices)[None, :] - np.asarray(w_bits)[:, None]) ** 2.0)

    def at(a_bits: int) -> AllocationProblem:
        return build_problem(
            problem.layers,
            value,
            problem.size_budget_mb,
            bops=problem.bops_budget,
            w_bits=problem.w_choices,
            a_bits=(a_bits,),
            bias_bits=problem.bias_bits,
            fixed={i: (w, a_bits) for i, (w, _) in problem.fixed.items()},
        )

    found_problem = at(a)
    choice = np.array([problem.w_choices.index(w_bits[i]) for i in problem.free])
    found = found_problem.allocation(choice, "adaqat", True, seconds)
    if found_problem.fits(choice):
        return found, found
    # At the found activation bits, or the most below them at which a BOPs budget can be met at all
    # (none: the fewest, and the solver's one-line error).
    scored = next(
        (
            p
            for p in map(at, sorted((b for b in problem.a_choices if b <= a), reverse=True))
            if p.bops_budget is None or p.min_bops <= p.bops_budget_int
        ),
        at(problem.a_choices[0]),
    )
    projection = allocate(scored, "ilp")
    return found, replace(projection, method="adaqat", note=note)


def search_adaqat(
    model: nn.Module,
    problem: AllocationProblem,
    data: SearchData,
    settings: AdaqatSettings = AdaqatSettings(),
    log: Callable[[str], None] = print,
) -> SearchResult:
    """Search the weight bits (`problem.w_choices`, per network or per free layer) and the one
    activation bit-width (`problem.a_choices`) of `model` with AdaQAT under `problem`'s fixed layers
    and budgets (its values are ignored), on `data.train`, the quantizers initialised on
    `data.calibration`; on the device of `data.calibration`. One line per epoch goes to `log` (N_w,
    N_a, task loss, BitOPs), and progress lines on the long passes. An infeasible budget is refused
    before any training. The result's `found` is ⌈N⌉ at the end; each layer's sensitivity in its
    file is its final N_w (fixed layers: their bits), and `details` hold the fractional bit-widths
    ("n_w" per free layer, "n_a"), the step at which the freeze rule fixed each ("w_frozen_at_step",
    "a_frozen_at_step"; None: never) and the found bits."""
    problem.check_feasible()
    start = time.perf_counter()
    calib_images = data.calibration
    device = calib_images.device
    layers, free = problem.layers, problem.free
    w_choices, a_choices = problem.w_choices, problem.a_choices
    init_w = w_choices[-1] if settings.init_w_bits is None else settings.init_w_bits
    init_a = a_choices[-1] if settings.init_a_bits is None else settings.init_a_bits
    owner = type(settings).__name__
    w_vars = [
        FractionalBits(init_w, w_choices, settings.w_lr, settings.oscillations, owner, "init_w_bits")
        for _ in range(len(free) if settings.per_layer else 1)
    ]
    a_var = FractionalBits(init_a, a_choices, settings.a_lr, settings.oscillations, owner, "init_a_bits")
    fixed_w = {i: w for i, (w, _) in problem.fixed.items()}
    net, w_select, a_select = adaqat_network(model, problem, calib_images, log)

    def full_w(free_w: Sequence[int]) -> list[int]:
        bits = {**fixed_w, **dict(zip(free, free_w))}
        return [bits[i] for i in range(len(layers))]

    def current() -> tuple[list[int], int]:
        return [v.bits for v in w_vars] * (1 if settings.per_layer else len(free)), a_var.bits

    def select(free_w: Sequence[int], a: int) -> None:
        for s, w in zip(w_select, free_w):
            s.bits = w
        for s in a_select:
            s.bits = a

    most_bitops = model_bops(layers, full_w([w_choices[-1]] * len(free)), a_choices[-1])

    def hardware(free_w: Sequence[int], a: int) -> float:
        return model_bops(layers, full_w(free_w), a) / most_bitops

    optimizer = torch.optim.SGD(net.parameters(), lr=settings.lr, momentum=0.9)
    images, labels = data.train
    history: list[AdaqatEpoch] = []
    for epoch in range(settings.epochs):
        epoch_start = time.perf_counter()
        net.train()
        task_sum, steps = 0.0, 0
        for x, y in epoch_batches(
            images,
            labels,
            optimizer,
            settings.batch_size,
            settings.epochs,
            epoch,
            settings.seed,
            settings.lr,
            device,
            log,
        ):
            free_w, a = current()
            # Each unfrozen N against the configuration with its bit-width at the other grid point,
            # measured on the weights that the step below is about to move.
            probes = []
            for var, slots in (
                [(v, [f]) for f, v in enumerate(w_vars)] if settings.per_layer else [(w_vars[0], range(len(free)))]
            ):
                if var.other() is not None:
                    probe_w = list(free_w)
                    for f in slots:
                        probe_w[f] = var.other()
                    probes.append((var, var.bits, var.other(), probe_w, a))
            if a_var.other() is not None:
                probes.append((a_var, a, a_var.other(), free_w, a_var.other()))
            with torch.no_grad(), _buffers_kept(net):
                losses = []
                for *_, probe_w, probe_a in probes:
                    select(probe_w, probe_a)
                    losses.append(F.cross_entropy(net(x), y).item())
            select(free_w, a)
            task = F.cross_entropy(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            task.backward()
            optimizer.step()
            here = task.item() + settings.lam * hardware(free_w, a)
            for (var, bits, other, probe_w, probe_a), loss in zip(probes, losses):
                var.step((here - loss - settings.lam * hardware(probe_w, probe_a)) / (bits - other))
            task_sum += task.item()
            steps += 1
        free_w, a = current()
        history.append(
            AdaqatEpoch(
                epoch + 1,
                tuple(v.value for v in w_vars),
                a_var.value,
                task_sum / steps,
                model_bops(layers, full_w(free_w), a),
                all(v.frozen for v in w_vars),
                a_var.frozen,
                time.perf_counter() - epoch_start,
            )
        )
        r = history[-1]
        n_w = (
            f"mean {np.mean(r.n_w):.3f} (W bits {','.join(map(str, free_w))})"
            if settings.per_layer
            else f"{r.n_w[0]:.3f} (W{free_w[0]})"
        )
        log(
            f"epoch {r.epoch}/{settings.epochs}: N_w {n_w}{' frozen' if r.w_frozen else ''}, N_a {r.n_a:.3f} "
            f"(A{a}){' frozen' if r.a_frozen else ''}, task loss {r.task_loss:.4f}, BitOPs {r.bitops / 1e9:.4g} G "
            f"({r.bitops / most_bitops:.3f} of the most), {r.seconds:.1f} s"
        )
    free_w, a = current()
    found, chosen = _fit_to_budget(
        problem,
        full_w(free_w),
        a,
        time.perf_counter() - start,
        "found bits over the budget: projected to the nearest configuration within it",
    )
    seconds = time.perf_counter() - start
    per_free = [v for v in w_vars for _ in range(1 if settings.per_layer else len(free))]
    n_w = {**{i: float(w) for i, w in fixed_w.items()}, **{i: v.value for i, v in zip(free, per_free)}}
    sensitivities = [n_w[i] for i in range(len(layers))]
    return SearchResult(
        "adaqat",
        problem,
        settings,
        replace(chosen, seconds=seconds),
        found,
        seconds,
        sensitivities,
        history,
        {
            "n_w": [v.value for v in per_free],
            "n_a": a_var.value,
            "w_frozen_at_step": [v.frozen_at for v in per_free],
            "a_frozen_at_step": a_var.frozen_at,
            "found_bits": list(found.w_bits),
            "found_act_bits": found.a_bits[0],
            "found_size_mb": found.size_mb,
            "found_bops": found.bops,
        },
        columns={"N_w": [f"{s:.3f}" for s in sensitivities]},
        found_as=f"found bits (⌈N⌉, A{found.a_bits[0]})",
        projection="nearest configuration",
    )


ALLOCATOR = Allocator(
    "AdaQAT",
    AdaqatSettings,
    search_adaqat,
    "fractional weight and activation bit-widths N (quantizing at ⌈N⌉) learned during QAT by finite "
    "differences of cross-entropy + λ × BitOPs / BitOPs at the most bits, frozen once ⌈N⌉ oscillates; "
    "projected onto the budget (the nearest configuration within it) when over.",
    act_bits=(2, 3, 4, 5, 6, 7, 8),
    act_per_layer=False,
)
