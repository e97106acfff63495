"""`evoproxy stats` and `evoproxy train`: the model and the statistics every proxy reads."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from ..errors import EvoproxyError
from ..files import replacing
from .args import add_model_args, add_stats_args, model_stats


def cmd_stats(args) -> None:
    from ..table import format_table

    _, _, stats, hit = model_stats(args, use_cache=not args.no_cache, quiet=args.json)
    rows = stats.table()
    if args.json:
        print(
            json.dumps(
                {
                    "model": stats.model,
                    "weights_hash": stats.weights_hash,
                    "batch_hash": stats.batch_hash,
                    "batch_size": args.batch_size,
                    "data": args.data,
                    "settings": stats.to_blob()["settings"],
                    "synflow_log_scale": stats.synflow_log_scale,
                    "hutchinson_samples_used": stats.hutchinson_samples_used,
                    "timings_s": stats.timings,
                    "from_cache": hit,
                    "layers": rows,
                },
                indent=2,
            )
        )
        return
    print(
        f"{stats.model}: {len(rows)} quantizable layers, calibration batch {args.batch_size} of {args.data}, "
        f"{'from cache' if hit else 'computed'}"
    )
    cols = [
        "index",
        "name",
        "kind",
        "shape",
        "params",
        "macs",
        "hessian_trace",
        "hessian_eig",
        "grad_norm",
        "act_std",
        "synflow",
        "sqnr_4bit",
        "kl_2bit",
    ]
    headers = ["#", "layer", "kind", "shape", "params", "MACs", "trace(H)", "λmax(H)", "‖G‖", "std(A)", "synflow"]
    around = "" if (b := stats.settings.perturb_around) is None else f", others@{b}b"
    print(format_table(rows, cols, [*headers, f"SQNR@4b{around} (dB)", f"KL@2b{around}"]))
    print(
        f"SynFlow values are scaled by e^-{stats.synflow_log_scale:.1f}; "
        f"Hutchinson used {stats.hutchinson_samples_used} samples"
        + (f" (the Hessian bounded to {budget:g} s)" if (budget := stats.settings.hessian_seconds) else "")
        + "; "
        + ", ".join(f"{k} {v:.2f} s" for k, v in stats.timings.items())
    )


def cmd_train(args) -> None:
    from ..model import MODELS, make_calibration_subset, train
    from ..model.recipes import RECIPES

    if args.model not in MODELS:
        raise EvoproxyError(f"unknown registry model {args.model!r}: use one of {', '.join(MODELS)}")
    out = Path(args.out)
    if MODELS[args.model].data != "fmnist":
        return _train_language_model(args, out)
    recipe = args.recipe or MODELS[args.model].recipe
    print(f"training {args.model} by the {recipe!r} recipe: {RECIPES[recipe].summary}", file=sys.stderr, flush=True)
    model, acc = train(
        args.model, args.epochs, args.batch_size or 128, args.lr, args.seed, args.data_dir, args.device, recipe=recipe
    )
    out.mkdir(parents=True, exist_ok=True)
    with replacing(out / MODELS[args.model].checkpoint) as tmp:
        torch.save(model.state_dict(), tmp)
    make_calibration_subset(out / "calib_fmnist.pt", data_dir=args.data_dir)
    print(f"test accuracy {acc:.2f}%; wrote {out / MODELS[args.model].checkpoint} and {out / 'calib_fmnist.pt'}")


def _train_language_model(args, out: Path) -> None:
    from ..model import MODELS, DataSettings, open_data, perplexity, train_language_model

    spec = MODELS[args.model]
    source = open_data(spec.data, DataSettings(seed=args.seed, seq_len=spec.input_shape[0]))
    model, _ = train_language_model(
        spec.build(),
        source.training(),
        source.evaluation(),
        args.steps,
        args.batch_size or 32,
        args.lr or 2e-3,
        args.seed,
        args.device,
        log=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    out.mkdir(parents=True, exist_ok=True)
    # Stored in float16, which halves the file the package ships; the model is what it holds.
    with replacing(out / spec.checkpoint) as tmp:
        torch.save({k: v.half() for k, v in model.state_dict().items()}, tmp)
    ppl = perplexity(model.half().float(), *source.evaluation())
    print(f"test perplexity {ppl:.3f} (weights stored in float16); wrote {out / spec.checkpoint}")


def register(sub) -> None:
    """Add the stats and train commands to the `evoproxy` subcommands `sub`."""
    p = sub.add_parser(
        "stats",
        help="per-layer statistics (W, G, A, Hessian, SynFlow) of a model",
        description="Compute (or load from the cache) the per-layer statistics that proxies read, "
        "and print one row per quantizable layer.",
    )
    add_model_args(p)
    add_stats_args(p)
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser(
        "train",
        help="train a registry model on its data (remakes the shipped checkpoint)",
        description="Train a registry model from scratch and write its state_dict: a classifier on "
        "Fashion-MNIST (with the 512-image calibration subset), the language model on the shipped text.",
    )
    p.add_argument("--model", default="resnet20-fmnist")
    p.add_argument("--epochs", type=int, default=4, help="classifiers: epochs over the training split (default 4)")
    p.add_argument("--steps", type=int, default=800, help="language model: AdamW steps (default 800)")
    p.add_argument("--batch-size", type=int, help="default 128 images, or 32 windows for the language model")
    p.add_argument(
        "--recipe",
        choices=["zoo", "adamw"],  # model.recipes.RECIPES, named here so that --help imports no engine
        help="classifiers: the training recipe (default: the model's own; docs/stats.md lists them)",
    )
    p.add_argument(
        "--lr", type=float, help="peak learning rate (default: the recipe's, or 2e-3 for the language model)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--data-dir",
        help="folder of the Fashion-MNIST IDX files (default $EVOPROXY_FMNIST_DIR or "
        "/usr/share/datasets/fashion-mnist)",
    )
    p.add_argument("--device", default="cpu", help="torch device to train on (cpu, cuda)")
    p.add_argument("--out", default=".", help="folder to write the checkpoint and calibration subset to")
    p.set_defaults(func=cmd_train)
