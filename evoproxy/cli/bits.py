"""Flags of bits and budgets that several commands share, and how they are read: weight bit
choices, activation bit choices, the layers kept at fixed bits, the weights' quantization format
(group size, asymmetry) and the size, BOPs and latency budgets of an allocation."""

from __future__ import annotations

import argparse

from ..errors import EvoproxyError


def add_weight_format_args(p: argparse.ArgumentParser, default: str | None = None) -> None:
    """How weights are quantized and stored (quant.WeightFormat): what `weight_format_args` reads.
    `default`: what a --group-size left out means, where it is not channel (the flag is then None)."""
    p.add_argument(
        "--group-size",
        default=None if default else "channel",
        help="weights: one 16-bit scale per this many consecutive input weights of each output (32, 64, 128, "
        f"... as language-model tools quantize), or channel: one per output channel (default {default or 'channel'})",
    )
    p.add_argument(
        "--asymmetric", action="store_true", help="weights: levels 0..2^b-1 with a zero-point per group or channel"
    )


def weight_format_args(args) -> dict:
    """{group_size, asymmetric} of the flags `add_weight_format_args` adds (keyword arguments of
    QuantSettings, StatsSettings and WeightFormat); the defaults where a command has no such flags."""
    text = getattr(args, "group_size", None) or "channel"
    if text == "channel":
        group_size = None
    else:
        try:
            group_size = int(text)
        except ValueError:
            raise EvoproxyError(f"--group-size takes a whole number such as 128, or channel; got {text!r}") from None
    return {"group_size": group_size, "asymmetric": getattr(args, "asymmetric", False)}


def add_budget_args(p: argparse.ArgumentParser) -> None:
    """The budgets of an allocation: a size (--size-mb or --avg-bits) and optionally BOPs; `size_budget` reads them."""
    p.add_argument(
        "--size-mb",
        type=float,
        help="budget on the quantizable layers' size in MB (10^6 bytes; biases at 32 bits); or --avg-bits",
    )
    p.add_argument(
        "--avg-bits",
        type=float,
        help="budget in bits per weight averaged over the quantized layers, group scales and zero-points "
        "included (e.g. 3.25); or --size-mb",
    )
    p.add_argument("--bops-g", type=float, help="budget in G bit operations per sample (default: none)")


def add_latency_args(p: argparse.ArgumentParser) -> None:
    """A latency budget over the per-layer latencies that `evoproxy latency` measured (HAWQ-V3)."""
    p.add_argument(
        "--latency-ms",
        type=float,
        help="budget on the model's latency in ms: the sum of --latency-table's entries at each layer's bits "
        "(method ilp; default: none)",
    )
    p.add_argument(
        "--latency-table",
        help="JSON latency table of `evoproxy latency` for this model; without --latency-ms the allocation's "
        "latency is predicted, not constrained",
    )


def check_budgets(args) -> None:
    """Refuse, before any work, budget flags that are missing, both given, or out of range."""
    from ..allocation import MAX_BOPS, MAX_LATENCY_MS, MAX_SIZE_MB
    from ..quant import SCALE_BITS

    if (args.size_mb is None) == (args.avg_bits is None):
        raise EvoproxyError("give one size budget: --size-mb (megabytes) or --avg-bits (bits per weight)")
    check_budget(args.size_mb, "--size-mb", "MB", MAX_SIZE_MB)
    check_budget(args.avg_bits, "--avg-bits", "bits per weight", 32.0 + SCALE_BITS)
    check_budget(args.bops_g, "--bops-g", "G bit operations", MAX_BOPS / 1e9)
    latency_ms = getattr(args, "latency_ms", None)  # allocate's flags (add_latency_args), not mpq's
    if latency_ms is not None and args.latency_table is None:
        raise EvoproxyError(
            "--latency-ms sums per-layer latencies measured on this machine: measure them with "
            "`evoproxy latency --model ... --out lat.json`, then add --latency-table lat.json"
        )
    check_budget(latency_ms, "--latency-ms", "milliseconds", MAX_LATENCY_MS)


def check_budget(value: float | None, flag: str, unit: str, bound: float) -> None:
    """Refuse, before any work, a budget flag outside (0, bound] (nan included)."""
    if value is not None and not 0 < value <= bound:
        raise EvoproxyError(f"{flag} must be a number of {unit} above 0 and at most {bound:g}, got {value}")


def size_budget(args, layers, fmt) -> float:
    """The size budget in MB of --size-mb, or of --avg-bits over `layers` in weight format `fmt`
    (then also set as args.size_mb, which messages print)."""
    from ..quant import size_mb_at_average_bits

    if args.avg_bits is not None:
        args.size_mb = size_mb_at_average_bits(layers, args.avg_bits, fmt=fmt)
    return args.size_mb


def budget_text(args) -> str:
    """The size budget as given: '0.2 MB', or '0.2 MB: 3.25 bits per weight'."""
    return f"{args.size_mb:.6f} MB: {args.avg_bits:g} bits per weight" if args.avg_bits else f"{args.size_mb} MB"


def add_bit_choice_args(p: argparse.ArgumentParser, act_note: str = "") -> None:
    """Weight bit choices, activation bit choices and the layers kept at fixed bits: what an
    allocation chooses within (read by `parse_bits`, `parse_act_bits` and `parse_fixed`).
    `act_note` adds a method's own reading of --act-bits to its help."""
    p.add_argument("--bits", default="2,3,4", help="weight bit choices per layer (default 2,3,4)")
    p.add_argument(
        "--act-bits",
        help="activation bit choices per layer, e.g. 4,8 (default 8; language models 32: weights only); fixed "
        "layers take the "
        "most" + (f"; {act_note}" if act_note else ""),
    )
    p.add_argument(
        "--fixed",
        help="layers kept at --fixed-bits weights: first, last, indices or names, or none (default first,last; "
        "language models none)",
    )
    p.add_argument("--fixed-bits", type=int, default=8)


def parse_bits(text: str, flag: str, low: int = 2, what: str = "weight") -> list[int]:
    """Comma-separated `what` bit-widths, ascending and distinct, each from `low` to 32 (weights: 2,
    since at 1 bit the symmetric quantizer has no level but 0)."""
    try:
        bits = sorted({int(b) for b in text.split(",")})
    except ValueError:
        raise EvoproxyError(f"{flag} takes comma-separated bit-widths such as 2,3,4; got {text!r}") from None
    if bits[0] < low or bits[-1] > 32:
        raise EvoproxyError(f"{flag} takes {what} bit-widths from {low} to 32; got {text!r}")
    return bits


def parse_act_bits(text: str | int | None, default: str = "8") -> list[int]:
    """--act-bits of `add_bit_choice_args` (or the data's default, `data_defaults`): activation bit choices
    from 1 to 32 (`default` when not given)."""
    return parse_bits(default if text is None else str(text), "--act-bits", low=1, what="activation")


def parse_fixed(text: str, layers, bits: int) -> dict[int, int]:
    """--fixed: 'none', or comma-separated 'first', 'last', layer indices or layer names."""
    if text == "none":
        return {}
    names = {l.name: l.index for l in layers}
    fixed = {}
    for item in text.split(","):
        if item in ("first", "last"):
            fixed[0 if item == "first" else len(layers) - 1] = bits
        elif item.isdigit() and int(item) < len(layers):
            fixed[int(item)] = bits
        elif item in names:
            fixed[names[item]] = bits
        else:
            raise EvoproxyError(
                f"--fixed: {item!r} is not first, last, a layer index below {len(layers)} "
                "or a layer name (see `evoproxy stats`)"
            )
    return fixed


def fixed_layers(args, layers, act_choices: list[int]) -> dict[int, tuple[int, int]]:
    """The layers of --fixed at (--fixed-bits weights, the most of `act_choices` activations): with
    one activation choice, that one, as in a benchmark."""
    return {i: (b, act_choices[-1]) for i, b in parse_fixed(args.fixed, layers, args.fixed_bits).items()}
