"""A user's own model and data through every command, as README's "Your own model in five
commands" runs them, and the one-line errors for data or weights that do not fit."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import user_models
from evoproxy.bench import load_bench
from evoproxy.cli import main
from evoproxy.errors import EvoproxyWarning

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "own_model"
FAST = ["--batch-size", "16", "--hutchinson-samples", "4", "--power-iters", "3"]


@pytest.fixture
def example(tmp_path, monkeypatch):
    """The worked example's files, made small: tinynet.py, bars.npz and tinynet.pt in the cwd."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.chdir(tmp_path)
    shutil.copy(EXAMPLE / "tinynet.py", tmp_path)
    import make_data

    images, labels = make_data.make_images(600)
    np.savez_compressed(
        "bars.npz",
        train_images=images[:480],
        train_labels=labels[:480],
        test_images=images[480:],
        test_labels=labels[480:],
    )
    torch.save(make_data.train(images[:480], labels[:480], epochs=2).state_dict(), "tinynet.pt")
    return tmp_path


@pytest.mark.slow
def test_worked_example_runs_every_command_on_a_user_model_and_npz_data(example, capsys):
    model = ["--model", "tinynet:build", "--weights", "tinynet.pt", "--data", "bars.npz"]
    assert main(["stats", *model, *FAST]) == 0
    assert "tinynet:build: 7 quantizable layers" in capsys.readouterr().out

    assert main(["bench", "build", *model, "--configs", "24", "--eval-size", "120", "--out", "tiny.jsonl"]) == 0
    header = load_bench("tiny.jsonl").header
    assert header["model"] == "tinynet:build" and header["weights"] == str(example / "tinynet.pt")
    assert header["data"]["spec"] == str(example / "bars.npz") and len(load_bench("tiny.jsonl").entries) == 24

    # evolve and rank reload the model, weights and data from the bench header alone.
    assert (
        main(
            [
                "evolve",
                "--bench",
                "tiny.jsonl",
                "--population",
                "6",
                "--islands",
                "1",
                "--iterations",
                "4",
                "--name",
                "tiny",
                "--no-report",
                "--log-every",
                "0",
            ]
        )
        == 0
    )
    assert (example / "runs" / "tiny" / "best.json").is_file()
    capsys.readouterr()
    assert (
        main(
            [
                "rank",
                "--bench",
                "tiny.jsonl",
                "--proxies",
                "hawq-v2,runs/tiny",
                "--samples",
                "0",
                "--repeats",
                "1",
                "--split",
                "all",
                "--json",
            ]
        )
        == 0
    )
    ranked = json.loads(capsys.readouterr().out)
    assert [r["proxy"] for r in ranked["results"]] == ["hawq-v2", "tiny"] and ranked["configs"] == 24

    assert main(["allocate", "--proxy", "runs/tiny", *model, *FAST, "--size-mb", "0.02", "--out", "alloc.json"]) == 0
    alloc = json.loads(Path("alloc.json").read_text())
    assert len(alloc["bits"]) == 7 and set(alloc["bits"][1:-1]) <= {2, 3, 4}
    capsys.readouterr()
    assert main(["quantize", *model, "--bits-file", "alloc.json"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy on 120 images of bars.npz" in out and "quantized, A8" in out

    assert (
        main(
            [
                "pareto",
                "--proxies",
                "hawq-v2",
                *model,
                *FAST,
                "--sizes",
                "0.02",
                "--evaluate",
                "ptq",
                "--eval-size",
                "60",
                "--json",
            ]
        )
        == 0
    )
    points = json.loads(capsys.readouterr().out)["points"]
    assert all(0 <= p["accuracy"] <= 100 for p in points)


@pytest.mark.slow
def test_a_bench_refuses_other_weights_and_other_data(example, capsys, one_line_error):
    model = ["--model", "tinynet:build", "--weights", "tinynet.pt", "--data", "bars.npz"]
    assert main(["bench", "build", *model, "--configs", "4", "--eval-size", "40", "--out", "tiny.jsonl"]) == 0
    capsys.readouterr()
    other = user_models.fit(__import__("tinynet").build(), torch.rand(8, 3, 16, 16), torch.arange(8), steps=2)
    torch.save(other.state_dict(), "other.pt")
    assert (
        main(["rank", "--bench", "tiny.jsonl", "--weights", "other.pt", "--proxies", "fisher", "--split", "all"]) == 2
    )
    one_line_error("measured on other weights of tinynet:build", "--weights")
    data = np.load("bars.npz")
    np.savez("shuffled.npz", **{k: data[k][::-1].copy() for k in data.files})
    assert (
        main(["rank", "--bench", "tiny.jsonl", "--data", "shuffled.npz", "--proxies", "fisher", "--split", "all"]) == 2
    )
    one_line_error("made on other data", "--data")
    Path("tinynet.pt").rename("moved.pt")
    assert main(["rank", "--bench", "tiny.jsonl", "--proxies", "fisher", "--split", "all"]) == 2
    one_line_error("tinynet.pt, which is not there", "--weights")
    assert (
        main(
            [
                "rank",
                "--bench",
                "tiny.jsonl",
                "--weights",
                "moved.pt",
                "--proxies",
                "fisher",
                "--samples",
                "0",
                "--split",
                "all",
            ]
        )
        == 0
    )


def test_image_folder_data_through_stats_bench_and_quantize(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    for label, name in enumerate(["circle", "square", "stripe"]):
        for i in range(20):
            pixels = rng.integers(0, 60, (10, 10)).astype(np.uint8)
            if name == "circle":
                yy, xx = np.mgrid[0:10, 0:10]
                pixels[(yy - 4.5) ** 2 + (xx - 4.5) ** 2 < 9] = 220
            elif name == "square":
                pixels[2:8, 2:8] = 220
            else:
                pixels[:, ::3] = 220
            (tmp_path / "shapes" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels, "L").resize((12, 12)).save(tmp_path / "shapes" / name / f"{i}.png")
    model = [
        "--model",
        "synthetic_stats:tiny_conv_net",
        "--data",
        "shapes",
        "--image-size",
        "8",
        "--mean",
        "0.3",
        "--std",
        "0.3",
    ]
    assert main(["stats", *model, *FAST]) == 0
    assert "3 quantizable layers, calibration batch 16 of shapes" in capsys.readouterr().out
    assert (
        main(["bench", "build", *model, "--configs", "3", "--fixed", "none", "--eval-size", "12", "--out", "b.jsonl"])
        == 0
    )
    assert load_bench("b.jsonl").header["data"]["options"]["image_size"] == 8
    Path("bits.json").write_text(json.dumps({"bits": [4, 4, 8]}))
    assert main(["quantize", *model, "--bits-file", "bits.json"]) == 0
    assert "test accuracy on 12 images of shapes" in capsys.readouterr().out


def test_function_data_and_a_linear_only_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    torch.save(user_models.fit(user_models.mlp(), *user_models.vectors()).state_dict(), "mlp.pt")
    model = ["--model", "user_models:mlp", "--weights", "mlp.pt", "--data", "user_models:vectors"]
    assert main(["stats", *model, *FAST, "--json"]) == 0
    layers = json.loads(capsys.readouterr().out)["layers"]
    assert [l["kind"] for l in layers] == ["linear"] * 3
    assert (
        main(["bench", "build", *model, "--configs", "6", "--fixed", "none", "--eval-size", "48", "--out", "b.jsonl"])
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "rank",
                "--bench",
                "b.jsonl",
                "--proxies",
                "hawq-v2,mean-bits",
                "--samples",
                "0",
                "--split",
                "all",
                "--json",
            ]
        )
        == 0
    )
    assert all(r["error"] is None for r in json.loads(capsys.readouterr().out)["results"])


def test_conv1d_layers_of_a_signal_model_are_quantized(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    model = ["--model", "user_models:conv1d", "--data", "user_models:signals"]
    assert main(["stats", *model, *FAST, "--json", "--act-max-elems", "100"]) == 0
    layers = json.loads(capsys.readouterr().out)["layers"]
    assert [(l["name"], l["kind"]) for l in layers] == [("0", "conv"), ("3", "depthwise"), ("7", "linear")]
    assert all(math.isfinite(l["synflow"]) and l["synflow"] > 0 for l in layers)  # Conv1d has its linearisation
    assert (
        main(["bench", "build", *model, "--configs", "3", "--fixed", "none", "--eval-size", "40", "--out", "b.jsonl"])
        == 0
    )
    Path("bits.json").write_text(json.dumps({"bits": [2, 3, 4]}))
    capsys.readouterr()
    assert main(["quantize", *model, "--bits-file", "bits.json"]) == 0
    assert "quantized, A8" in capsys.readouterr().out


def test_transformer_block_linears_and_multihead_attention_are_quantized_and_what_stays_reported(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    torch.save(dict(zip(("images", "labels"), user_models.sequences())), "seq.pt")
    with pytest.warns(EvoproxyWarning, match="SynFlow statistics"):  # attention has no SynFlow linearisation
        assert main(["stats", "--model", "user_models:transformer", "--data", "seq.pt", *FAST, "--json"]) == 0
    names = [l["name"] for l in json.loads(capsys.readouterr().out)["layers"]]
    assert names == ["embed", "block.qkv", "block.proj", "block.mlp.0", "block.mlp.2", "head"]
    assert (
        main(
            [
                "bench",
                "build",
                "--model",
                "user_models:transformer",
                "--data",
                "seq.pt",
                "--configs",
                "4",
                "--eval-size",
                "40",
                "--out",
                "b.jsonl",
            ]
        )
        == 0
    )
    capsys.readouterr()
    torch.save(user_models.attention().state_dict(), "attention.pt")  # in_proj_weight, as the user saved it
    with pytest.warns(EvoproxyWarning) as warned:
        attention = ["--model", "user_models:attention", "--weights", "attention.pt", "--data", "seq.pt"]
        assert main(["stats", *attention, *FAST, "--json"]) == 0
    names = [l["name"] for l in json.loads(capsys.readouterr().out)["layers"]]
    assert names == ["embed", "attn.q", "attn.k", "attn.v", "attn.out_proj", "head"]
    assert not any("full precision" in str(w.message) for w in warned)
    with pytest.warns(EvoproxyWarning) as warned:
        assert main(["stats", "--model", "user_models:zero_attention", "--data", "seq.pt", *FAST, "--json"]) == 0
    assert [l["name"] for l in json.loads(capsys.readouterr().out)["layers"]] == ["embed", "head"]
    said = " ".join(str(w.message) for w in warned)
    assert "nn.MultiheadAttention (attn) stay at full precision" in said and "attn.out_proj" in said


def test_output_selector_and_exclude(tmp_path, monkeypatch, capsys, one_line_error):
    monkeypatch.chdir(tmp_path)
    torch.save(dict(zip(("images", "labels"), user_models.vectors())), "v.pt")
    base = ["stats", "--model", "user_models:two_heads", "--data", "v.pt", *FAST]
    assert main(base) == 2
    one_line_error("returns a tuple", "--output")
    assert main([*base, "--output", "0", "--json"]) == 0
    assert [l["name"] for l in json.loads(capsys.readouterr().out)["layers"]] == ["body.0", "fc"]
    assert main([*base, "--output", "0", "--exclude", "body.*", "--json"]) == 0
    assert [l["name"] for l in json.loads(capsys.readouterr().out)["layers"]] == ["fc"]
    assert main([*base, "--output", "0", "--exclude", "nothing.*"]) == 2
    one_line_error("--exclude must be layer names or shell patterns that each match a quantizable layer", "'nothing.*'")
    assert main([*base, "--output", "5"]) == 2
    one_line_error("--output must be an index or key of the model's tuple output", "got 5")


def test_bad_data_and_weights_are_one_line_errors(tmp_path, monkeypatch, capsys, one_line_error):
    monkeypatch.chdir(tmp_path)
    torch.save(dict(zip(("images", "labels"), user_models.vectors())), "v.pt")
    (tmp_path / "empty").mkdir()
    np.savez("nolabels.npz", images=np.zeros((8, 12), np.float32))
    wide = user_models.vectors()
    torch.save({"images": wide[0], "labels": wide[1] + 5}, "wide.pt")
    torch.save(user_models.mlp().state_dict(), "mlp.pt")
    cases = [
        (["--model", "synthetic_stats:tiny_conv_net", "--data", "v.pt"], ["does not accept inputs of shape (12,)"]),
        (["--model", "user_models:mlp", "--weights", "mlp.pt", "--data", "wide.pt"], ["do not fit labels"]),
        (["--model", "user_models:mlp", "--data", "empty"], ["holds no images"]),
        (["--model", "user_models:mlp", "--data", "nolabels.npz"], ["lacks labels"]),
        (["--model", "default", "--weights", "mlp.pt"], ["does not fit the model"]),
        (
            ["--model", "user_models:mlp", "--data", "v.pt", "--device", "nonsense"],
            ["--device must be a device torch can use here", "'nonsense'"],
        ),
    ]
    for flags, needles in cases:
        assert main(["stats", *flags, *FAST]) == 2, flags
        one_line_error(*needles)
    Path("bits.json").write_text(json.dumps({"bits": [4, 4, 4]}))
    assert (
        main(
            [
                "quantize",
                "--model",
                "user_models:mlp",
                "--weights",
                "mlp.pt",
                "--data",
                "wide.pt",
                "--bits-file",
                "bits.json",
            ]
        )
        == 2
    )
    one_line_error("do not fit labels")


def test_a_mobilenet_v3_style_model_runs_every_command_with_its_hessian(tmp_path, monkeypatch, capsys):
    """Hardswish, depthwise convolutions and Hardsigmoid squeeze-and-excitation gates, whose
    backward torch cannot differentiate again: statistics, rank, allocate with a Hessian proxy,
    quantize and export all run, and the Hessian is there for every layer."""
    monkeypatch.chdir(tmp_path)
    torch.save(user_models.mobilenet_v3().state_dict(), "mv3.pt")
    model = ["--model", "user_models:mobilenet_v3", "--weights", "mv3.pt"]
    assert main(["stats", *model, *FAST, "--json"]) == 0
    layers = json.loads(capsys.readouterr().out)["layers"]
    assert len(layers) == 11 and all(math.isfinite(l["hessian_trace"]) for l in layers)
    assert main(["bench", "build", *model, "--configs", "6", "--eval-size", "64", "--out", "b.jsonl"]) == 0
    capsys.readouterr()
    assert main(["rank", "--bench", "b.jsonl", "--split", "all", "--proxies", "hawq-v2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["error"] is None
    assert main(["allocate", *model, *FAST, "--proxy", "hawq-v2", "--size-mb", "0.01", "--out", "b.json"]) == 0
    assert main(["quantize", *model, "--bits-file", "b.json"]) == 0
    assert main(["export", *model, "--bits-file", "b.json", "--onnx", "m.onnx", "--eval-size", "32"]) == 0
