"""`evoproxy quantize`: a bit configuration's accuracy after quantization."""
from __future__ import annotations

from .args import add_data_args, add_model_args, data_source, load_user_model


def cmd_quantize(args) -> None:
    from ..allocation import average_bits, load_bit_config
    from ..quant import PtqEvaluator, QuantSettings, model_bops, model_size_mb
    from ..table import format_table

    source = data_source(args)
    model, name, layers = load_user_model(args, source)
    bits, act_bits = load_bit_config(args.bits_file, [l.name for l in layers])
    settings = QuantSettings(act_bits, not args.no_bn_recal)
    evaluator = PtqEvaluator.on_data(model, layers, args.eval_size, settings, source, args.device)
    full = [32] * len(layers)
    rows = [{"model": "full precision", "acc": evaluator.fp_accuracy(), "size": model_size_mb(layers, full),
             "gbops": model_bops(layers, full, 32) / 1e9, "avg": 32.0},
            {"model": f"quantized, A{act_bits}", "acc": evaluator.accuracy(bits), "size": model_size_mb(layers, bits),
             "gbops": model_bops(layers, bits, act_bits) / 1e9, "avg": average_bits(layers, bits)}]
    print(f"{name} with {args.bits_file}: test accuracy on {len(evaluator.images)} images of {args.data}; "
          f"{settings.weight_quantizer} weights, BatchNorm {'re-estimated' if settings.bn_recalibration else 'kept'}")
    print(format_table(rows, ["model", "acc", "size", "gbops", "avg"],
                       ["model", "top-1 (%)", "size (MB)", "GBOPs", "avg W bits"]))
    print(f"accuracy change {rows[1]['acc'] - rows[0]['acc']:+.2f} points at "
          f"{rows[0]['size'] / rows[1]['size']:.1f}× smaller weights")


def register(sub) -> None:
    """Add the quantize commands to the `evoproxy` subcommands `sub`."""
    p = sub.add_parser("quantize", help="fake-quantize a model with a bit configuration and measure its accuracy",
                       description="Fake-quantize the model with the weight bits of a JSON bit configuration (as "
                                   "`evoproxy allocate` writes, or any object with 'bits' in layer-registry order) "
                                   "and print its test accuracy (on --data), size and BOPs beside the "
                                   "full-precision model's.")
    add_model_args(p)
    p.add_argument("--bits-file", required=True, help="JSON bit configuration")
    add_data_args(p)
    p.add_argument("--eval-size", type=int, help="first N test images used (default: all)")
    p.add_argument("--no-bn-recal", action="store_true",
                   help="do not re-estimate BatchNorm statistics after weight quantization")
    p.set_defaults(func=cmd_quantize)
