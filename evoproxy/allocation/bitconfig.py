"""A bit configuration on disk and on paper: the JSON file `evoproxy allocate` writes and
`evoproxy quantize` reads, and the bits-per-layer bar chart (EMQ Figure 6).

The file is an object with `bits` (weight bit-width per layer, layer-registry order, as in a
benchmark entry) and `act_bits` (one activation bit-width for every layer, or a list of one per
layer in registry order when they differ); an allocation adds
its model, proxy, cost, budgets, solver outcome and a `layers` list of per-layer detail. Any JSON
object with `bits` (a benchmark entry line, say) loads as well.
"""

from __future__ import annotations

import json
from dataclasses import asdict
import reprlib
from collections.abc import Sequence
from pathlib import Path

from ..errors import EvoproxyError, ParameterError
from ..files import save_figure
from ..model import LayerInfo
from ..quant import WeightFormat, average_bits, is_bit_width
from .problem import MIN_W_BITS
from .result import Allocation

FORMAT = "evoproxy-allocation/1"
DEFAULT_ACT_BITS = 8


def allocation_record(
    allocation: Allocation,
    layers: Sequence[LayerInfo],
    sensitivities: Sequence[float],
    *,
    model: str,
    proxy: str,
    weight_format: WeightFormat = WeightFormat(),
) -> dict:
    """JSON-ready dict of an allocation of `model`'s `layers` (registry order) by `proxy`, whose
    per-layer `sensitivities` (L,) are recorded beside each layer's bits and parameter count; with
    the weights' format (group size, asymmetry) where it is not per-channel symmetric, and the
    average bits per weight it gives."""
    detail = allocation.to_dict()
    for row, layer, s in zip(detail["layers"], layers, sensitivities):
        row.update(params=layer.params, sensitivity=float(s))
    act = set(allocation.a_bits)
    fmt = {} if weight_format == WeightFormat() else asdict(weight_format)
    return {
        "format": FORMAT,
        "model": model,
        "proxy": proxy,
        "bits": list(allocation.w_bits),
        "act_bits": act.pop() if len(act) == 1 else list(allocation.a_bits),
        **fmt,
        "avg_bits": average_bits(layers, allocation.w_bits, weight_format),
        **detail,
    }


def load_weight_format(path: str | Path) -> WeightFormat:
    """The weight format a bit configuration file records (`allocation_record`); per-channel
    symmetric for a file that records none. Read after `load_bit_config`, which checks the file."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    try:
        return WeightFormat(data.get("group_size"), data.get("asymmetric", False))
    except ParameterError as exc:
        raise EvoproxyError(f"{path}: {exc.worded(repr(exc.param))}") from None


def act_bits_label(a_bits: Sequence[int]) -> str:
    """Short name of per-layer activation bits for tables: "A8" when every layer has 8, "A4–8"
    when they range from 4 to 8 bits."""
    low, high = min(a_bits), max(a_bits)
    return f"A{low}" if low == high else f"A{low}–{high}"


def load_bit_config(path: str | Path, layer_names: Sequence[str]) -> tuple[list[int], tuple[int, ...]]:
    """Weight bits (L,) and activation bits (L,) in registry order of the bit configuration file
    `path` for a model whose registry names are `layer_names`. `act_bits` in the file is one
    bit-width for every layer or a list of one per layer; a file without it means 8-bit
    activations. Raises EvoproxyError for a file that does not fit the model."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvoproxyError(f"bit configuration file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EvoproxyError(f"{path} is not a JSON file: {exc}") from None
    except RecursionError:
        raise EvoproxyError(f"{path} is nested too deeply to be a bit configuration") from None
    except OSError as exc:
        raise EvoproxyError(f"cannot read bit configuration file {path}: {exc.strerror}") from None
    bits = data.get("bits") if isinstance(data, dict) else None
    if not isinstance(bits, list) or not all(is_bit_width(b, MIN_W_BITS) for b in bits):
        raise EvoproxyError(
            f"{path} needs 'bits': a list of whole weight bit-widths from {MIN_W_BITS} to 32, one "
            "per layer in registry order (as `evoproxy allocate` writes)"
        )
    if len(bits) != len(layer_names):
        raise EvoproxyError(f"{path} has {len(bits)} bits but the model has {len(layer_names)} quantizable layers")
    rows = data.get("layers", [])
    if not isinstance(rows, list):
        raise EvoproxyError(f"{path}: 'layers' must be the list of per-layer detail that `evoproxy allocate` writes")
    names = [row.get("name") for row in rows if isinstance(row, dict)]
    if names and names != list(layer_names):
        raise EvoproxyError(
            f"{path} was allocated for other layers than this model's; use the model it names: "
            f"{data.get('model', 'unknown')}"
        )
    act = data.get("act_bits", DEFAULT_ACT_BITS)
    if is_bit_width(act):
        act = [act] * len(bits)
    if not isinstance(act, list) or not all(is_bit_width(a) for a in act):
        raise EvoproxyError(
            f"{path}: 'act_bits' must be one whole bit-width from 1 to 32 for every layer, or a list "
            f"of one per layer (got {reprlib.repr(act)})"
        )
    if len(act) != len(bits):
        raise EvoproxyError(
            f"{path} has {len(act)} activation bits ('act_bits') but the model has {len(bits)} "
            "quantizable layers: give one per layer, or one number for all"
        )
    return bits, tuple(act)


def plot_bits(
    names: Sequence[str], w_bits: Sequence[int], fixed: Sequence[int], path: str | Path, title: str = ""
) -> None:
    """Bar chart of the weight bit-width of each layer (`names`, `w_bits` in registry order), the
    layers whose registry indices are in `fixed` drawn grey, written to the PNG file `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fixed = set(fixed)
    colors = ["tab:gray" if i in fixed else "tab:blue" for i in range(len(names))]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.32 * len(names) + 1.5), 3.6))
    ax.bar(range(len(names)), w_bits, color=colors)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(sorted(set(w_bits)))
    ax.set_ylabel("weight bits")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
