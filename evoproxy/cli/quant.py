"""`evoproxy quantize`: a bit configuration's accuracy after quantization (round-to-nearest PTQ,
or QAT with learned step sizes)."""
from __future__ import annotations

import sys

from ..errors import EvoproxyError
from .args import add_data_args, add_model_args, data_source, load_user_model

QAT_FLAGS = ("epochs", "lr", "batch_size", "optimizer", "distill", "checkpoint", "resume")


def _qat_settings(args):
    """The QatSettings of the QAT flags; an error for a QAT flag given without --method qat."""
    from ..quant import QatSettings
    given = [f"--{f.replace('_', '-')}" for f in QAT_FLAGS if getattr(args, f) not in (None, False)]
    if args.method != "qat":
        if given:
            raise EvoproxyError(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to --method qat only")
        return None
    return QatSettings(args.epochs or 1, args.lr, args.batch_size or 128, args.optimizer or "sgd", args.distill)


def cmd_quantize(args) -> None:
    from ..allocation import average_bits, load_bit_config
    from ..model import accuracy
    from ..quant import PtqEvaluator, QuantSettings, lsq_model, model_bops, model_size_mb, train_qat
    from ..table import format_table

    qat = _qat_settings(args)
    source = data_source(args)
    model, name, layers = load_user_model(args, source)
    bits, act_bits = load_bit_config(args.bits_file, [l.name for l in layers])
    train = source.training() if qat else None  # before anything slow: the default data ships no train split
    settings = QuantSettings(act_bits, not args.no_bn_recal)
    evaluator = PtqEvaluator.on_data(model, layers, args.eval_size, settings, source, args.device)
    full = [32] * len(layers)
    quantized = {"size": model_size_mb(layers, bits), "gbops": model_bops(layers, bits, act_bits) / 1e9,
                 "avg": average_bits(layers, bits)}
    rows = [{"model": "full precision", "acc": evaluator.fp_accuracy(), "size": model_size_mb(layers, full),
             "gbops": model_bops(layers, full, 32) / 1e9, "avg": 32.0},
            {"model": f"{'RTN PTQ' if qat else 'quantized'}, A{act_bits}", "acc": evaluator.accuracy(bits),
             **quantized}]
    print(f"{name} with {args.bits_file}: test accuracy on {len(evaluator.images)} images of {args.data}; "
          f"{settings.weight_quantizer} weights, BatchNorm {'re-estimated' if settings.bn_recalibration else 'kept'}")
    if qat:
        print(f"QAT: {qat.epochs} epoch(s) on {len(train[0])} training images, {qat.optimizer} lr {qat.lr:g} with a "
              f"cosine schedule, batch {qat.batch_size}, learned step sizes (LSQ) from the PTQ quantizer"
              f"{', distilled from the full-precision model' if qat.distill else ''}", flush=True)
        qmodel = lsq_model(evaluator.model, layers, bits, act_bits, evaluator.calib_images, settings.bn_recalibration)
        train_qat(qmodel, evaluator.model, train, (evaluator.images, evaluator.labels), qat, args.checkpoint,
                  args.resume, lambda msg: print(f"[qat] {msg}", file=sys.stderr, flush=True))
        # Measured again rather than read from the history: a resumed run may evaluate on another --eval-size.
        rows.append({"model": f"QAT, A{act_bits}", "acc": accuracy(qmodel, evaluator.images, evaluator.labels),
                     **quantized})
    print(format_table(rows, ["model", "acc", "size", "gbops", "avg"],
                       ["model", "top-1 (%)", "size (MB)", "GBOPs", "avg W bits"]))
    change = [row["acc"] - rows[0]["acc"] for row in rows[1:]]
    print(f"accuracy change {change[0]:+.2f} points{f' after RTN PTQ, {change[1]:+.2f} after QAT' if qat else ''} "
          f"at {rows[0]['size'] / rows[1]['size']:.1f}× smaller weights")


def register(sub) -> None:
    """Add the quantize commands to the `evoproxy` subcommands `sub`."""
    p = sub.add_parser("quantize", help="fake-quantize a model with a bit configuration and measure its accuracy",
                       description="Fake-quantize the model with the weight bits of a JSON bit configuration (as "
                                   "`evoproxy allocate` writes, or any object with 'bits' in layer-registry order) "
                                   "and print its test accuracy (on --data), size and BOPs beside the "
                                   "full-precision model's. --method qat then trains the quantized model on the "
                                   "data's train part (quantization-aware training with learned step sizes, LSQ) and "
                                   "prints its accuracy after round-to-nearest PTQ and after QAT.")
    add_model_args(p)
    p.add_argument("--bits-file", required=True, help="JSON bit configuration")
    add_data_args(p)
    p.add_argument("--eval-size", type=int, help="first N test images used (default: all)")
    p.add_argument("--no-bn-recal", action="store_true",
                   help="do not re-estimate BatchNorm statistics after weight quantization")
    p.add_argument("--method", choices=("rtn", "qat"), default="rtn",
                   help="rtn: round-to-nearest post-training quantization (default); qat: then train with learned "
                        "step sizes")
    g = p.add_argument_group("QAT (--method qat)")
    g.add_argument("--epochs", type=int, help="epochs over the data's train part (default 1)")
    g.add_argument("--lr", type=float, help="initial learning rate, decayed to 0 on a cosine (default 0.01 for sgd, "
                                            "1e-4 for adam)")
    g.add_argument("--batch-size", type=int, help="training batch size (default 128)")
    g.add_argument("--optimizer", choices=("sgd", "adam"), help="sgd (momentum 0.9, default) or adam")
    g.add_argument("--distill", action="store_true",
                   help="train on the KL divergence to the full-precision model's outputs instead of the labels")
    g.add_argument("--checkpoint", help="file written (atomically) after every epoch")
    g.add_argument("--resume", action="store_true",
                   help="continue from --checkpoint's last finished epoch (same model, bits, data and QAT flags)")
    p.set_defaults(func=cmd_quantize)
