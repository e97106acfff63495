"""A language model through the commands, as an LLM user runs them: token data from a text file,
group-wise weights, weights only, perplexity as the metric, an average-bits budget."""

import json

import pytest

from evoproxy.bench import load_bench
from evoproxy.cli import main
from evoproxy.model.text import corpus_bytes

MODEL = ["--model", "user_models:tiny_lm", "--seq-len", "32"]
FAST = ["--batch-size", "4", "--hutchinson-samples", "2", "--power-iters", "2"]
# (weights, biases) of the layers of tiny_lm: q, k, v, o, fc1, fc2 of each of its two blocks.
LAYERS = [(32 * 32, 32)] * 4 + [(64 * 32, 64), (32 * 64, 32)]
LAYERS = LAYERS * 2


@pytest.fixture
def text(tmp_path, monkeypatch):
    """30 000 bytes of the shipped text as a .txt file in the cwd."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "kjv.txt"
    path.write_bytes(bytes(corpus_bytes()[:30000].tolist()))
    return ["--data", str(path)]


def _bench(text) -> dict:
    argv = ["bench", "build", *MODEL, *text, "--configs", "6", "--group-size", "32", "--out", "lm.jsonl"]
    assert main(argv) == 0
    return load_bench("lm.jsonl")


def test_a_bench_of_a_language_model_measures_perplexity_of_weights_only_with_group_scales(text, capsys):
    bench = _bench(text)
    h = bench.header
    assert h["metric"] == "perplexity" and bench.metric.higher_is_better is False
    assert h["act_bits"] == 32 and h["fixed"] == {} and h["exclude"] == ["head"]  # the head stays in float
    assert h["quantizer"]["group_size"] == 32 and len(h["layers"]) == 12  # 6 projections a block
    assert h["eval"]["first"] == 32 and h["fp_perplexity"] >= 1
    for e in bench.entries:
        assert e.value >= 1 and e.quality == -e.value
        # Weights at their bits plus a 16-bit scale per group of 32 (half a bit each); biases at 32 bits.
        expected = sum((b + 0.5) * n + 32 * m for b, (n, m) in zip(e.bits, LAYERS))
        assert e.size_mb == pytest.approx(expected / 8e6)
    assert "perplexity: min" in capsys.readouterr().out


def test_rank_allocate_and_quantize_read_the_metric_and_the_average_bits_budget(text, capsys):
    _bench(text)
    capsys.readouterr()
    assert (
        main(
            [
                "rank",
                "--bench",
                "lm.jsonl",
                "--proxies",
                "mean-bits,fisher",
                "--samples",
                "0",
                "--repeats",
                "1",
                "--split",
                "all",
            ]
        )
        == 0
    )
    assert "fisher" in capsys.readouterr().out
    around = ["rank", "--bench", "lm.jsonl", "--proxies", "kl", "--samples", "0", "--repeats", "1", "--split", "all"]
    assert main([*around, "--perturb-around", "3"]) == 0
    out = capsys.readouterr().out
    assert "; perturbations measured around 3 bits" in out and "\nkl " in out
    argv = [
        "allocate",
        *MODEL,
        *text,
        *FAST,
        "--proxy",
        "fisher",
        "--avg-bits",
        "3.0",
        "--group-size",
        "32",
        "--out",
        "a.json",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "3 bits per weight" in out and "symmetric, groups of 32" in out
    alloc = json.loads(open("a.json").read())
    average = sum((b + 0.5) * n for b, (n, _) in zip(alloc["bits"], LAYERS)) / sum(n for n, _ in LAYERS)
    assert 2.5 < average <= 3.0  # group scales count: 3.0 leaves 2.5 bits a weight on average for the levels
    assert alloc["group_size"] == 32 and alloc["avg_bits"] == pytest.approx(average)
    assert main(["quantize", *MODEL, *text, "--bits-file", "a.json"]) == 0  # the file's groups of 32
    out = capsys.readouterr().out
    assert "test perplexity on 32 windows" in out and "groups of 32" in out and "perplexity change" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--group-size", "48"], "a divisor of every layer's"),
        (["--group-size", "x"], "--group-size takes a whole number"),
        (["--seq-len", "2000"], "--seq-len"),
    ],
)
def test_bad_language_model_input_is_one_line(text, capsys, argv, message):
    assert main(["bench", "build", *MODEL, *text, "--configs", "2", "--out", "b.jsonl", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_pareto_takes_average_bits_budgets_and_measures_perplexity(text, capsys):
    argv = ["pareto", *MODEL, *text, *FAST, "--proxies", "mean-bits,fisher", "--avg-bits", "2.75,3.25"]
    assert main([*argv, "--group-size", "32", "--evaluate", "ptq", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["avg_bits"] == [2.75, 3.25] and report["eval_size"] == 32
    mixed = [p for p in report["points"] if p["kind"] == "mixed"]
    assert len(mixed) == 4
    for p in mixed:  # each allocation within its own budget, scales included
        budget = 2.75 if p["budget_mb"] == report["sizes_mb"][0] else 3.25
        assert budget - 0.5 < p["avg_bits"] <= budget
    assert all(p["accuracy"] >= 1 for p in report["points"])  # perplexities


def test_save_pretrained_needs_a_transformers_model(text, capsys):
    argv = ["allocate", *MODEL, *text, *FAST, "--proxy", "mean-bits", "--avg-bits", "3", "--out", "a.json"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["quantize", *MODEL, *text, "--bits-file", "a.json", "--save-pretrained", "q"]) == 2
    err = capsys.readouterr().err
    assert "--save-pretrained writes a transformers model" in err and err.count("\n") == 1
