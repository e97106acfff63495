"""`evoproxy export`: a quantized model (round-to-nearest PTQ, or QAT from its checkpoint) as an ONNX
file with QuantizeLinear/DequantizeLinear pairs, checked in onnxruntime; `evoproxy layer-config`:
a bits file as the per-layer configuration of the tools that quantize language models."""

from __future__ import annotations

import importlib.util
import sys

from ..errors import EvoproxyError
from ..files import output_file, write_atomically
from .args import add_data_args, add_model_args, data_source, evaluated_on, load_user_model


def cmd_export(args) -> None:
    from ..allocation import load_bit_config
    from ..model import check_device
    from ..quant import export_int8_onnx, export_onnx, load_qat_state, lsq_model

    output_file(args.onnx, "--onnx")
    if args.eval_size != 0 and importlib.util.find_spec("onnxruntime") is None:  # before any work
        raise EvoproxyError(
            "onnxruntime is not installed: pip install 'evoproxy[onnx]', or pass --eval-size 0 to write the file "
            "unchecked"
        )
    device = check_device(args.device)
    source = data_source(args)
    model, name, layers = load_user_model(args, source)
    bits, act_bits = load_bit_config(args.bits_file, [l.name for l in layers])
    # Before training, the LSQ model is the round-to-nearest PTQ model: one export path for both.
    calib = source.calibration()[0].to(device)
    log = lambda msg: print(f"[export] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    qmodel = lsq_model(model.to(device), layers, bits, act_bits, calib, not args.no_bn_recal, log).eval()
    if args.checkpoint:
        epochs = load_qat_state(qmodel, args.checkpoint)
        what = f"QAT model of {args.checkpoint} ({epochs} epoch(s))"
    else:
        what = f"round-to-nearest PTQ model (BatchNorm {'kept' if args.no_bn_recal else 're-estimated'})"
    images, labels = source.evaluation(args.eval_size, most=500) if args.eval_size != 0 else (None, None)
    if args.kernels == "int8":
        check, ops = export_int8_onnx(qmodel, layers, source.input_shape, args.onnx, calib, images, log)
    else:
        check, ops = export_onnx(qmodel, layers, source.input_shape, args.onnx, images, log), None
    weights, acts = sorted({b for b in bits if b < 32}), sorted({a for a in act_bits if a < 32})
    print(
        f"wrote {args.onnx}: the {what} of {name} with {args.bits_file}; QuantizeLinear/DequantizeLinear pairs on "
        f"the weights of {sum(b < 32 for b in bits)} of {len(layers)} layers"
        + (f" (per channel, int8 holding {'/'.join(map(str, weights))}-bit levels)" if weights else "")
        + (
            f" and on the inputs of {sum(a < 32 for a in act_bits)} (per tensor, uint8 holding "
            f"{'/'.join(map(str, acts))}-bit levels)"
            if acts
            else ""
        )
    )
    if ops is not None:
        print(int8_kernels_text(qmodel, layers, ops))
    if check is None:
        return
    onnx, ours = check.accuracies(labels)
    if ops is not None:
        agreement = (
            f"top-1 classes differ on {100 * check.diff:.1f} % of the images (at most {100 * check.tolerance:g} % "
            "allowed: folded BatchNorm, int32 biases and 8-bit output ranges change the numerics)"
        )
    elif check.flips is None:
        agreement = (
            f"outputs differ by at most {check.diff:.3g}, within the tolerance of two levels of the coarsest "
            "activation quantizer"
        )
    else:
        agreement = (
            f"outputs differ by at most {check.diff:.3g}, beyond two levels of the coarsest activation quantizer "
            f"({check.tolerance:.3g}): onnxruntime's float sums put {check.flips} of {check.values} activation values "
            "checked layer by layer on the neighbouring level, which later layers carry to the outputs; fed the same "
            "quantized activations, every layer computes what PyTorch computes within float rounding"
        )
    print(
        f"top-1 on {len(images)} test images of {evaluated_on(args)}: onnxruntime {onnx:.2f} %, PyTorch "
        f"fake-quantized {ours:.2f} % ({onnx - ours:+.2f} points); {agreement}"
    )


def int8_kernels_text(qmodel, layers, ops: list[str]) -> str:
    """How many of the int8 layers onnxruntime runs as integer kernels, from its optimized graph's
    `ops`; a warning if it could not fuse them all."""
    import warnings

    from ..errors import EvoproxyWarning
    from ..quant.onnx_int8 import INT8_OPS, int8_layer_names

    wanted, kernels = len(int8_layer_names(qmodel, layers)), [op for op in ops if op in INT8_OPS]
    if len(kernels) < wanted:
        warnings.warn(
            f"onnxruntime could fuse only {len(kernels)} of the {wanted} layers with 2-8-bit weights and inputs into "
            "int8 kernels: the rest run as float kernels on dequantized values",
            EvoproxyWarning,
            stacklevel=2,
        )
    counts = ", ".join(f"{kernels.count(op)} {op}" for op in sorted(set(kernels)))
    return f"onnxruntime runs {len(kernels)} of the {wanted} layers with 2-8-bit weights and inputs as int8 kernels" + (
        f" ({counts})" if counts else ""
    )


def cmd_layer_config(args) -> None:
    import json
    from pathlib import Path

    from ..allocation import EXPORTERS, load_bit_config, load_weight_format

    try:
        data = json.loads(Path(args.bits_file).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        load_bit_config(args.bits_file, [])  # raises, with the words for what is wrong with the file
        raise
    rows = data.get("layers") if isinstance(data, dict) else None
    names = [row.get("name") for row in rows if isinstance(row, dict)] if isinstance(rows, list) else []
    if not names or not all(isinstance(n, str) for n in names):
        raise EvoproxyError(f"{args.bits_file} names no layers: give a bits file that `evoproxy allocate` wrote")
    bits, _ = load_bit_config(args.bits_file, names)
    text = EXPORTERS[args.to](names, bits, load_weight_format(args.bits_file))
    if args.out:
        output_file(args.out, "--out")
        write_atomically(args.out, text)
        print(f"wrote {args.out}: {args.to} configuration of {len(names)} layers")
    else:
        print(text, end="")


def register(sub) -> None:
    """Add the export and layer-config commands to the `evoproxy` subcommands `sub`."""
    p = sub.add_parser(
        "export",
        help="write the quantized model as ONNX with QuantizeLinear/DequantizeLinear pairs",
        description="Write the model quantized with a JSON bit configuration (as `evoproxy allocate` "
        "writes) as an ONNX file whose quantized weights (per output channel, symmetric; "
        "int8 holding the levels of 2 to 8 bits) and layer inputs (per tensor, uint8 with "
        "the calibrated zero point) pass through QuantizeLinear/DequantizeLinear pairs. "
        "Without --checkpoint: the round-to-nearest PTQ model that `evoproxy quantize` "
        "measures; with it, the QAT model of `evoproxy quantize --method qat "
        "--checkpoint`, its learned step sizes as the scales. Then its accuracy in "
        "onnxruntime is printed beside the PyTorch model's (needs pip install "
        "'evoproxy[onnx]').",
    )
    add_model_args(p)
    p.add_argument("--bits-file", required=True, help="JSON bit configuration")
    p.add_argument("--onnx", required=True, help="ONNX file to write")
    p.add_argument("--checkpoint", help="QAT checkpoint (of quantize --method qat) for the same model and bits file")
    add_data_args(p)
    p.add_argument(
        "--eval-size",
        type=int,
        help="first N test images the file is checked on in onnxruntime before it is written: its outputs must "
        "match PyTorch's within two levels of the coarsest activation quantizer (default 500, or all if fewer; "
        "0: no check)",
    )
    p.add_argument(
        "--no-bn-recal",
        action="store_true",
        help="do not re-estimate BatchNorm statistics after weight quantization (as quantize's flag)",
    )
    p.add_argument(
        "--kernels",
        choices=["float", "int8"],
        default="float",
        help="float (default): the quantized model's own graph, which onnxruntime runs as float kernels on "
        "dequantized values; int8: layers with 2-8-bit weights and inputs get their BatchNorm folded in and an "
        "8-bit output range, so that onnxruntime runs them as int8 kernels (QLinearConv, QGemm); checked by "
        "top-1 agreement with the PyTorch model",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "layer-config",
        help="a bits file as the per-layer configuration of AutoRound, llama.cpp or a per-module JSON",
        description="Turn a bit configuration that `evoproxy allocate` wrote into the per-layer configuration "
        "of another tool: autoround (AutoRound's layer_config JSON, with the file's group size and "
        "symmetry), llama-cpp (llama-quantize --tensor-type arguments for Llama- or GPT-2-style module names, each "
        "layer's bits as the k-quant of that width) or modules (a plain per-module JSON).",
    )
    p.add_argument("--bits-file", required=True, help="JSON bit configuration (as `evoproxy allocate` writes)")
    p.add_argument("--to", required=True, choices=["autoround", "llama-cpp", "modules"], help="the tool's format")
    p.add_argument("--out", help="file to write (default: print)")
    p.set_defaults(func=cmd_layer_config)
