"""What every allocator shares: the settings of the training its search does, the images it
searches on (split off the training images as the command line splits them), the result it
gives, and its entry in the registry (`ALLOCATORS`, evoproxy.allocators.registry)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..allocation import Allocation, AllocationProblem, allocation_record
from ..errors import ParameterError
from ..params import Interval, check_parameters

Pair = tuple[torch.Tensor, torch.Tensor]  # (images (N, ...), labels (N,))
POSITIVE = Interval(0, math.inf, closed="neither")
NON_NEGATIVE = Interval(0, math.inf, closed="left")


def setting(default: Any, help: str) -> Any:
    """A field of a settings class: its `default` and its `help`, the phrase that the command line
    shows beside the parameter's flag (it adds the default)."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True, kw_only=True)
class TrainingSettings:
    """The training that every allocator's search does: `epochs` over its training images in
    batches of `batch_size`, shuffled with `seed` + epoch, the weights by SGD (momentum 0.9) at
    `lr` on a cosine to 0. A method's settings class derives from it and adds its own knobs, each
    a `setting` with its constraint in `CONSTRAINTS` (evoproxy.params)."""

    epochs: int = setting(1, "epochs over the training images")
    lr: float = setting(0.01, "SGD learning rate of the weights, cosine to 0")
    batch_size: int = setting(128, "training batch size")
    seed: int = setting(0, "seed of the shuffles")

    CONSTRAINTS = {
        "epochs": Interval(1, None, integer=True),
        "lr": POSITIVE,
        "batch_size": Interval(1, None, integer=True),
        "seed": Interval(0, None, integer=True),
    }

    def __post_init__(self) -> None:
        check_parameters(self)

    def scope(self, problem: AllocationProblem) -> str:
        """What a search with these settings chooses under `problem`, in words."""
        acts = problem.a_choices
        return f"weight bits {','.join(map(str, problem.w_choices))} for {len(problem.free)} layers, activations " + (
            f"{acts[0]}-bit" if len(acts) == 1 else f"{','.join(map(str, acts))} per layer"
        )

    def knobs(self, data: SearchData) -> str:
        """The settings worth naming beside the scope, in words ("" for none)."""
        return ""


@dataclass(frozen=True)
class SearchData:
    """The images a search reads: `train` = (images (N, ...), labels (N,)) it trains on,
    `validation` = (images, labels) held out from them (empty where the method reads none), and
    `calibration` (M, ...) that initialises the quantizers; the search runs on `calibration`'s device."""

    train: Pair
    validation: Pair
    calibration: torch.Tensor


@dataclass(frozen=True, eq=False)
class SearchResult:
    """What every allocator's search gives: `allocation`, the bits within the budgets; `found`,
    the configuration that the search found before any projection onto the budgets (the same when
    it fits); `seconds`, the whole search, projection included; `history`, one record per epoch.

    The bit file (`record`) gives each layer its `sensitivities` entry (registry order; EdMIPS:
    the expected bit-width, AdaQAT: N_w) and its `layer_details` entries (by registry index), and
    under the key `method` the settings, then `details` (JSON-ready), whether it was projected and
    the seconds. A table of it shows `columns` (header → one text per layer) after each layer's
    bits, and a summary calls `found` `found_as`, the projection `projection`, and adds `spent`
    (what the search spent besides time, e.g. SMPQ's value evaluations)."""

    method: str
    problem: AllocationProblem
    settings: TrainingSettings
    allocation: Allocation
    found: Allocation
    seconds: float
    sensitivities: Sequence[float]
    history: Sequence = ()
    details: Mapping[str, Any] = field(default_factory=dict)
    layer_details: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)
    columns: Mapping[str, Sequence[str]] = field(default_factory=dict)
    found_as: str = "found bits"
    projection: str = "nearest configuration"
    spent: str = ""

    @property
    def projected(self) -> bool:
        """Whether `found` was over a budget, so that `allocation` is its projection."""
        return (self.allocation.w_bits, self.allocation.a_bits) != (self.found.w_bits, self.found.a_bits)

    def record(self, model: str) -> dict:
        """The bit configuration file of `model` (`allocation_record`'s format, with the method as
        its proxy, so that `evoproxy quantize` reads it)."""
        rec = allocation_record(
            self.allocation, self.problem.layers, self.sensitivities, model=model, proxy=self.method
        )
        for index, entries in self.layer_details.items():
            rec["layers"][index].update(entries)
        rec[self.method] = {
            **asdict(self.settings),
            **self.details,
            "projected": self.projected,
            "search_seconds": self.seconds,
        }
        return rec


def search_split(
    train: Pair,
    train_images: int | None = None,
    train_fraction: float | None = None,
    val_images: int = 0,
    seed: int = 0,
) -> tuple[Pair, Pair]:
    """(search, validation) parts of `train`, disjoint and drawn with `seed`: `val_images` images
    for validation, then `train_images` images, or `train_fraction` of `train`, or all the rest,
    to search on. With neither a count nor a fraction nor validation images, `train` as it is."""
    total = len(train[0])

    def refuse(param: str, requirement: str, value: object) -> ParameterError:
        return ParameterError("search_split", param, requirement, value)

    if train_images is not None and train_fraction is not None:
        raise refuse("train_fraction", "None when train_images is given", train_fraction)
    if not 0 <= val_images < total:
        raise refuse("val_images", f"from 0 to below {total} (the training images of the data)", val_images)
    n = train_images
    if train_fraction is not None:
        if not 0 < train_fraction <= 1:
            raise refuse("train_fraction", "above 0 and at most 1", train_fraction)
        n = max(1, round(train_fraction * total))
    if n is None and val_images == 0:
        return train, (train[0][:0], train[1][:0])
    left = total - val_images
    n = left if n is None else n
    if not 1 <= n <= left:
        if train_fraction is not None:
            raise refuse(
                "train_fraction",
                f"at most {left / total:g} (it gives {n} images, more than the {left} beside the validation ones)",
                train_fraction,
            )
        less = ", less the validation images" if val_images else ""
        raise refuse("train_images", f"between 1 and {left} (the training images of the data{less})", n)
    pick = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    search, held = pick[val_images : val_images + n], pick[:val_images]
    return (train[0][search], train[1][search]), (train[0][held], train[1][held])


Search = Callable[[nn.Module, AllocationProblem, SearchData, Any, Callable[[str], None]], SearchResult]


@dataclass(frozen=True)
class Allocator:
    """An entry of `ALLOCATORS`: the method's `title`, its `settings` class (a `TrainingSettings`
    with all its knobs), its `search(model, problem, data, settings, log)` (`log` takes one line per
    epoch, and a progress line now and then on a long pass: pace.paced), and `summary`, a sentence
    on how it works. Its policy: it searches on `train_fraction` of the training images unless told
    otherwise (None: all of them), reads `validation_images` held-out images by default (0: none),
    chooses activation bits among `act_bits` by default, and one per layer (`act_per_layer`) or one
    for the network."""

    title: str
    settings: type[TrainingSettings]
    search: Search
    summary: str
    train_fraction: float | None = None
    validation_images: int = 0
    act_bits: tuple[int, ...] = (8,)
    act_per_layer: bool = True

    def search_data(
        self,
        train: Pair,
        calibration: torch.Tensor,
        *,
        train_images: int | None = None,
        train_fraction: float | None = None,
        val_images: int | None = None,
        seed: int = 0,
    ) -> SearchData:
        """The data this method searches on, split off `train` by `search_split` as `evoproxy
        allocate` splits it: `train_images`, or `train_fraction` (default the method's), and
        `val_images` held out (default the method's)."""
        if train_images is None and train_fraction is None:
            train_fraction = self.train_fraction
        val = self.validation_images if val_images is None else val_images
        search, held = search_split(train, train_images, train_fraction, val, seed)
        return SearchData(search, held, calibration)
