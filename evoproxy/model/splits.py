"""The splits of a data source read as (train, test) parts: checked and normalised (checks.py),
shuffled (seeded), cut into train and test when the source is a single set (see sources.py for
the rules)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import EvoproxyError
from .checks import prepared
from .data_settings import DataSettings
from .readers import Pair

TEST_FRACTION = 0.2  # the test part of a source that is a single set

Loader = Callable[[], Pair]  # reads one split


def _shuffled(pair: Pair, seed: int) -> Pair:
    order = torch.randperm(len(pair[0]), generator=torch.Generator().manual_seed(seed))
    return pair[0][order], pair[1][order]


def split_parts(
    spec: str, options: DataSettings, parts: Callable[[], tuple[Pair, Pair | None]]
) -> tuple[Loader, Loader, Loader]:
    """The loaders of the calibration, test and train splits (a DataSource's) of the source
    `spec` whose (train, test) parts `parts` reads (test None for a single set). The parts are
    read once, when a split is first asked for."""
    cache: dict = {}

    def split() -> tuple[Pair, Pair]:
        if not cache:
            train, test = parts()
            train = prepared(*train, options, spec)
            if test is None:
                n = len(train[0])
                if n < 2:
                    raise EvoproxyError(f"{spec} holds {n} image(s); at least 2 are needed (train and test)")
                images, labels = _shuffled(train, options.seed)
                cut = n - max(1, round(TEST_FRACTION * n))
                train, test = (images[:cut], labels[:cut]), (images[cut:], labels[cut:])
            else:
                test = _shuffled(prepared(*test, options, spec), options.seed)
            cache["train"], cache["test"] = _shuffled(train, options.seed + 1), test
        return cache["train"], cache["test"]

    def calib() -> Pair:
        images, labels = split()[0]
        n = min(options.calib_images, len(images))
        return images[:n], labels[:n]

    return calib, lambda: split()[1], lambda: split()[0]
