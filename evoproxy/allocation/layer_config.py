"""A bit configuration as the per-layer configuration of the tools that quantize language models,
so that an allocation found here runs where their users run it (`evoproxy layer-config`):

  autoround  AutoRound's `layer_config`: {layer name: {"bits", "group_size" (-1 per channel), "sym"}}
  llama-cpp  `llama-quantize` arguments, one `--tensor-type REGEX=TYPE` per layer, for Llama- and
             GPT-2-style module names (model.layers.N.self_attn.q_proj, ...) mapped to GGUF tensor names
             (blk.N.attn_q.weight, ...); bits pick the k-quant of that width (Q2_K ... Q6_K, Q8_0)
  modules    a plain per-module JSON: the weight format, then {layer name: {"bits": b}}

EXPORTERS maps each name to a function (layer names, weight bits, weight format) → text; callers
can add their own."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence

from ..errors import EvoproxyError
from ..quant import WeightFormat

# llama.cpp's type of each width: the k-quants (blocks of 256 with 6-bit or 8-bit sub-scales), 8-bit plain.
LLAMA_CPP_TYPES = {2: "q2_K", 3: "q3_K", 4: "q4_K", 5: "q5_K", 6: "q6_K", 8: "q8_0"}
# Module names of transformers' Llama-style models (Llama, Qwen2, Mistral) and of GPT-2, and their GGUF
# tensor names (llama.cpp's gguf-py tensor_mapping).
GGUF_NAMES = [
    (re.compile(r"^model\.layers\.(\d+)\.self_attn\.([qkv])_proj$"), r"blk.\1.attn_\2"),
    (re.compile(r"^model\.layers\.(\d+)\.self_attn\.o_proj$"), r"blk.\1.attn_output"),
    (re.compile(r"^model\.layers\.(\d+)\.mlp\.(gate|up|down)_proj$"), r"blk.\1.ffn_\2"),
    (re.compile(r"^transformer\.h\.(\d+)\.attn\.c_attn$"), r"blk.\1.attn_qkv"),
    (re.compile(r"^transformer\.h\.(\d+)\.attn\.c_proj$"), r"blk.\1.attn_output"),
    (re.compile(r"^transformer\.h\.(\d+)\.mlp\.c_fc$"), r"blk.\1.ffn_up"),
    (re.compile(r"^transformer\.h\.(\d+)\.mlp\.c_proj$"), r"blk.\1.ffn_down"),
    (re.compile(r"^lm_head$"), "output"),
]


def autoround(names: Sequence[str], bits: Sequence[int], fmt: WeightFormat) -> str:
    """AutoRound's `layer_config` JSON for the layers `names` at weight `bits`."""
    group = fmt.group_size or -1
    config = {n: {"bits": b, "group_size": group, "sym": not fmt.asymmetric} for n, b in zip(names, bits)}
    return json.dumps(config, indent=2) + "\n"


def gguf_name(name: str) -> str:
    """The GGUF tensor name (without `.weight`) of a Llama- or GPT-2-style module name; an error for others."""
    for pattern, replacement in GGUF_NAMES:
        if pattern.match(name):
            return pattern.sub(replacement, name)
    raise EvoproxyError(
        f"layer {name} has no GGUF tensor name: llama-cpp takes Llama-style module names "
        "(model.layers.N.self_attn.q_proj, model.layers.N.mlp.down_proj, lm_head) or GPT-2's "
        "(transformer.h.N.attn.c_attn, transformer.h.N.mlp.c_proj, ...)"
    )


def llama_cpp(names: Sequence[str], bits: Sequence[int], fmt: WeightFormat) -> str:
    """`llama-quantize` arguments that give each layer the k-quant of its bits, one per line."""
    unknown = sorted({b for b in bits if b not in LLAMA_CPP_TYPES})
    if unknown:
        raise EvoproxyError(
            f"llama.cpp has no type of {', '.join(map(str, unknown))} bits here: use bits of {sorted(LLAMA_CPP_TYPES)}"
        )
    lines = [f"--tensor-type {re.escape(gguf_name(n) + '.weight')}={LLAMA_CPP_TYPES[b]}" for n, b in zip(names, bits)]
    return "\n".join(lines) + "\n"


def modules(names: Sequence[str], bits: Sequence[int], fmt: WeightFormat) -> str:
    """A per-module JSON: the weight format, then each layer's bits."""
    config = {
        "group_size": fmt.group_size,
        "asymmetric": fmt.asymmetric,
        "scale_bits": 16,
        "modules": {n: {"bits": b} for n, b in zip(names, bits)},
    }
    return json.dumps(config, indent=2) + "\n"


EXPORTERS: dict[str, Callable[[Sequence[str], Sequence[int], WeightFormat], str]] = {
    "autoround": autoround,
    "llama-cpp": llama_cpp,
    "modules": modules,
}
