"""Flags that several commands share, and how they are read: the model, the calibration batch
and statistics settings, bit choices, fixed layers and lists of proxies."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import EvoproxyError

if TYPE_CHECKING:  # imported lazily at run time, so that `evoproxy --help` starts fast
    from ..stats import StatsSettings


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default",
                   help="registry name (default, resnet20-fmnist) or package.module:function returning an nn.Module")
    p.add_argument("--weights", help="state_dict file to load into the model (overrides a registry model's checkpoint)")


def calibration(args) -> tuple[torch.Tensor, torch.Tensor]:
    from ..model import calibration_batch
    if args.calib is None:
        return calibration_batch(args.batch_size)
    path = Path(args.calib)
    if not path.is_file():
        raise EvoproxyError(f"calibration file {path} does not exist")
    try:
        blob = torch.load(path, weights_only=True)
        images, labels = blob["images"][:args.batch_size], blob["labels"][:args.batch_size]
    except Exception:
        raise EvoproxyError(f"{path} must be a torch.save'd dict with 'images' (float, N×C×H×W, normalized) "
                            "and 'labels' (int64, N)") from None
    return images, labels


def add_stats_args(p: argparse.ArgumentParser) -> None:
    """Calibration batch, statistics settings and cache: what `stats_settings` and `model_stats` read."""
    p.add_argument("--batch-size", type=int, default=64, help="calibration images used (default 64)")
    p.add_argument("--calib", help="calibration file (torch.save'd dict of 'images' and 'labels'); "
                                   "default: the Fashion-MNIST subset shipped in the package")
    p.add_argument("--hutchinson-samples", type=int, default=64, help="most Hutchinson samples (default 64)")
    p.add_argument("--hutchinson-tol", type=float, default=1e-3, help="relative trace change that stops sampling")
    p.add_argument("--power-iters", type=int, default=20, help="most power iterations per layer (default 20)")
    p.add_argument("--power-tol", type=float, default=1e-3, help="relative eigenvalue change that stops iterating")
    p.add_argument("--act-max-elems", type=int, default=65536,
                   help="cap on stored activation elements per layer (spatial subsampling; default 65536)")
    p.add_argument("--seed", type=int, default=0, help="seed of the statistics' random probes (default 0)")
    p.add_argument("--cache-dir", help="statistics cache (default $EVOPROXY_CACHE_DIR or ~/.cache/evoproxy)")


def stats_settings(args) -> StatsSettings:
    """The StatsSettings of the flags `add_stats_args` adds."""
    from ..stats import StatsSettings
    return StatsSettings(args.hutchinson_samples, args.hutchinson_tol, args.power_iters, args.power_tol,
                         args.act_max_elems, args.seed)


def model_stats(args, settings: StatsSettings | None = None) -> tuple:
    """The model of --model/--weights, its canonical name and its statistics (from the cache or
    computed, with progress on stderr), with `settings` or else those of the stats flags."""
    from ..model import load_model
    from ..stats import load_or_compute_stats
    model, name = load_model(args.model, args.weights)
    stats, _ = load_or_compute_stats(model, *calibration(args), name, settings or stats_settings(args),
                                     args.cache_dir, log=lambda msg: print(f"[stats] {msg}", file=sys.stderr))
    return model, name, stats


def parse_bits(text: str, flag: str) -> list[int]:
    try:
        bits = sorted({int(b) for b in text.split(",")})
    except ValueError:
        raise EvoproxyError(f"{flag} takes comma-separated bit-widths such as 2,3,4; got {text!r}") from None
    return bits


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
            raise EvoproxyError(f"--fixed: {item!r} is not first, last, a layer index below {len(layers)} "
                                "or a layer name (see `evoproxy stats`)")
    return fixed


def resolve_proxies(spec: str) -> list:
    from ..proxy import available_proxies, get_proxy
    names = available_proxies() if spec == "all" else [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise EvoproxyError("--proxies is empty: give all, names separated by commas, or a proxy .json file")
    return [get_proxy(n) for n in names]
