"""`evoproxy quantize`: a bit configuration's accuracy after quantization."""
from __future__ import annotations

from ..errors import EvoproxyError
from .args import add_model_args


def cmd_quantize(args) -> None:
    from ..allocation import average_bits, load_bit_config
    from ..model import MODELS, layer_registry, load_model
    from ..quant import PtqEvaluator, QuantSettings, model_bops, model_size_mb
    from ..table import format_table

    model, name = load_model(args.model, args.weights)
    if name not in MODELS:
        raise EvoproxyError("quantize measures Fashion-MNIST accuracy, so --model must be a registry model")
    layers = layer_registry(model, MODELS[name].input_shape)
    bits, act_bits = load_bit_config(args.bits_file, [l.name for l in layers])
    settings = QuantSettings(act_bits, not args.no_bn_recal)
    evaluator = PtqEvaluator.on_fmnist(model, layers, args.eval_size, settings, args.data_dir)
    full = [32] * len(layers)
    rows = [{"model": "full precision", "acc": evaluator.fp_accuracy(), "size": model_size_mb(layers, full),
             "gbops": model_bops(layers, full, 32) / 1e9, "avg": 32.0},
            {"model": f"quantized, A{act_bits}", "acc": evaluator.accuracy(bits), "size": model_size_mb(layers, bits),
             "gbops": model_bops(layers, bits, act_bits) / 1e9, "avg": average_bits(layers, bits)}]
    print(f"{name} with {args.bits_file}: Fashion-MNIST test accuracy on the first {args.eval_size} images; "
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
                                   "and print its Fashion-MNIST test accuracy, size and BOPs beside the "
                                   "full-precision model's.")
    add_model_args(p)
    p.add_argument("--bits-file", required=True, help="JSON bit configuration")
    p.add_argument("--eval-size", type=int, default=10000, help="first N test images used (default 10000, all)")
    p.add_argument("--no-bn-recal", action="store_true",
                   help="do not re-estimate BatchNorm statistics after weight quantization")
    p.add_argument("--data-dir", help="folder of the Fashion-MNIST IDX files")
    p.set_defaults(func=cmd_quantize)
