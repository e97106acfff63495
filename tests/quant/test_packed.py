"""`quantize --save-pretrained DIR --packed`: a tiny random Llama's quantized layers written as packed
integers in the compressed-tensors pack-quantized format, read back by `transformers` (and by
compressed-tensors' own decoder) to the product's fake-quantized weights bit for bit, beside the
dequantized `--save-pretrained` folder; and the one-line refusals of what has no packed form."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evoproxy.cli import main
from evoproxy.errors import EvoproxyError
from evoproxy.model.text import corpus_bytes
from evoproxy.quant import WeightFormat, quantize_weight, weights

transformers = pytest.importorskip("transformers")
pytest.importorskip("compressed_tensors")

from compressed_tensors.compressors.pack_quantized import PackedQuantizationCompressor  # noqa: E402
from compressed_tensors.quantization import QuantizationConfig  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

PROJECTIONS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"]
PROJECTIONS += ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
LAYERS = [f"model.layers.{i}.{p}" for i in range(2) for p in PROJECTIONS]
# Widths whose values fill int32 words (2, 4, 8) and that run across them (3, 5, 6), and a float layer.
BITS = [2, 3, 4, 8, 4, 32, 5, 4, 4, 4, 2, 8, 6, 4]


def _llama(folder: Path, tie: bool = False) -> str:
    config = transformers.LlamaConfig(
        vocab_size=256,
        max_position_embeddings=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=tie,
    )
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> str:
    return _llama(tmp_path_factory.mktemp("llama"))


@pytest.fixture
def quantize(tmp_path, monkeypatch, llama):
    """`evoproxy quantize` of the Llama with BITS on 30 000 bytes of the shipped text, in the cwd."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "kjv.txt").write_bytes(bytes(corpus_bytes()[:30000].tolist()))
    (tmp_path / "bits.json").write_text(
        json.dumps({"layers": [{"name": n} for n in LAYERS], "bits": BITS, "act_bits": 32})
    )
    base = ["quantize", "--model", f"hf:{llama}", "--data", "kjv.txt", "--seq-len", "32", "--bits-file", "bits.json"]
    return lambda *argv: main([*base, *argv])


def _safetensors_bytes(folder: str) -> int:
    return sum(f.stat().st_size for f in Path(folder).glob("*.safetensors"))


def _reference(llama: str):
    return transformers.AutoModelForCausalLM.from_pretrained(llama)


@pytest.mark.parametrize("fmt", [WeightFormat(16), WeightFormat()], ids=lambda f: f.describe())
def test_transformers_loads_the_packed_model_to_the_fake_quantized_weights_and_logits(quantize, llama, fmt, capsys):
    group = ["--group-size", str(fmt.group_size or "channel")]
    assert quantize(*group, "--save-pretrained", "q") == 0
    assert quantize(*group, "--save-pretrained", "p", "--packed") == 0
    out = capsys.readouterr().out
    assert f"wrote p: packed integer weights (compressed-tensors pack-quantized, {fmt.describe()})" in out
    assert f"; {_safetensors_bytes('p')} bytes of safetensors" in out
    config = json.loads(Path("p/config.json").read_text())["quantization_config"]
    assert config["format"] == "pack-quantized" and config["quant_method"] == "compressed-tensors"
    groups = {g["weights"]["num_bits"]: g for g in config["config_groups"].values()}
    assert sorted(groups) == [2, 3, 4, 5, 6, 8]  # one group per bit-width, targeting its layers by name
    assert groups[4]["targets"] == [n for n, b in zip(LAYERS, BITS) if b == 4]
    assert {g["weights"]["group_size"] for g in groups.values()} == {fmt.group_size}
    assert set(config["ignore"]) == {"lm_head", "model.layers.0.mlp.up_proj"}  # the head and the 32-bit layer
    stored = load_file("p/model.safetensors")
    scale = stored["model.layers.0.self_attn.q_proj.weight_scale"]
    assert scale.dtype == (torch.float16 if fmt.group_size else torch.float32)
    assert stored["model.layers.0.self_attn.q_proj.weight_packed"].shape == (32, 2)  # 32 inputs × 2 bits = 2 words
    assert stored["model.layers.0.self_attn.v_proj.weight_packed"].dtype == torch.int32

    original, fake = _reference(llama), transformers.AutoModelForCausalLM.from_pretrained("q")
    packed = transformers.AutoModelForCausalLM.from_pretrained("p")
    tokens = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # the first forward decompresses the packed layers (in the model's float32)
        assert torch.equal(packed(tokens).logits, fake(tokens).logits)
    for name, bits in zip(LAYERS, BITS):
        weight = packed.get_submodule(name).weight
        assert torch.equal(weight, quantize_weight(original.get_submodule(name).weight, bits, fmt)), name
    for name in ("lm_head", "model.embed_tokens", "model.layers.0.mlp.up_proj", "model.norm"):
        assert torch.equal(packed.get_submodule(name).weight, original.get_submodule(name).weight), name
    assert _safetensors_bytes("p") < 0.7 * _safetensors_bytes("q")
    capsys.readouterr()
    assert quantize("--save-pretrained", "again", "--model", "hf:p") == 2  # evoproxy quantizes float models only
    assert "hf:p: the model is already quantized" in capsys.readouterr().err


def test_asymmetric_zero_points_are_packed_and_decode_with_compressed_tensors_to_the_fake_quantized_weights(
    quantize, llama
):
    assert quantize("--group-size", "16", "--asymmetric", "--save-pretrained", "p", "--packed") == 0
    config = QuantizationConfig.model_validate(json.loads(Path("p/config.json").read_text())["quantization_config"])
    stored, original = load_file("p/model.safetensors"), _reference(llama)
    schemes = {name: scheme for scheme in config.config_groups.values() for name in scheme.targets}
    assert sorted(schemes) == sorted(n for n, b in zip(LAYERS, BITS) if b < 32)
    for name, bits in zip(LAYERS, BITS):
        if bits == 32:
            assert torch.equal(stored[f"{name}.weight"], original.get_submodule(name).weight)
            continue
        scheme = schemes[name]
        assert scheme.weights.num_bits == bits and not scheme.weights.symmetric
        tensors = {k.removeprefix(f"{name}."): v for k, v in stored.items() if k.startswith(f"{name}.weight_")}
        out, inputs = original.get_submodule(name).weight.shape
        zero = tensors["weight_zero_point"]  # packed along the output channels: out × bits / 32 words a group
        assert zero.dtype == torch.int32 and zero.shape == (-(-out * bits // 32), inputs // 16)
        tensors["weight_scale"] = tensors["weight_scale"].float()  # as transformers loads it, in the model's dtype
        decoded = PackedQuantizationCompressor.decompress(tensors, scheme)["weight"]
        assert torch.equal(decoded, quantize_weight(original.get_submodule(name).weight, bits, WeightFormat(16, True)))


@pytest.mark.parametrize("packed", [[], ["--packed"]], ids=["fake-quantized", "packed"])
def test_the_save_writes_the_weights_that_the_evaluation_quantized_without_quantizing_them_again(
    quantize, monkeypatch, packed
):
    searched = []  # every quantization of a weight searches its clipping once
    search = weights._clip_search

    def counted(*args):
        searched.append(args[0].shape)
        return search(*args)

    monkeypatch.setattr(weights, "_clip_search", counted)
    assert quantize("--group-size", "16", "--save-pretrained", "q", *packed) == 0
    assert len(searched) == sum(b < 32 for b in BITS)


def _refused(capsys, run) -> str:
    capsys.readouterr()
    assert run() == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_what_has_no_packed_form_is_refused_in_one_line_before_anything_is_written(
    quantize, tmp_path, capsys, monkeypatch
):
    err = _refused(capsys, lambda: quantize("--packed"))
    assert "give --save-pretrained DIR" in err
    bits = json.loads(Path("bits.json").read_text())
    Path("b16.json").write_text(json.dumps({**bits, "bits": [16] + BITS[1:]}))
    err = _refused(capsys, lambda: quantize("--bits-file", "b16.json", "--save-pretrained", "p", "--packed"))
    assert "1- to 8-bit integers or float (32): layer model.layers.0.self_attn.q_proj has 16 bits" in err
    # A decoder that reads other values than the fake-quantized weights: nothing is written.
    real = PackedQuantizationCompressor.decompress
    off = lambda state, scheme: {"weight": real(state, scheme)["weight"] * 1.001}  # noqa: E731
    monkeypatch.setattr(PackedQuantizationCompressor, "decompress", off)
    err = _refused(capsys, lambda: quantize("--group-size", "16", "--save-pretrained", "p", "--packed"))
    assert "decodes layer model.layers.0.self_attn.q_proj to other values" in err and not any(Path("p").iterdir())
    monkeypatch.setitem(sys.modules, "compressed_tensors", None)  # as if not installed
    err = _refused(capsys, lambda: quantize("--save-pretrained", "p", "--packed"))
    assert "pip install 'evoproxy[packed]'" in err


def test_a_gpt2_conv1d_and_a_head_tied_to_the_embedding_are_refused(tmp_path, capsys):
    from evoproxy.model import layer_registry, load_model
    from evoproxy.quant import check_packable

    config = transformers.GPT2Config(vocab_size=256, n_positions=64, n_embd=32, n_layer=1, n_head=2)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2")
    model, _ = load_model(f"hf:{tmp_path / 'gpt2'}")
    layers = layer_registry(model, (8,), ("lm_head",), torch.int64)
    with pytest.raises(EvoproxyError, match="transformer.h.0.attn.c_attn is a GPT-2 Conv1D"):
        check_packable(model, layers, [4] * len(layers))
    check_packable(model, layers, [32] * len(layers))  # its float layers are written as save_pretrained does
    tied, _ = load_model("hf:" + _llama(tmp_path / "tied", tie=True))
    layers = layer_registry(tied, (8,), (), torch.int64)
    assert layers[-1].name == "lm_head"
    with pytest.raises(EvoproxyError, match="lm_head shares its weight with the embedding"):
        check_packable(tied, layers, [4] * len(layers))


def test_the_projections_of_multihead_attention_are_refused():
    import user_models
    from evoproxy.model import layer_registry, split_attention
    from evoproxy.quant import check_packable

    model = split_attention(user_models.attention())
    layers = layer_registry(model, (6, 4))
    with pytest.raises(EvoproxyError, match="layer attn.q is a projection of an nn.MultiheadAttention"):
        check_packable(model, layers, [4] * len(layers))


def test_compressed_tensors_is_not_imported_before_a_command_runs():
    code = "import sys, evoproxy.cli; evoproxy.cli.build_parser(); print('compressed_tensors' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
