"""Building a benchmark: sample distinct bit configurations (seeded), quantize, measure the metric,
append each result to the file as it comes. A killed build resumes where it stopped."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from itertools import islice
from pathlib import Path

import torch
from joblib import Parallel, delayed, parallel_config
from torch import nn
from tqdm import tqdm

from .. import locking
from ..errors import EvoproxyError, ParameterError
from ..files import open_in_place, refuse_link, remove_leftovers
from ..model import LayerInfo, metric_of, weights_hash
from ..pace import paced
from ..params import Interval, OneOf, Satisfies, check_parameters
from ..quant import PtqEvaluator, QuantSettings, is_bit_width, model_bops, model_size_mb
from .format import (
    BENCH_FORMAT,
    DEFAULT_METRIC,
    Bench,
    Entry,
    append_entries,
    expand,
    read_bench_file,
    sample_configs,
    write_header,
)

MAX_CONFIGS = 1_000_000  # a bound on n_configs: at a second each, that is already eleven days
# What `build_bench` takes, checked before anything is measured or written.
BUILD_CONSTRAINTS = {
    "bit_choices": Satisfies(lambda b: len(b) > 0 and all(is_bit_width(x, 2) for x in b), "bit-widths from 2 to 32"),
    "n_configs": Interval(1, MAX_CONFIGS, integer=True),
    "seed": Interval(0, None, integer=True),
    "jobs": [OneOf((-1,)), Interval(1, 256, integer=True)],  # -1: every core
}
# Header fields that must agree for a build to resume into an existing file.
_IDENTITY = ("model", "weights_hash", "layers", "bit_choices", "fixed", "act_bits", "quantizer", "eval", "seed")


def _measure(
    model: nn.Module,
    layers: Sequence[LayerInfo],
    configs: Sequence[tuple[int, ...]],
    calib: torch.Tensor,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: QuantSettings,
    device: str,
    threads: int | None = None,
) -> list[float]:
    """Accuracy (%) of each configuration, in a worker process."""
    if threads:
        torch.set_num_threads(threads)
    evaluator = PtqEvaluator(model.to(device), layers, calib.to(device), images.to(device), labels.to(device), settings)
    return evaluator.measure_many(configs)


def build_order(
    n_layers: int, bit_choices: Sequence[int], n_configs: int, fixed: dict[int, int], seed: int
) -> list[tuple[int, ...]]:
    """The configurations that a build of `n_configs` measures, in the order it measures them: the
    first `n_configs` that `seed` samples, sorted. Sorted neighbours share their leading layers,
    which the evaluator computes once."""
    sampled = islice(sample_configs(n_layers - len(fixed), sorted(bit_choices), seed), n_configs)
    return sorted(expand(c, n_layers, dict(fixed)) for c in sampled)


def _write(
    out: Path,
    header: dict,
    layers: Sequence[LayerInfo],
    settings: QuantSettings,
    chunks: list[list[tuple[int, ...]]],
    results: Iterable[list[float]],
    entries: list[Entry],
    bar: tqdm,
    log: Callable[[str], None] | None,
) -> None:
    """Append each chunk's entries to the bench file `out` (and to `entries`) as its results come,
    with `bar` updated and `log` getting a line now and then (pace.paced)."""
    metric, fmt = header.get("metric", DEFAULT_METRIC), settings.weight_format
    size = len(chunks[0])
    for configs, values in paced(
        zip(chunks, results), len(chunks), f"{header['name']}: {size}-configuration chunk", log
    ):
        new = [
            Entry(
                bits,
                value,
                model_size_mb(layers, bits, fmt=fmt),
                model_bops(layers, bits, settings.act_bits),
                metric,
            )
            for bits, value in zip(configs, values)
        ]
        append_entries(out, new)
        entries.extend(new)
        bar.update(len(new))


def build_bench(
    out: Path,
    model: nn.Module,
    model_name: str,
    layers: Sequence[LayerInfo],
    calib: torch.Tensor,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    bit_choices: Sequence[int],
    n_configs: int,
    fixed: dict[int, int],
    settings: QuantSettings = QuantSettings(),
    seed: int = 0,
    split_seed: int = 0,
    held_out_fraction: float = 0.2,
    jobs: int = 1,
    backend: str | None = None,
    device: str = "cpu",
    eval_desc: dict | None = None,
    name: str | None = None,
    provenance: dict | None = None,
    chunk: int = 16,
    progress: bool = True,
) -> Bench:
    """Measure the first `n_configs` distinct configurations that `seed` samples of `model` into
    the bench file `out`, in sorted order, `chunk` at a time (a chunk is written when measured).

    `calib` are the normalized calibration images (BatchNorm re-estimation and activation
    ranges), `images`/`labels` the evaluation set. `fixed` maps layer indices to their bits.
    `provenance` holds the header fields that say how to load the model and data again (weights,
    output, exclude, data; see bench_stats). If `out` exists with the same settings, the build
    continues it, measuring only what it lacks; a cut-off last line is dropped.

    `jobs` local worker processes measure the chunks; with `backend` "dask", the workers of the
    Dask cluster that the current distributed Client is connected to do, each on `device`. Either
    way chunks are written in build order as they come in, and Dask measures a chunk again on
    another worker where its worker dies. With `progress`, on stderr: a line now and then while one
    pass over the images lasts (pace.paced; in this process: jobs=1), and on a terminal a bar of the
    configurations beside them, elsewhere a line now and then on the chunks measured."""
    given = {"bit_choices": list(bit_choices), "n_configs": n_configs, "seed": seed, "jobs": jobs}
    check_parameters(given, BUILD_CONSTRAINTS, owner="build_bench")
    # Off a terminal (a log file) the bar's carriage returns would make one endless line.
    bar_shown = progress and sys.stderr.isatty()
    log = None
    if bar_shown:
        log = lambda msg: tqdm.write(msg, file=sys.stderr)  # noqa: E731 — printed plainly, a line breaks the bar
    elif progress:
        log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    settings.weight_format.check_layers(layers)
    free = len(layers) - len(fixed)
    if len(bit_choices) ** free < n_configs:
        raise ParameterError(
            "build_bench",
            "n_configs",
            f"at most {len(bit_choices) ** free}, the distinct configurations of {free} free layers",
            n_configs,
        )
    header = {
        "format": BENCH_FORMAT,
        "name": name or out.stem,
        "model": model_name,
        "weights_hash": weights_hash(model),
        "layers": [l.name for l in layers],
        "bit_choices": sorted(bit_choices),
        "fixed": {layers[i].name: b for i, b in sorted(fixed.items())},
        "act_bits": settings.act_bits,
        "quantizer": settings.to_dict(),
        "metric": metric_of(labels).name,
        "eval": eval_desc or {"size": len(images)},
        "calibration": {"images": len(calib)},
        "seed": seed,
        "split_seed": split_seed,
        "held_out_fraction": held_out_fraction,
        "device": device,
        **(provenance or {}),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    refuse_link(out, "the bench file")  # it grows in place: a link would send the entries elsewhere
    with locking.held(out, str(out)):  # two builds appending to one file would measure configurations twice
        remove_leftovers(out)  # headers a killed build was writing: only a build writes one, under this lock
        if out.exists():
            old, entries, good_len = read_bench_file(out)
            clash = [k for k in (*_IDENTITY, *(provenance or {})) if old.get(k) != header[k]]
            if clash:
                raise EvoproxyError(
                    f"{out} exists with other settings ({', '.join(clash)}); write to another file or remove it"
                )
            with open_in_place(out, "r+b") as f:  # drop a line that a killed build left unfinished
                f.truncate(good_len)
            header = old
        else:
            metric = metric_of(labels)
            header[f"fp_{metric.name}"] = metric.measure(
                model.to(device), images.to(device), labels.to(device), log=log
            )
            write_header(out, header)
            entries = []
        done = {e.bits for e in entries}
        todo = [c for c in build_order(len(layers), bit_choices, n_configs, fixed, seed) if c not in done]
        if todo:
            bar = tqdm(
                total=n_configs, initial=n_configs - len(todo), desc=header["name"], unit="cfg", disable=not bar_shown
            )
            chunks = [todo[i : i + chunk] for i in range(0, len(todo), chunk)]
            dask = backend == "dask"
            with parallel_config(backend="dask" if dask else "loky", n_jobs=-1 if dask else jobs):
                if jobs == 1 and not dask:  # one evaluator, so every chunk shares its quantized weights
                    on_device = (model.to(device), layers, calib.to(device), images.to(device), labels.to(device))
                    evaluator = PtqEvaluator(*on_device, settings, log)
                    results = (evaluator.measure_many(c) for c in chunks)
                else:
                    results = Parallel(return_as="generator")(
                        delayed(_measure)(model, layers, c, calib, images, labels, settings, device, threads=1)
                        for c in chunks
                    )
                _write(out, header, layers, settings, chunks, results, entries, bar, None if bar_shown else log)
            bar.close()
        return Bench(header, entries, str(out))
