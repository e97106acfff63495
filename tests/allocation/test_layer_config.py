"""A bits file as the per-layer configuration of AutoRound, llama.cpp and a per-module JSON."""

import json
import re

import pytest

from evoproxy.allocation import EXPORTERS
from evoproxy.cli import main
from evoproxy.errors import EvoproxyError
from evoproxy.quant import WeightFormat

LLAMA = [
    "model.layers.3.self_attn.q_proj",
    "model.layers.3.self_attn.v_proj",
    "model.layers.3.self_attn.o_proj",
    "model.layers.3.mlp.down_proj",
    "model.layers.13.mlp.gate_proj",
]


def test_llama_cpp_arguments_name_each_gguf_tensor_and_no_other():
    lines = EXPORTERS["llama-cpp"](LLAMA, [2, 3, 4, 6, 8], WeightFormat(128)).splitlines()
    rules = [line.removeprefix("--tensor-type ").split("=") for line in lines]
    assert [t for _, t in rules] == ["q2_K", "q3_K", "q4_K", "q6_K", "q8_0"]
    tensors = ["blk.3.attn_q.weight", "blk.3.attn_v.weight", "blk.3.attn_output.weight", "blk.3.ffn_down.weight"]
    tensors.append("blk.13.ffn_gate.weight")
    for (pattern, _), tensor in zip(rules, tensors):  # llama-quantize searches each name with the pattern
        assert [t for t in [*tensors, "blk.3.attn_qkv.weight", "blk.1.ffn_gate.weight"] if re.search(pattern, t)] == [
            tensor
        ]


def test_llama_cpp_refuses_names_and_bits_it_has_no_counterpart_for():
    with pytest.raises(EvoproxyError, match="blocks.0.attn.q has no GGUF tensor name"):
        EXPORTERS["llama-cpp"](["blocks.0.attn.q"], [4], WeightFormat())
    with pytest.raises(EvoproxyError, match="no type of 7 bits"):
        EXPORTERS["llama-cpp"](LLAMA[:1], [7], WeightFormat())


@pytest.mark.parametrize("fmt, group, sym", [(WeightFormat(), -1, True), (WeightFormat(64, True), 64, False)])
def test_autoround_layer_config_carries_each_layers_bits_and_the_format(fmt, group, sym):
    config = json.loads(EXPORTERS["autoround"](LLAMA[:2], [2, 4], fmt))
    assert config == {
        LLAMA[0]: {"bits": 2, "group_size": group, "sym": sym},
        LLAMA[1]: {"bits": 4, "group_size": group, "sym": sym},
    }


def test_layer_config_reads_the_names_and_format_of_an_allocation(tmp_path, capsys):
    layers = [{"name": n, "bits": b} for n, b in zip(LLAMA, [2, 3, 4, 4, 3])]
    record = {"bits": [2, 3, 4, 4, 3], "act_bits": 32, "group_size": 128, "layers": layers}
    (tmp_path / "a.json").write_text(json.dumps(record))
    assert main(["layer-config", "--bits-file", str(tmp_path / "a.json"), "--to", "modules"]) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["group_size"] == 128 and config["modules"][LLAMA[2]] == {"bits": 4}
    (tmp_path / "b.json").write_text(json.dumps({"bits": [2, 3]}))
    assert main(["layer-config", "--bits-file", str(tmp_path / "b.json"), "--to", "autoround"]) == 2
    assert "names no layers" in capsys.readouterr().err
