"""MQ-Bench-style benchmarks: bit configurations of one model with their measured quality.

File format (JSON Lines, so that a build can append entry by entry and a killed build loses at
most the line it was writing): the first line is the header object, every further line one
entry `{"bits": [...], METRIC: value, "size_mb": MB, "bops": BOPs}` with bits in layer order and
METRIC the header's `metric` (model.METRICS): "accuracy" (top-1 %, higher is better; the default,
for benches that name none) or "perplexity" (lower is better). A plain JSON file
`{"header": {...}, "entries": [...]}` with the same fields loads too.

Header fields: format, name, model, weights_hash, layers (names in registry order),
bit_choices, fixed ({layer name: bits}), act_bits, quantizer (settings), metric, eval (dataset,
split, size), calibration, fp_METRIC (the full-precision model's), seed (configuration sampling),
split_seed and held_out_fraction (the fixed search / held-out split), device.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import EvoproxyError, ParameterError
from ..files import open_in_place, write_atomically
from ..model import METRICS, Metric
from ..quant import WeightFormat

BENCH_FORMAT = "evoproxy-bench/1"
REQUIRED = ("name", "model", "layers", "bit_choices", "fixed", "act_bits")
SPLITS = ("search", "held-out", "all")


DEFAULT_METRIC = "accuracy"  # of a bench whose header names none


@dataclass(frozen=True)
class Entry:
    """One measured configuration: weight bits per layer (registry order), its `value` of the
    bench's `metric` (top-1 accuracy in percent, or perplexity), size in MB (10^6 bytes) and BOPs."""

    bits: tuple[int, ...]
    value: float
    size_mb: float
    bops: float
    metric: str = DEFAULT_METRIC

    @property
    def quality(self) -> float:
        """`value` oriented so that higher is better: what rankings correlate with."""
        return METRICS[self.metric].quality(self.value)

    def to_json(self) -> str:
        return json.dumps(
            {"bits": list(self.bits), self.metric: self.value, "size_mb": self.size_mb, "bops": self.bops}
        )


def is_held_out(bits: Sequence[int], split_seed: int, fraction: float) -> bool:
    """Whether a configuration belongs to the held-out part: decided by a hash of the bits, so
    the split is fixed whatever order or number of entries a file has."""
    digest = hashlib.sha256(f"{split_seed}:{','.join(map(str, bits))}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


class Bench:
    """A loaded benchmark: `header` (dict) and `entries` (list of Entry)."""

    def __init__(self, header: dict, entries: list[Entry], source: str = "<memory>"):
        _check_header(header, source)
        n, choices, fixed = len(header["layers"]), set(header["bit_choices"]), header["fixed"]
        allowed = [{fixed[name]} if name in fixed else choices for name in header["layers"]]
        seen: dict[tuple[int, ...], int] = {}
        metric = header.get("metric", DEFAULT_METRIC)
        for i, e in enumerate(entries, 1):
            if e.metric != metric:
                raise EvoproxyError(f"benchmark {source}: entry {i} measures {e.metric}, the header {metric}")
            if len(e.bits) != n:
                raise EvoproxyError(f"benchmark {source}: entry {i} has {len(e.bits)} bits for {n} layers")
            wrong = next((j for j, (b, ok) in enumerate(zip(e.bits, allowed)) if b not in ok), None)
            if wrong is not None:
                raise EvoproxyError(
                    f"benchmark {source}: entry {i} gives layer {header['layers'][wrong]} "
                    f"{e.bits[wrong]} bits, outside its choices {sorted(allowed[wrong])}"
                )
            if e.bits in seen:
                raise EvoproxyError(
                    f"benchmark {source}: entries {seen[e.bits]} and {i} have the same bits; "
                    "each configuration must be measured once"
                )
            seen[e.bits] = i
        self.header, self.entries, self.source = header, entries, source

    @property
    def name(self) -> str:
        return self.header["name"]

    @property
    def metric(self) -> Metric:
        """What the entries measure (top-1 accuracy unless the header names another metric)."""
        return METRICS[self.header.get("metric", DEFAULT_METRIC)]

    @property
    def weight_format(self) -> WeightFormat:
        """How the bench's weights were quantized (per channel, symmetric, unless its quantizer says)."""
        quantizer = self.header.get("quantizer", {})
        return WeightFormat(quantizer.get("group_size"), quantizer.get("asymmetric", False))

    @property
    def fp_value(self) -> float:
        """The full-precision model's value of the metric (NaN where the header does not record it)."""
        return self.header.get(f"fp_{self.metric.name}", float("nan"))

    def split(self, which: str = "all") -> list[Entry]:
        """Entries of the search part, the held-out part, or all of them."""
        if which not in SPLITS:
            raise EvoproxyError(f"unknown split {which!r}: use one of {', '.join(SPLITS)}")
        if which == "all":
            return list(self.entries)
        seed, frac = self.header.get("split_seed", 0), self.header.get("held_out_fraction", 0.2)
        held = which == "held-out"
        return [e for e in self.entries if is_held_out(e.bits, seed, frac) == held]

    def check_layers(self, layer_names: Sequence[str]) -> None:
        """Raise a clear error unless the model's layer registry is the one the bench was made on."""
        if list(layer_names) != list(self.header["layers"]):
            ours, theirs = len(layer_names), len(self.header["layers"])
            first = next((i for i, (a, b) in enumerate(zip(layer_names, self.header["layers"])) if a != b), None)
            where = f"first difference at layer {first}" if first is not None else f"{ours} vs {theirs} layers"
            raise EvoproxyError(
                f"benchmark {self.name} was made on another model's layers ({where}); "
                f"use the model it names: {self.header['model']}"
            )

    @staticmethod
    def arrays(entries: Sequence[Entry]) -> tuple[np.ndarray, np.ndarray]:
        """Bits as an int array (N, L) and quality as a float array (N,): the measured values oriented
        so that higher is better (accuracy as it is, perplexity negated), what rankings correlate with."""
        return (
            np.array([e.bits for e in entries], dtype=np.int64).reshape(len(entries), -1),
            np.array([e.quality for e in entries], dtype=float),
        )


def _check_header(header: dict, source: str) -> None:
    """One-line errors for a header without its required fields, or with fields of the wrong type."""
    missing = [k for k in REQUIRED if k not in header]
    if missing:
        raise EvoproxyError(f"benchmark {source} lacks header field(s) {', '.join(missing)}")
    checks = {
        "name": lambda v: isinstance(v, str),
        "model": lambda v: isinstance(v, str),
        "layers": lambda v: isinstance(v, list) and v and all(isinstance(x, str) for x in v),
        "bit_choices": lambda v: isinstance(v, list) and v and all(_is_bits(x) for x in v),
        "fixed": lambda v: isinstance(v, dict) and all(_is_bits(x) for x in v.values()),
        "act_bits": _is_bits,
        "metric": lambda v: v in METRICS,
    }
    wrong = [k for k, ok in checks.items() if k in header and not ok(header[k])]
    wrong += [k for k, ok in OPTIONAL.items() if k in header and not ok(header[k])]
    if wrong:
        raise EvoproxyError(
            f"benchmark {source}: header field(s) {', '.join(wrong)} of the wrong type (name, model: "
            f"text; layers: names; bit_choices: bit-widths; fixed: name → bits; act_bits: bits; metric: one of "
            f"{', '.join(METRICS)}; "
            "split_seed: a whole number; held_out_fraction: a number from 0 to 1; fp_accuracy: a number; "
            "eval: an object; quantizer: an object whose group_size is a whole number or null)"
        )
    unknown = sorted(set(header["fixed"]) - set(header["layers"]))
    if unknown:
        raise EvoproxyError(f"benchmark {source}: fixed names layers it does not have: {', '.join(unknown)}")


# The header fields a bench may leave out that readers use (split, describe).
OPTIONAL = {
    "split_seed": lambda v: type(v) is int,
    "held_out_fraction": lambda v: type(v) in (int, float) and 0 <= v <= 1,
    **{f"fp_{name}": (lambda v: type(v) in (int, float)) for name in METRICS},
    "eval": lambda v: isinstance(v, dict),
    "quantizer": lambda v: isinstance(v, dict) and _is_format(v),
}


def _is_format(quantizer: dict) -> bool:
    try:
        WeightFormat(quantizer.get("group_size"), quantizer.get("asymmetric", False))
    except ParameterError:
        return False
    return True


def _is_bits(value) -> bool:
    return type(value) is int and 1 <= value <= 32


def _parse_entry(obj: dict, where: str, metric: str) -> Entry:
    """An entry of a bench of `metric` (a name of METRICS; the header's, checked before)."""
    try:
        bits, value = obj["bits"], float(obj[metric])
        if not isinstance(bits, list) or not all(type(b) is int for b in bits):
            raise TypeError
        entry = Entry(tuple(bits), value, float(obj.get("size_mb", "nan")), float(obj.get("bops", "nan")), metric)
    except (KeyError, TypeError, ValueError, OverflowError):
        raise EvoproxyError(f"{where}: an entry needs 'bits' (list of whole numbers) and {metric!r} (number)") from None
    if not METRICS[metric].holds(value):  # also false for NaN
        raise EvoproxyError(f"{where}: {metric} {value} is not {METRICS[metric].range_text}")
    return entry


def _metric_of(header: object, where: str) -> str:
    metric = header.get("metric", DEFAULT_METRIC) if isinstance(header, dict) else DEFAULT_METRIC
    if metric not in METRICS:
        raise EvoproxyError(f"{where}: header field metric {metric!r} is not one of {', '.join(METRICS)}")
    return metric


def read_bench_file(path: Path) -> tuple[dict, list[Entry], int]:
    """Header, entries and the byte length of the complete lines of a bench file. A last line
    cut short by a killed writer is ignored (and the returned length excludes it)."""
    raw = path.read_bytes()
    try:
        whole = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        whole = None
    if isinstance(whole, dict):
        header, entries = whole.get("header", whole), whole.get("entries", [])
        if not isinstance(header, dict) or not isinstance(entries, list):
            raise EvoproxyError(f"{path}: a whole-file bench needs 'header' (an object) and 'entries' (a list)")
        metric = _metric_of(header, str(path))
        return (
            {k: v for k, v in header.items() if k != "entries"},
            [_parse_entry(e, str(path), metric) for e in entries],
            len(raw),
        )
    lines = raw.split(b"\n")
    complete = lines if raw.endswith(b"\n") else lines[:-1]  # the tail of a killed write is dropped
    good_len = sum(len(l) + 1 for l in complete) if not raw.endswith(b"\n") else len(raw)
    complete = [l for l in complete if l.strip()]
    if not complete:
        raise EvoproxyError(f"{path} is empty or not a benchmark file (JSON Lines: a header line, then entries)")
    try:
        header = json.loads(complete[0])
        metric = _metric_of(header, str(path))
        entries = [_parse_entry(json.loads(l), f"{path}:{i + 2}", metric) for i, l in enumerate(complete[1:])]
    except json.JSONDecodeError as exc:
        raise EvoproxyError(f"{path} is not valid JSON Lines ({exc.msg} on a line); it cannot be loaded") from None
    except UnicodeDecodeError:
        raise EvoproxyError(f"{path} is not text (UTF-8 JSON Lines); it is not a benchmark file") from None
    except RecursionError:
        raise EvoproxyError(f"{path} nests JSON too deeply to be a benchmark file") from None
    if not isinstance(header, dict):
        raise EvoproxyError(f"{path}: the first line must be the header object")
    return header, entries, good_len


def shipped_benches() -> list[str]:
    """Names of the benchmarks shipped inside the package."""
    folder = resources.files("evoproxy") / "benches"
    return sorted(p.name[: -len(".jsonl")] for p in folder.iterdir() if p.name.endswith(".jsonl"))


def load_bench(ref: str | os.PathLike) -> Bench:
    """A shipped benchmark by name, or a bench file by path."""
    path = Path(ref)
    if not path.is_file():
        shipped = resources.files("evoproxy") / "benches" / f"{ref}.jsonl"
        if not shipped.is_file():
            raise EvoproxyError(
                f"no benchmark {str(ref)!r}: give a file path or one of "
                f"{', '.join(shipped_benches()) or '(none shipped)'}"
            )
        path = Path(str(shipped))
    header, entries, _ = read_bench_file(path)
    bench = Bench(header, entries, str(path))
    if not entries:  # a build killed before its first measurement: nothing to rank or search on
        raise EvoproxyError(f"benchmark {path} holds no configurations; finish building it with `evoproxy bench build`")
    return bench


def sample_configs(n_free: int, choices: Sequence[int], seed: int) -> Iterator[tuple[int, ...]]:
    """The endless, seeded sequence of distinct bit tuples for `n_free` layers; the same seed
    always gives the same sequence, which is what lets a killed build resume exactly."""
    rng = np.random.default_rng(seed)
    seen: set[tuple[int, ...]] = set()
    total = len(choices) ** n_free
    while len(seen) < total:
        cfg = tuple(int(choices[i]) for i in rng.integers(0, len(choices), n_free))
        if cfg not in seen:
            seen.add(cfg)
            yield cfg


def expand(free_bits: Sequence[int], n_layers: int, fixed_idx: dict[int, int]) -> tuple[int, ...]:
    """Full per-layer bits from the free layers' bits and the fixed layers."""
    it = iter(free_bits)
    return tuple(fixed_idx[i] if i in fixed_idx else next(it) for i in range(n_layers))


def append_entries(path: Path, entries: Sequence[Entry]) -> None:
    """Append entries durably (flushed and synced) to a bench file."""
    with open_in_place(path) as f:
        for e in entries:
            f.write(e.to_json() + "\n")
        f.flush()
        os.fsync(f.fileno())


def write_header(path: Path, header: dict) -> None:
    """Start a bench file with its header, in one step."""
    write_atomically(path, json.dumps(header) + "\n")


def describe(bench: Bench) -> str:
    """A few lines that say what a benchmark holds."""
    h, metric = bench.header, bench.metric
    values = np.array([e.value for e in bench.entries])
    lines = [
        f"{bench.name}: {len(bench.entries)} configurations of {h['model']} "
        f"({len(h['layers'])} layers, weight bits {h['bit_choices']}, activations {h['act_bits']}-bit, "
        f"fixed {h['fixed']})",
        f"  search / held-out: {len(bench.split('search'))} / {len(bench.split('held-out'))}",
    ]
    if len(values):
        lines.append(
            f"  {metric.title}: min {metric.format(values.min())}  median {metric.format(np.median(values))}  "
            f"max {metric.format(values.max())}  (full precision {metric.format(bench.fp_value)}, "
            f"eval {h.get('eval', {})})"
        )
    return "\n".join(lines)
