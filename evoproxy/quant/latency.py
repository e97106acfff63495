"""Per-layer latency on this machine in onnxruntime, the table of HAWQ-V3's latency constraint:
each quantizable layer alone, at its real input shape, written by `export_onnx` as a one-layer
ONNX graph at each weight/activation bit option, timed as the median of repeats after warm-up.

Four graphs are timed per layer, each with what follows the layer in an exported file (the
BatchNorm and ReLU right after it), the rest of the options cost what one of them costs:

- W8A8, quantized weights and input: with `graph="int8"` the layer without its bias (an int8
  kernel adds it as int32 inside) and with a QuantizeLinear/DequantizeLinear pair on its output,
  so that onnxruntime fuses the pairs into its int8 kernels (QLinearConv, QLinearMatMul, ...):
  what the layer costs in an integer deployment (the export folds the BatchNorm into it and the
  output pair absorbs the ReLU, so none follows it). With `graph="export"` the layer exactly as
  `evoproxy export` writes it: input and weight pairs only, bias after, which onnxruntime runs
  as a float kernel with the pairs' Quantize/DequantizeLinear at run time. Weights of 2 to 7
  bits are int8 holding fewer levels, with no faster kernel: they cost what W8A8 costs.
- W8A32 (weights only; 2 to 7 bits likewise), W32A8 (input only) and W32A32 (float): as the
  export writes them, under either `graph`.

What no one-layer graph holds is measured beside them. A layer's `switch_ms` is what changing
between an int8 and a float kernel costs at its input (where the previous layer runs the other
kind): a QuantizeLinear and a DequantizeLinear on its input tensor, one each way, which stands in
for the single conversion plus the layout change (Transpose, Reorder) that the file runs there.
The whole model in float, as `evoproxy export` writes it at 32 bits, is timed with every layer's
graphs; the table's `overhead_ms` is its latency less its layers' W32A32 entries: the session
call, the residual additions, pooling, and whatever running the layers together costs more than
running them apart (caches). Each entry is net of an empty graph's run on the layer's input (the
session call and the transfers, which the overhead holds once). Each entry names the kernel
onnxruntime ran (from its optimized graph): "int8" (integer multiplies), "int8 weights"
(MatMulNBits: integer weights, float inputs) or "float".
"""

from __future__ import annotations

import copy
import itertools
import os
import platform
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from time import perf_counter

import numpy as np
import torch
from torch import nn

from ..errors import EvoproxyError
from ..model import LayerInfo, layer_registry, quantizable_modules, run_with_outputs
from ..params import Interval, OneOf, check_parameters
from .adaround import block_calls
from .onnx_export import export_onnx
from .onnx_int8 import INT8_OPS, OutputQdq, followers
from .onnx_runtime import ort_session
from .qat import lsq_model

FORMAT = "evoproxy-latency/2"
W_OPTIONS = (2, 3, 4, 5, 6, 7, 8, 32)  # the weight bits allocation takes (at least 2) that ONNX QDQ holds
A_OPTIONS = (8, 32)
FLOAT = 32
GRAPHS = ((8, 8), (8, FLOAT), (FLOAT, 8), (FLOAT, FLOAT))  # (weight, activation) bits timed per layer
CALIB_SAMPLES = 8  # inputs the quantizers' ranges are calibrated on: ranges change no kernel
BLOCK = 10  # consecutive timed runs of one graph: the first, in cold caches, leaves the median alone


@dataclass(frozen=True)
class LatencySettings:
    """How layers are timed: `graph` "int8" (fully quantized options as onnxruntime's int8
    kernels) or "export" (as `evoproxy export` writes them); `batch_size` samples per run;
    `threads` onnxruntime's intra-op threads (inter-op: 1); `warmup` runs, then `repeats` timed
    runs of every graph of a layer in turn (BLOCK at a time), whose median is the latency."""

    graph: str = "int8"
    batch_size: int = 1
    threads: int = 1
    repeats: int = 100
    warmup: int = 10

    CONSTRAINTS = {
        "graph": OneOf(("int8", "export")),
        "batch_size": Interval(1, 65536, integer=True),
        "threads": Interval(1, 1024, integer=True),
        "repeats": Interval(1, 1_000_000, integer=True),
        "warmup": Interval(0, 1_000_000, integer=True),
    }

    def __post_init__(self) -> None:
        check_parameters(self)


def _ort():
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise EvoproxyError("onnxruntime and onnx are not installed: pip install 'evoproxy[onnx]'") from None
    return onnx, onnxruntime


def _kernel(ops: set[str]) -> str:
    if ops & INT8_OPS:
        return "int8"
    return "int8 weights" if "MatMulNBits" in ops else "float"


def _median_ms(runs: Sequence[tuple], settings: LatencySettings) -> list[float]:
    """Median milliseconds of each (session, feed) of `runs`: warm-up, then the runs in turn, BLOCK
    at a time, so that a slower spell of a shared machine falls on all of them alike while each
    runs with its own weights in the caches, as a model run after run does (one run each in turn
    evicts them: a file timed so measured up to 1.6 times its time alone)."""
    for session, feed in runs:
        for _ in range(settings.warmup):
            session.run(None, feed)
    times = np.empty((settings.repeats, len(runs)))
    for start in range(0, settings.repeats, BLOCK):
        for i, (session, feed) in enumerate(runs):
            for r in range(start, min(start + BLOCK, settings.repeats)):
                t0 = perf_counter()
                session.run(None, feed)
                times[r, i] = perf_counter() - t0
    return (np.median(times, axis=0) * 1e3).tolist()


def _plain_graph(path: Path, example: torch.Tensor, switch: bool) -> None:
    """An ONNX graph on input "input" that only hands it back (what any graph's run costs on it), or
    with `switch`, back through a uint8 QuantizeLinear and a DequantizeLinear (an int8/float switch)."""
    onnx, _ = _ort()
    from onnx import helper, numpy_helper

    dtype = helper.np_dtype_to_tensor_dtype(example.numpy().dtype)
    shape = ["batch", *example.shape[1:]]
    pair = [numpy_helper.from_array(np.array(0.05, np.float32), "scale")]
    pair.append(numpy_helper.from_array(np.array(128, np.uint8), "zero"))
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "scale", "zero"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes if switch else [helper.make_node("Identity", ["input"], ["output"])],
        "switch" if switch else "empty",
        [helper.make_tensor_value_info("input", dtype, shape)],
        [helper.make_tensor_value_info("output", dtype, shape)],
        initializer=pair if switch else [],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _one_layer(
    module: nn.Module, after: list[nn.Module], x: torch.Tensor, w: int, a: int, settings: LatencySettings, path: Path
) -> None:
    """Write `module` and the modules `after` it, at `w`-bit weights and `a`-bit input, calibrated on
    `x`, to `path`."""
    layer = copy.deepcopy(module)
    if settings.graph == "int8" and max(w, a) < FLOAT:
        layer.bias = None
        with torch.no_grad():
            y = layer(x)
        single = nn.Sequential(layer, OutputQdq.over(y))
    else:
        single = nn.Sequential(layer, *copy.deepcopy(after))
    layers = layer_registry(single, tuple(x.shape[1:]))
    qmodel = lsq_model(single, layers, [w], a, x, bn_recalibration=False).eval()
    export_onnx(qmodel, layers, tuple(x.shape[1:]), path)


def _layer_inputs(model: nn.Module, layers: Sequence[LayerInfo], images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each layer's input (its first call's) when `model` runs on `images`."""
    run_with_outputs(model, images[:1], {}, None, "the model does not run on the data's inputs")
    with torch.no_grad():
        return {l.name: block_calls(model, l.name, images, len(images), inputs=True)[0][0][0] for l in layers}


def _processor() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what `platform` knows."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    names = [line.partition(":")[2].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or platform.machine()


def machine() -> dict:
    """What the table was measured on."""
    _, ort = _ort()
    return {
        "platform": platform.platform(),
        "processor": _processor(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
    }


def _measure_layer(
    module: nn.Module,
    after: list[nn.Module],
    x: torch.Tensor,
    batch: torch.Tensor,
    wholes: list[tuple],
    settings: LatencySettings,
    folder: Path,
):
    """The GRAPHS of `module` followed by `after` (inputs `x`: its first CALIB_SAMPLES calibrate,
    `batch` of them are timed), each {ms, kernel, ops}, and the switch graph's ms, net of an empty
    graph's run; that run's ms; and the ms of each of `wholes` (session, feed), timed among them."""
    onnx, _ = _ort()
    feed = {"input": x[batch].numpy()}
    runs, ops = [], []
    for w, a in GRAPHS:
        path = folder / f"W{w}A{a}.onnx"
        _one_layer(module, after, x[:CALIB_SAMPLES], w, a, settings, path)
        runs.append((ort_session(path, settings.threads, folder / "optimized.onnx"), feed))
        ops.append(sorted({node.op_type for node in onnx.load(str(folder / "optimized.onnx")).graph.node}))
    for name, switch in (("switch", True), ("empty", False)):
        _plain_graph(folder / f"{name}.onnx", x[:1], switch)
        runs.append((ort_session(folder / f"{name}.onnx", settings.threads), feed))
    all_ms = _median_ms([*runs, *wholes], settings)
    *times, switch, empty = all_ms[: len(runs)]
    measured = {
        f"W{w}A{a}": {"ms": max(t - empty, 0.0), "kernel": _kernel(set(o)), "ops": o}
        for (w, a), t, o in zip(GRAPHS, times, ops)
    }
    return measured, max(switch - empty, 0.0), empty, all_ms[len(runs) :]


def _options(measured: dict) -> list[dict]:
    """Every (w_bits, a_bits) of W_OPTIONS × A_OPTIONS with the ms and kernel of the graph it is
    `measured_as`: 2 to 8 bits the 8-bit graph's."""
    out = []
    for w, a in itertools.product(W_OPTIONS, A_OPTIONS):
        graph = f"W{8 if w < FLOAT else FLOAT}A{a}"
        out.append(
            {
                "w_bits": w,
                "a_bits": a,
                "ms": measured[graph]["ms"],
                "kernel": measured[graph]["kernel"],
                "measured_as": graph,
            }
        )
    return out


def measure_latency(
    model: nn.Module,
    layers: Sequence[LayerInfo],
    images: torch.Tensor,
    *,
    model_name: str,
    settings: LatencySettings = LatencySettings(),
    log: Callable[[str], None] = lambda msg: None,
    beside: Sequence[str | Path] = (),
) -> dict:
    """The latency table of `model`'s `layers` (its layer registry) as a JSON-ready dict (format
    FORMAT), each layer timed at the input it receives when `model` runs on `images` (N, ...:
    the first CALIB_SAMPLES calibrate the quantizers, the first `settings.batch_size`, repeated
    if fewer, are timed). Per layer: the GRAPHS `measured` and every (w_bits, a_bits) of W_OPTIONS
    × A_OPTIONS in `options`, with its `ms`, `kernel` and the graph it was `measured_as`, and its
    `switch_ms`; the whole float model's `float_model_ms` and the `overhead_ms` (module docstring);
    `log` gets one line per layer. The ONNX files `beside` (whole models, input "input") are timed
    as the float model is, among every layer's graphs, so that the load of a shared machine falls on
    them and the table alike: their ms in `beside_ms`."""
    _ort()
    model = model.cpu().float().eval()
    images = images[: max(CALIB_SAMPLES, settings.batch_size)].cpu()
    batch = torch.arange(settings.batch_size) % len(images)
    modules = dict(quantizable_modules(model))
    inputs = _layer_inputs(model, layers, images)
    after = followers(model, [l.name for l in layers])
    rows, model_ms = [], []
    with tempfile.TemporaryDirectory(prefix="evoproxy-latency-") as tmp:
        folder = Path(tmp)
        shape = tuple(images.shape[1:])
        qmodel = lsq_model(model, layers, [FLOAT] * len(layers), FLOAT, images[:CALIB_SAMPLES], bn_recalibration=False)
        export_onnx(qmodel.eval(), layers, shape, folder / "model.onnx")
        feed = {"input": images[batch].numpy()}
        wholes = [(ort_session(Path(f), settings.threads), feed) for f in [folder / "model.onnx", *beside]]
        for layer in layers:
            x = inputs[layer.name].float()
            measured, switch, empty, ms = _measure_layer(
                modules[layer.name], after[layer.name], x, batch, wholes, settings, folder
            )
            model_ms.append(ms)
            rows.append(
                {
                    "index": layer.index,
                    "name": layer.name,
                    "kind": layer.kind,
                    "input_shape": [settings.batch_size, *x.shape[1:]],
                    "empty_ms": empty,
                    "switch_ms": switch,
                    "measured": measured,
                    "options": _options(measured),
                }
            )
            log(
                f"layer {layer.index + 1}/{len(layers)} {layer.name}: "
                + ", ".join(f"{k} {v['ms']:.4f} ms ({v['kernel']})" for k, v in measured.items())
                + f", switch {switch:.4f} ms"
            )
    float_model_ms, *beside_ms = np.median(model_ms, axis=0).tolist()
    overhead_ms = max(float_model_ms - sum(r["measured"]["W32A32"]["ms"] for r in rows), 0.0)
    return {
        "format": FORMAT,
        "model": model_name,
        "machine": machine(),
        "settings": asdict(settings),
        "float_model_ms": float_model_ms,
        **({"beside_ms": beside_ms} if beside else {}),
        "overhead_ms": overhead_ms,
        "layers": rows,
    }
