"""The `evoproxy` command line."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from . import __version__
from .errors import EvoproxyError


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default",
                   help="registry name (default, resnet20-fmnist) or package.module:function returning an nn.Module")
    p.add_argument("--weights", help="state_dict file to load into the model (overrides a registry model's checkpoint)")


def _calibration(args) -> tuple[torch.Tensor, torch.Tensor]:
    from .data import calibration_batch
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


def cmd_stats(args) -> None:
    from .models import load_model
    from .stats import StatsSettings, load_or_compute_stats
    from .table import format_table

    settings = StatsSettings(args.hutchinson_samples, args.hutchinson_tol, args.power_iters, args.power_tol,
                             args.act_max_elems, args.seed)
    model, name = load_model(args.model, args.weights)
    images, labels = _calibration(args)
    log = (lambda msg: print(f"[stats] {msg}", file=sys.stderr)) if not args.json else (lambda msg: None)
    stats, hit = load_or_compute_stats(model, images, labels, name, settings, args.cache_dir, not args.no_cache, log)
    rows = stats.table()
    if args.json:
        print(json.dumps({"model": stats.model, "weights_hash": stats.weights_hash, "batch_hash": stats.batch_hash,
                          "batch_size": len(images), "settings": stats.to_blob()["settings"],
                          "synflow_log_scale": stats.synflow_log_scale,
                          "hutchinson_samples_used": stats.hutchinson_samples_used,
                          "timings_s": stats.timings, "from_cache": hit, "layers": rows}, indent=2))
        return
    print(f"{stats.model}: {len(rows)} quantizable layers, calibration batch {len(images)}, "
          f"{'from cache' if hit else 'computed'}")
    cols = ["index", "name", "kind", "shape", "params", "macs", "hessian_trace", "hessian_eig", "grad_norm",
            "act_std", "synflow"]
    print(format_table(rows, cols, ["#", "layer", "kind", "shape", "params", "MACs", "trace(H)", "λmax(H)",
                                    "‖G‖", "std(A)", "synflow"]))
    print(f"SynFlow values are scaled by e^-{stats.synflow_log_scale:.1f}; "
          f"Hutchinson used {stats.hutchinson_samples_used} samples; "
          + ", ".join(f"{k} {v:.2f} s" for k, v in stats.timings.items()))


def cmd_train(args) -> None:
    from .models import MODELS
    from .train import make_calibration_subset, train

    if args.model not in MODELS:
        raise EvoproxyError(f"unknown registry model {args.model!r}: use one of {', '.join(MODELS)}")
    model, acc = train(args.model, args.epochs, args.batch_size, args.lr, args.seed, args.data_dir)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / MODELS[args.model].checkpoint)
    make_calibration_subset(out / "calib_fmnist.pt", data_dir=args.data_dir)
    print(f"test accuracy {acc:.2f}%; wrote {out / MODELS[args.model].checkpoint} and {out / 'calib_fmnist.pt'}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evoproxy", description=__doc__ + " Evolve training-free proxies for "
                                     "mixed-precision quantization and use them to allocate bit-widths.")
    parser.add_argument("--version", action="version", version=f"evoproxy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("stats", help="per-layer statistics (W, G, A, Hessian, SynFlow) of a model",
                       description="Compute (or load from the cache) the per-layer statistics that proxies read, "
                                   "and print one row per quantizable layer.")
    _add_model_args(p)
    p.add_argument("--batch-size", type=int, default=64, help="calibration images used (default 64)")
    p.add_argument("--calib", help="calibration file (torch.save'd dict of 'images' and 'labels'); "
                                   "default: the Fashion-MNIST subset shipped in the package")
    p.add_argument("--hutchinson-samples", type=int, default=64, help="most Hutchinson samples (default 64)")
    p.add_argument("--hutchinson-tol", type=float, default=1e-3, help="relative trace change that stops sampling")
    p.add_argument("--power-iters", type=int, default=20, help="most power iterations per layer (default 20)")
    p.add_argument("--power-tol", type=float, default=1e-3, help="relative eigenvalue change that stops iterating")
    p.add_argument("--act-max-elems", type=int, default=65536,
                   help="cap on stored activation elements per layer (spatial subsampling; default 65536)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", help="statistics cache (default $EVOPROXY_CACHE_DIR or ~/.cache/evoproxy)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("train", help="train a registry model on Fashion-MNIST (remakes the shipped checkpoint)",
                       description="Train a registry model from scratch on Fashion-MNIST and write its state_dict "
                                   "and the 512-image calibration subset.")
    p.add_argument("--model", default="resnet20-fmnist")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", help="folder of the Fashion-MNIST IDX files (default $EVOPROXY_FMNIST_DIR or "
                                      "/usr/share/datasets/fashion-mnist)")
    p.add_argument("--out", default=".", help="folder to write the checkpoint and calibration subset to")
    p.set_defaults(func=cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except EvoproxyError as exc:
        print(f"evoproxy {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("evoproxy: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
