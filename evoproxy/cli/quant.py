"""`evoproxy quantize`: a bit configuration's accuracy after quantization (round-to-nearest PTQ,
PTQ with learned rounding (AdaRound), or QAT with learned step sizes)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import EvoproxyError
from ..files import filling, output_folder
from .args import (
    TEXT_EVAL_SIZE,
    add_data_args,
    add_model_args,
    data_source,
    evaluated_on,
    load_user_model,
)
from .bits import add_weight_format_args, weight_format_args

METHOD_FLAGS = {
    "qat": ("epochs", "lr", "batch_size", "optimizer", "distill", "checkpoint", "resume"),
    "adaround": ("iters", "lr", "batch_size", "reg_weight"),
}
METHOD_NAMES = {"qat": "QAT", "adaround": "AdaRound"}


def _method_settings(args):
    """The QatSettings or AdaRoundSettings of the method's flags, the settings' defaults where a
    flag is not given (None for rtn); an error for a flag of another method."""
    from dataclasses import fields

    from ..quant import AdaRoundSettings, QatSettings

    owners: dict[str, list[str]] = {}
    for method, flags in METHOD_FLAGS.items():
        for flag in flags:
            owners.setdefault(flag, []).append(method)
    wrong: dict[str, list[str]] = {}
    for flag, methods in owners.items():
        if getattr(args, flag) not in (None, False) and args.method not in methods:
            wrong.setdefault(" or ".join(methods), []).append(f"--{flag.replace('_', '-')}")
    if wrong:
        raise EvoproxyError(
            "; ".join(
                f"{', '.join(flags)} appl{'ies' if len(flags) == 1 else 'y'} to --method {methods} only"
                for methods, flags in wrong.items()
            )
        )
    if args.method == "rtn":
        return None
    settings = QatSettings if args.method == "qat" else AdaRoundSettings
    names = {f.name for f in fields(settings)} & set(METHOD_FLAGS[args.method])
    return settings(**{name: getattr(args, name) for name in names if getattr(args, name) is not None})


def cmd_quantize(args) -> None:
    from torch import nn

    from ..allocation import act_bits_label, load_bit_config, load_weight_format
    from ..quant import (
        PtqEvaluator,
        QuantSettings,
        adaround_model,
        average_bits,
        lsq_model,
        model_bops,
        model_size_mb,
        train_qat,
    )
    from ..table import format_table

    method = _method_settings(args)
    source = data_source(args)
    model, name, layers = load_user_model(args, source)
    bits, act_bits = load_bit_config(args.bits_file, [l.name for l in layers])
    _check_save_pretrained(args, model, layers, bits, act_bits)  # before anything slow
    # Before anything slow: the default data ships no train split.
    train = source.training() if args.method == "qat" else None
    if args.group_size is None and not args.asymmetric:  # the format the bits were allocated for
        fmt = load_weight_format(args.bits_file)
        args.group_size, args.asymmetric = str(fmt.group_size or "channel"), fmt.asymmetric
    settings = QuantSettings(act_bits, not args.no_bn_recal, **weight_format_args(args))
    fmt = settings.weight_format
    fmt.check_layers(layers)
    if method and fmt != type(fmt)():
        raise EvoproxyError(
            f"--method {args.method} learns per-channel symmetric steps: leave out --group-size and --asymmetric, "
            "or use --method rtn"
        )

    def log(msg: str) -> None:
        print(f"[{args.method}] {msg}", file=sys.stderr, flush=True)

    evaluator = PtqEvaluator.on_data(model, layers, args.eval_size, settings, source, args.device, log)
    metric = evaluator.metric
    full, act_label = [32] * len(layers), act_bits_label(act_bits)
    quantized = {
        "size": model_size_mb(layers, bits, fmt=fmt),
        "gbops": model_bops(layers, bits, act_bits) / 1e9,
        "avg": average_bits(layers, bits, fmt),
    }
    rows = [
        {
            "model": "full precision",
            "acc": evaluator.fp_value(),
            "size": model_size_mb(layers, full),
            "gbops": model_bops(layers, full, 32) / 1e9,
            "avg": 32.0,
        },
        {"model": f"{'RTN PTQ' if method else 'quantized'}, {act_label}", "acc": evaluator.measure(bits), **quantized},
    ]
    batchnorm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    print(
        f"{name} with {args.bits_file}: test {metric.name} on {len(evaluator.images)} "
        f"{'windows' if source.is_text else 'images'} of {evaluated_on(args)}; {settings.weight_quantizer} weights"
        + (f", BatchNorm {'re-estimated' if settings.bn_recalibration else 'kept'}" if batchnorm else "")
    )

    if args.method == "qat":
        print(
            f"QAT: {method.epochs} epoch(s) on {len(train[0])} training images, {method.optimizer} lr {method.lr:g} "
            f"with a cosine schedule, batch {method.batch_size}, learned step sizes (LSQ) from the PTQ quantizer"
            f"{', distilled from the full-precision model' if method.distill else ''}",
            flush=True,
        )
        qmodel = lsq_model(
            evaluator.model, layers, bits, act_bits, evaluator.calib_images, settings.bn_recalibration, log
        )
        train_qat(
            qmodel,
            evaluator.model,
            train,
            (evaluator.images, evaluator.labels),
            method,
            args.checkpoint,
            args.resume,
            log,
        )
    elif args.method == "adaround":
        print(
            f"AdaRound: {method.iters} Adam iterations per block (lr {method.lr:g}, batch {method.batch_size}, "
            f"rounding regulariser weight {method.reg_weight:g}) on {len(evaluator.calib_images)} calibration "
            "images, learned rounding at the PTQ quantizer's steps, reconstructed block by block with float "
            "activations",
            flush=True,
        )
        qmodel, _ = adaround_model(
            evaluator.model, layers, bits, evaluator.calib_images, method, settings, evaluator.cache, log
        )
    if method:
        # Measured again rather than read from the history: a resumed QAT may evaluate on another --eval-size.
        rows.append(
            {
                "model": f"{METHOD_NAMES[args.method]}, {act_label}",
                "acc": metric.measure(qmodel, evaluator.images, evaluator.labels, log=log),
                **quantized,
            }
        )
    print(
        format_table(
            rows,
            ["model", "acc", "size", "gbops", "avg"],
            ["model", "top-1 (%)" if metric.unit == "%" else metric.title, "size (MB)", "GBOPs", "avg W bits"],
        )
    )
    if args.save_pretrained:
        _save_pretrained(args, evaluator, layers, bits, settings)
    change = [row["acc"] - rows[0]["acc"] for row in rows[1:]]
    after = f" after RTN PTQ, {change[1]:+.2f} after {METHOD_NAMES[args.method]}" if method else ""
    change_text = (
        f"accuracy change {change[0]:+.2f} points" if metric.unit == "%" else f"{metric.title} change {change[0]:+.3f}"
    )
    print(f"{change_text}{after} at {rows[0]['size'] / rows[1]['size']:.1f}× smaller weights")


def _check_save_pretrained(args, model, layers, bits, act_bits) -> None:
    """Refuse, in one line, a --save-pretrained (or --packed) that cannot be written as asked."""
    from ..quant import check_packable

    if args.packed and not args.save_pretrained:
        raise EvoproxyError("--packed is how --save-pretrained writes the weights: give --save-pretrained DIR")
    if not args.save_pretrained:
        return
    if not hasattr(model, "save_pretrained"):
        raise EvoproxyError("--save-pretrained writes a transformers model: give --model hf:PATH")
    if args.method != "rtn" or any(a < 32 for a in act_bits):
        raise EvoproxyError(
            "--save-pretrained writes round-to-nearest weights only: use --method rtn and a bits file with "
            "act_bits 32 (weights only)"
        )
    if args.packed:
        check_packable(model, layers, bits)
    output_folder(args.save_pretrained, "--save-pretrained")


def _save_pretrained(args, evaluator, layers, bits, settings) -> None:
    """Write the round-to-nearest weights to --save-pretrained with save_pretrained: fake-quantized
    (dequantized floats in the model's own format, for the user's evaluation harness), or --packed;
    both from the evaluator's cache, which the evaluation filled with them."""
    from ..model import hf_state_dict
    from ..quant import quantize_model, save_packed

    folder = Path(args.save_pretrained)
    with filling(folder) as tmp:
        if args.packed:
            save_packed(evaluator.model, layers, bits, evaluator.cache, tmp)
        else:
            qmodel = quantize_model(evaluator.model, layers, bits, evaluator.calib_images, settings, evaluator.cache)
            qmodel.save_pretrained(tmp, state_dict=hf_state_dict(qmodel))
    size = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    what = (
        f"packed integer weights (compressed-tensors pack-quantized, {settings.weight_format.describe()})"
        if args.packed
        else "the fake-quantized model, as save_pretrained writes it"
    )
    print(f"wrote {args.save_pretrained}: {what}; {size} bytes of safetensors")


def register(sub) -> None:
    """Add the quantize commands to the `evoproxy` subcommands `sub`."""
    p = sub.add_parser(
        "quantize",
        help="fake-quantize a model with a bit configuration and measure its accuracy",
        description="Fake-quantize the model with the weight and activation bits of a JSON bit "
        "configuration (as `evoproxy allocate` writes, or any object with 'bits' in "
        "layer-registry order and optionally 'act_bits', one or one per layer) "
        "and print its test accuracy (on --data), size and BOPs beside the "
        "full-precision model's. --method adaround then learns each weight's rounding "
        "(AdaRound) block by block on the calibration images, and --method qat trains the "
        "quantized model on the data's train part (quantization-aware training with "
        "learned step sizes, LSQ); both print the accuracy after round-to-nearest PTQ "
        "beside theirs.",
    )
    add_model_args(p)
    p.add_argument("--bits-file", required=True, help="JSON bit configuration")
    add_data_args(p)
    p.add_argument(
        "--eval-size",
        type=int,
        help=f"first N test images used (default: all; language models {TEXT_EVAL_SIZE} windows)",
    )
    p.add_argument(
        "--no-bn-recal", action="store_true", help="do not re-estimate BatchNorm statistics after weight quantization"
    )
    add_weight_format_args(p, "the bits file's, else channel")
    p.add_argument(
        "--save-pretrained",
        metavar="DIR",
        help="hf:PATH models: write the fake-quantized model (round-to-nearest weights) to DIR with "
        "save_pretrained, to score it in your own evaluation harness",
    )
    p.add_argument(
        "--packed",
        action="store_true",
        help="with --save-pretrained: write each quantized layer as packed integers at its own bits, with "
        "its scales and zero-points (compressed-tensors pack-quantized, as llm-compressor writes; "
        "loaded by transformers and vLLM), instead of dequantized floats",
    )
    p.add_argument(
        "--method",
        choices=("rtn", "adaround", "qat"),
        default="rtn",
        help="rtn: round-to-nearest post-training quantization (default); adaround: PTQ with learned "
        "rounding, reconstructed block by block on the calibration images; qat: train with learned "
        "step sizes",
    )
    g = p.add_argument_group("AdaRound and QAT (--method adaround, --method qat)")
    g.add_argument(
        "--lr",
        type=float,
        help="learning rate (adaround: Adam's, default 0.01; qat: the initial rate, "
        "decayed to 0 on a cosine, default 0.01 for sgd, 1e-4 for adam)",
    )
    g.add_argument(
        "--batch-size",
        type=int,
        help="batch size (adaround: calibration images per step, default 32; qat: training images, default 128)",
    )
    g = p.add_argument_group("AdaRound (--method adaround)")
    g.add_argument("--iters", type=int, help="Adam iterations per block (default 1000)")
    g.add_argument(
        "--reg-weight",
        type=float,
        help="weight of the regulariser that drives each rounding to down or up (default 0.01)",
    )
    g = p.add_argument_group("QAT (--method qat)")
    g.add_argument("--epochs", type=int, help="epochs over the data's train part (default 1)")
    g.add_argument("--optimizer", choices=("sgd", "adam"), help="sgd (momentum 0.9, default) or adam")
    g.add_argument(
        "--distill",
        action="store_true",
        help="train on the KL divergence to the full-precision model's outputs instead of the labels",
    )
    g.add_argument("--checkpoint", help="file written (atomically) after every epoch")
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue from --checkpoint's last finished epoch (same model, bits, data and QAT flags)",
    )
    p.set_defaults(func=cmd_quantize)
