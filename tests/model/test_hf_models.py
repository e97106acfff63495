"""`--model hf:PATH`: tiny random `transformers` causal language models saved in local folders, loaded
through the Python API and run through the commands as an LLM user runs them; and the one-line
refusals of what cannot be loaded (nothing is ever downloaded)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from evoproxy.bench import load_bench  # noqa: E402
from evoproxy.cli import main  # noqa: E402
from evoproxy.errors import EvoproxyError, EvoproxyWarning  # noqa: E402
from evoproxy.model import default_data, layer_registry, load_model  # noqa: E402
from evoproxy.model.text import corpus_bytes  # noqa: E402
from evoproxy.quant import WeightFormat, quantize_weight  # noqa: E402

FAST = ["--batch-size", "2", "--hutchinson-samples", "2", "--power-iters", "2"]
SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1)
PROJECTIONS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"]
PROJECTIONS += ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
LAYERS = [f"model.layers.{i}.{p}" for i in range(2) for p in PROJECTIONS]  # lm_head is excluded by default


def _save(folder, config, model_class, dtype: torch.dtype = torch.float32) -> str:
    """`model_class(config)` with seeded random weights in `dtype`, saved with save_pretrained into `folder`."""
    torch.manual_seed(0)
    model_class(config).to(dtype).save_pretrained(folder)
    return str(folder)


def _llama(folder, vocab_size: int = 256) -> str:
    config = transformers.LlamaConfig(
        vocab_size=vocab_size, max_position_embeddings=64, bos_token_id=1, eos_token_id=2, **SMALL
    )
    return _save(folder, config, transformers.LlamaForCausalLM)


def _qwen2(folder) -> str:
    config = transformers.Qwen2Config(
        vocab_size=256, max_position_embeddings=64, bos_token_id=1, eos_token_id=2, **SMALL
    )
    return _save(folder, config, transformers.Qwen2ForCausalLM, torch.bfloat16)  # loaded in float32


def _gpt2(folder) -> str:
    config = transformers.GPT2Config(
        vocab_size=256, n_positions=64, n_embd=32, n_layer=2, n_head=2, bos_token_id=1, eos_token_id=2
    )
    return _save(folder, config, transformers.GPT2LMHeadModel)


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> str:
    return _llama(tmp_path_factory.mktemp("llama"))


@pytest.fixture
def text(tmp_path, monkeypatch):
    """30 000 bytes of the shipped text as a .txt file in the cwd."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "kjv.txt"
    path.write_bytes(bytes(corpus_bytes()[:30000].tolist()))
    return ["--data", str(path), "--seq-len", "32"]


@pytest.mark.parametrize("save", [_llama, _qwen2])
def test_a_saved_model_gives_logits_and_lists_seven_projections_a_layer_then_its_head(tmp_path, save):
    path = save(tmp_path / "model")
    model, name = load_model("hf:" + path)
    assert name == "hf:" + str((tmp_path / "model").resolve()) and not model.training
    assert next(model.parameters()).dtype == torch.float32 and model.config.use_cache is False
    tokens = torch.randint(0, 256, (3, 16))
    with torch.no_grad():
        logits = model(tokens)
    assert isinstance(logits, torch.Tensor) and logits.shape == (3, 16, 256)
    layers = layer_registry(model, (16,), (), torch.int64)
    assert [l.name for l in layers] == [*LAYERS, "lm_head"]
    assert [l.name for l in layer_registry(model, (16,), ("lm_head",), torch.int64)] == LAYERS
    assert default_data("hf:" + path) == "kjv"  # a smoke-test default: real use passes the model's own tokens


@pytest.mark.filterwarnings("ignore:SynFlow statistics")  # each command that takes statistics warns
def test_stats_bench_allocate_quantize_and_rank_run_on_a_saved_llama(llama, text, capsys):
    model = ["--model", "hf:" + llama]
    with pytest.warns(EvoproxyWarning, match="SynFlow needs a torch.fx-traceable model"):  # transformers models are not
        assert main(["stats", *model, *text, *FAST]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in LAYERS) and "lm_head" not in out
    argv = ["bench", "build", *model, *text, "--configs", "4", "--group-size", "16", "--out", "b.jsonl"]
    assert main(argv) == 0
    h = load_bench("b.jsonl").header
    assert h["model"] == "hf:" + str(Path(llama).resolve()) and h["metric"] == "perplexity"
    assert h["exclude"] == ["lm_head"] and h["act_bits"] == 32 and h["layers"] == LAYERS
    argv = ["allocate", *model, *text, *FAST, "--proxy", "fisher", "--avg-bits", "3", "--group-size", "16"]
    assert main([*argv, "--out", "alloc.json"]) == 0
    alloc = json.loads(open("alloc.json").read())
    assert len(alloc["bits"]) == len(LAYERS) and alloc["group_size"] == 16 and 2.5 < alloc["avg_bits"] <= 3
    assert main(["quantize", *model, *text, "--bits-file", "alloc.json", "--save-pretrained", "q"]) == 0
    assert "perplexity change" in capsys.readouterr().out
    # The saved model holds the fake-quantized weights: each layer's, at its bits in groups of 16.
    original, _ = load_model("hf:" + llama)
    saved, _ = load_model("hf:q")
    fmt = WeightFormat(16)
    for name, b in zip(LAYERS, alloc["bits"]):
        weight = original.get_submodule(name).weight
        assert torch.equal(saved.get_submodule(name).weight, quantize_weight(weight, b, fmt))
    assert torch.equal(saved.lm_head.weight, original.lm_head.weight)  # the head stays in float
    # The bench records the hf: model, which rank reloads to take its statistics.
    argv = ["rank", "--bench", "b.jsonl", "--split", "all", "--samples", "0", "--repeats", "1"]
    assert main([*argv, "--proxies", "fisher,mean-bits"]) == 0
    assert "fisher" in capsys.readouterr().out


GPT2_LAYERS = [
    f"transformer.h.{i}.{p}" for i in range(2) for p in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
]


@pytest.mark.filterwarnings("ignore:SynFlow")
def test_gpt2_conv1d_projections_are_linear_layers_quantized_along_their_input_and_saved_in_gpt2_layout(
    tmp_path, text, capsys
):
    folder = _gpt2(tmp_path / "gpt2")
    reference = transformers.GPT2LMHeadModel.from_pretrained(folder, attn_implementation="eager").eval()
    model, _ = load_model("hf:" + folder)
    tokens = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), reference(tokens).logits, rtol=1e-5, atol=1e-5)
    layers = layer_registry(model, (16,), ("lm_head",), torch.int64)
    assert [l.name for l in layers] == GPT2_LAYERS and {l.kind for l in layers} == {"linear"}
    assert layers[0].weight_shape == (96, 32) and layers[2].weight_shape == (128, 32)  # (out, in): groups along in
    gpt2 = ["--model", "hf:" + folder, *text]
    assert main(["stats", *gpt2, *FAST]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in GPT2_LAYERS)
    bits = [2, 3, 4, 4, 3, 2, 4, 4]
    (tmp_path / "bits.json").write_text(
        json.dumps({"layers": [{"name": n} for n in GPT2_LAYERS], "bits": bits, "act_bits": 32, "group_size": 16})
    )
    assert main(["quantize", *gpt2, "--bits-file", str(tmp_path / "bits.json"), "--save-pretrained", "q"]) == 0
    # transformers itself reads the saved folder back as GPT-2, each Conv1D holding its layer's quantized weight.
    saved = transformers.GPT2LMHeadModel.from_pretrained("q")
    for name, b in zip(GPT2_LAYERS, bits):
        expected = quantize_weight(model.get_submodule(name).weight, b, WeightFormat(16))
        assert torch.equal(saved.get_submodule(name).weight, expected.t())
    assert main(["layer-config", "--bits-file", str(tmp_path / "bits.json"), "--to", "llama-cpp"]) == 0
    out = capsys.readouterr().out
    assert "blk\\.0\\.attn_qkv\\.weight=q2_K" in out and "blk\\.1\\.ffn_down\\.weight=q4_K" in out


def _refused(capsys, argv: list[str]) -> str:
    capsys.readouterr()  # save_pretrained's progress bars
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_what_cannot_be_loaded_is_refused_in_one_line(tmp_path, llama, capsys):
    missing = tmp_path / "nowhere"
    assert "is not a folder" in _refused(capsys, ["stats", "--model", f"hf:{missing}"])
    assert "holds no config.json" in _refused(capsys, ["stats", "--model", f"hf:{tmp_path}"])
    err = _refused(capsys, ["stats", "--model", f"hf:{llama}", "--weights", str(tmp_path / "w.pt")])
    assert "the folder holds its weights" in err
    (tmp_path / "vit").mkdir()
    transformers.ViTConfig().save_pretrained(tmp_path / "vit")
    with pytest.raises(EvoproxyError, match="not that of a causal language model"):
        load_model(f"hf:{tmp_path / 'vit'}")
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "config.json").write_text(open(f"{llama}/config.json").read())  # no weights beside it
    with pytest.raises(EvoproxyError, match="cannot load the model with transformers"):
        load_model(f"hf:{tmp_path / 'bare'}")


# stats (and allocate, pareto, validity: cli.args.model_stats) computes the statistics before
# DataSource.check_classes, so the embedding's IndexError escapes instead of the one-line message.


@pytest.mark.parametrize(
    "command",
    [
        ["bench", "build", "--configs", "2", "--out", "b.jsonl"],
        ["quantize", "--bits", "4"],
        ["stats", *FAST],
    ],
)
def test_token_ids_beyond_the_vocabulary_are_refused_in_one_line(tmp_path, text, capsys, command):
    small = _llama(tmp_path / "small", vocab_size=100)  # the text's bytes reach 122
    err = _refused(capsys, [*command, "--model", f"hf:{small}", *text])
    assert "beyond the model's vocabulary of 100" in err


def test_transformers_is_imported_only_to_load_a_model_and_its_absence_is_worded(tmp_path, monkeypatch):
    code = (
        "import sys, evoproxy, evoproxy.model, evoproxy.cli; evoproxy.cli.build_parser(); "
        "print('transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed: its import fails
    with pytest.raises(EvoproxyError, match=r"pip install 'evoproxy\[hf\]'"):
        load_model(f"hf:{tmp_path}")
