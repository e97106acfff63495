"""A `transformers` model's quantized layers as packed integers, in the compressed-tensors
"pack-quantized" format (llm-compressor's; loaded by vLLM, and by `transformers` through its
compressed-tensors quantizer), at each layer's own bit-width.

Each packed layer keeps `weight_packed` (its levels, int32 words holding bits-wide integers),
`weight_scale` (out, in/g; one per output channel when the format has no groups), `weight_shape`, and
for an asymmetric format `weight_zero_point` (packed as the levels are). The format's levels of b
bits run −2^(b−1)..2^(b−1)−1 and decode as (level − zero)·scale: the product's symmetric levels
−q..q fit as they are, its asymmetric levels 0..2^b−1 and zero-points shift down by 2^(b−1), which
leaves level − zero unchanged. Scales are stored as the product computes them: float16 values in a
group-wise or asymmetric format (stored in float16, exactly), the unrounded float steps of the
symmetric per-channel default (stored in the weight's dtype). Decoded in float32, as `transformers`
does when it loads the model in float32, every layer gives back its fake-quantized weight to the bit;
`save_packed` checks it with compressed-tensors' own decoder before it writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..errors import EvoproxyError
from ..model import LayerInfo, hf_state_dict
from ..model.attention import SplitAttention
from ..model.registry import FROM_CONV1D
from .cost import WeightFormat
from .fakequant import WeightCache
from .weights import WeightLevels

PACKED_BITS = range(1, 9)  # pack-quantized stores 1- to 8-bit integers
EXTRA = "pip install 'evoproxy[packed]'"


def compressed_tensors():
    """The compressed_tensors package, or a one-line error naming the extra that installs it."""
    try:
        import compressed_tensors
    except ImportError:
        raise EvoproxyError(f"packed integer weights need the compressed-tensors library: {EXTRA}") from None
    return compressed_tensors


def check_packable(model: nn.Module, layers: Sequence[LayerInfo], w_bits: Sequence[int]) -> None:
    """Raise a one-line EvoproxyError unless every layer below 32 bits of `model` (a `transformers`
    model) has a packed form: an nn.Linear of its own (GPT-2's Conv1D, stored as (in, out), the projections
    of nn.MultiheadAttention and a head tied to the embedding have none) at a bit-width the format stores."""
    compressed_tensors()
    embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    for layer, bits in zip(layers, w_bits):
        if bits >= 32:
            continue
        module = model.get_submodule(layer.name)
        if getattr(module, FROM_CONV1D, False):
            raise EvoproxyError(
                f"--packed: layer {layer.name} is a GPT-2 Conv1D, which compressed-tensors does not pack "
                "(it packs nn.Linear weights only): save it without --packed"
            )
        if isinstance(model.get_submodule(layer.name.rpartition(".")[0]), SplitAttention):
            raise EvoproxyError(
                f"--packed: layer {layer.name} is a projection of an nn.MultiheadAttention, whose checkpoint "
                "stores q, k and v fused (in_proj_weight) and which reads its weights as tensors: save it "
                "without --packed"
            )
        if not isinstance(module, nn.Linear):
            raise EvoproxyError(f"--packed: layer {layer.name} is not an nn.Linear, the only layer packed")
        if embedding is not None and module.weight is getattr(embedding, "weight", None):
            raise EvoproxyError(
                f"--packed: layer {layer.name} shares its weight with the embedding (tie_word_embeddings), "
                "which stays in float: keep the layer in float"
            )
        if bits not in PACKED_BITS:
            raise EvoproxyError(
                f"--packed stores {PACKED_BITS[0]}- to {PACKED_BITS[-1]}-bit integers or float (32): "
                f"layer {layer.name} has {bits} bits"
            )


def _scheme(bits: int, fmt: WeightFormat, targets: list[str]):
    """The compressed-tensors QuantizationScheme of the layers `targets` at `bits` in format `fmt`."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    grouped = dict(strategy="group", group_size=fmt.group_size) if fmt.group_size else dict(strategy="channel")
    args = QuantizationArgs(num_bits=bits, type="int", symmetric=not fmt.asymmetric, **grouped)
    return QuantizationScheme(targets=targets, weights=args, format="pack-quantized")


def _packed_tensors(at: WeightLevels, shape: torch.Size, bits: int, fmt: WeightFormat, dtype) -> dict:
    """A layer's tensors in the format, from its `quantize_levels` result `at` and weight `shape`."""
    from compressed_tensors.compressors.pack_quantized import pack_to_int32

    offset = 2 ** (bits - 1) if fmt.asymmetric else 0  # the format's levels start at −2^(b−1)
    out = shape[0]
    levels = (at.levels - offset).reshape(shape).to(torch.int8)
    scale_dtype = torch.float16 if fmt.group_size or fmt.asymmetric else dtype
    tensors = {
        "weight_packed": pack_to_int32(levels, bits),
        "weight_scale": at.scale.reshape(out, -1).to(scale_dtype),
        "weight_shape": torch.tensor(shape),
    }
    if fmt.asymmetric:
        zero = (at.zero - offset).reshape(out, -1).to(torch.int8)
        tensors["weight_zero_point"] = pack_to_int32(zero, bits, packed_dim=0)
    return tensors


def _check_decoded(name: str, tensors: dict, scheme, expected: torch.Tensor) -> None:
    """Raise unless compressed-tensors decodes the layer's `tensors`, with its scales in the weight's
    dtype (as `transformers` loads them), to `expected`, the fake-quantized weight."""
    from compressed_tensors.compressors.pack_quantized import PackedQuantizationCompressor

    state = {**tensors, "weight_scale": tensors["weight_scale"].to(expected.dtype)}
    decoded = PackedQuantizationCompressor.decompress(state, scheme)["weight"]
    if not torch.equal(decoded, expected):
        raise EvoproxyError(
            f"--packed: compressed-tensors {compressed_tensors().__version__} decodes layer {name} to other "
            "values than its fake-quantized weight; nothing written"
        )


def packed_state_dict(
    model: nn.Module, layers: Sequence[LayerInfo], w_bits: Sequence[int], cache: WeightCache
) -> tuple[dict[str, torch.Tensor], object]:
    """The state_dict of `model` (a `transformers` model, which `check_packable` accepts) in its own
    checkpoint's layout with each layer below 32 bits packed at its levels in `cache` (a WeightCache of
    `model` in the format to write; an evaluation's, which holds them already), and the compressed-tensors
    QuantizationConfig that describes them: one config group per bit-width, targeting its layers by
    name, and every other nn.Linear (the head, the layers at 32 bits) ignored, as vLLM requires."""
    from compressed_tensors.quantization import QuantizationConfig

    fmt, state = cache.fmt, hf_state_dict(model)
    by_bits: dict[int, list[str]] = {}
    for layer, bits in zip(layers, w_bits):
        if bits >= 32:
            continue
        weight, at = cache.weights[layer.index], cache.levels(layer.index, int(bits))
        tensors = _packed_tensors(at, weight.shape, int(bits), fmt, weight.dtype)
        _check_decoded(layer.name, tensors, _scheme(int(bits), fmt, [layer.name]), at.dequantize_as(weight))
        del state[f"{layer.name}.weight"]
        state.update({f"{layer.name}.{key}": value for key, value in tensors.items()})
        by_bits.setdefault(int(bits), []).append(layer.name)
    packed = {name for names in by_bits.values() for name in names}
    config = QuantizationConfig(
        config_groups={f"group_{i}": _scheme(b, fmt, by_bits[b]) for i, b in enumerate(sorted(by_bits))},
        format="pack-quantized",
        quantization_status="compressed",
        ignore=[n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n not in packed],
    )
    return state, config


def save_packed(
    model: nn.Module,
    layers: Sequence[LayerInfo],
    w_bits: Sequence[int],
    cache: WeightCache,
    folder: str | Path,
) -> None:
    """Write `model` (a `transformers` model) with its layers packed at `w_bits`, at the levels of
    `cache` (`packed_state_dict`), to `folder` with save_pretrained, its config.json holding the
    compressed-tensors quantization_config (as llm-compressor writes it), so that
    `AutoModelForCausalLM.from_pretrained(folder)` loads it."""
    from compressed_tensors.compressors import ModelCompressor

    state, config = packed_state_dict(model, layers, w_bits, cache)
    model.save_pretrained(folder, state_dict=state)
    ModelCompressor(quantization_config=config).update_config(str(folder))
