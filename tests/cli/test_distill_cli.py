"""`--data distilled[:N]` on the command line: statistics and PTQ without data (evaluated on --eval-data,
by default the model's own), the images distilled once, and a one-line error where real data is needed."""

import dataclasses
import json

import pytest

from evoproxy.cli import main
from evoproxy.model import DistillSettings, sources

FAST = ["--hutchinson-samples", "2", "--power-iters", "2"]


@dataclasses.dataclass(frozen=True)
class FewSteps(DistillSettings):
    iters: int = 2


@pytest.fixture
def few_iterations(monkeypatch):
    """Distillation's default settings with 2 Adam steps: the tests check the plumbing, not the images."""
    monkeypatch.setattr(sources, "DistillSettings", FewSteps)


@pytest.mark.slow
def test_stats_on_distilled_images_runs_end_to_end_and_distils_once(few_iterations, capsys, tmp_path):
    argv = ["stats", "--data", "distilled:16", "--batch-size", "16", *FAST, "--json", "--cache-dir", str(tmp_path)]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["data"] == "distilled:16" and out["batch_size"] == 16 and len(out["layers"]) == 22
    assert all(row["grad_norm"] > 0 for row in out["layers"])  # labels: the model's own predictions
    assert len(list(tmp_path.glob("distilled-*.pt"))) == 1
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["from_cache"] and "16 distilled images from the cache" in captured.err


def test_quantize_calibrates_on_distilled_images_and_says_what_it_evaluates_on(few_iterations, capsys, tmp_path):
    bits = tmp_path / "b.json"
    bits.write_text(json.dumps({"bits": [8] * 22}))
    argv = ["quantize", "--bits-file", str(bits), "--data", "distilled:8", "--eval-size", "64"]
    assert main([*argv, "--eval-data", "fmnist"]) == 0
    assert "test accuracy on 64 images of fmnist (calibrated on distilled:8)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["quantize", "--bits-file", "b.json", "--method", "qat"], "--data must be real data with a train part"),
        (["allocate", "--method", "edmips", "--size-mb", "0.1"], "--data must be real data with a train part"),
        (["stats", "--model", "tinylm-kjv"], "not a language model (kjv holds tokens)"),
        (["stats", "--model", "mixer-fmnist"], "this model has no BatchNorm layer"),
        (["stats", "--data", "distilled:0"], "--data must be distilled or distilled:N with N from 1 to"),
    ],
)
def test_what_distilled_images_cannot_do_is_refused_in_one_line(argv, message, one_line_error, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "b.json").write_text(json.dumps({"bits": [8] * 22}))
    assert main([*argv, "--data", "distilled:8"] if "--data" not in argv else argv) == 2
    one_line_error(message)
    assert not list(tmp_path.rglob("distilled-*"))  # refused before any distillation


def test_eval_data_without_distilled_images_is_refused(one_line_error):
    assert main(["stats", "--eval-data", "fmnist"]) == 2
    one_line_error("--eval-data applies to --data distilled[:N] only")


@pytest.mark.slow
def test_bench_build_calibrates_on_distilled_images_and_records_them(few_iterations, capsys, tmp_path):
    out = tmp_path / "b.jsonl"
    argv = ["bench", "build", "--data", "distilled:8", "--configs", "2", "--eval-size", "32", "--out", str(out)]
    assert main(argv) == 0
    header = json.loads(out.read_text().splitlines()[0])
    assert header["data"]["spec"] == "distilled:8" and header["data"]["evaluate_on"]["spec"] == "fmnist"
    assert header["eval"]["dataset"] == "fmnist (calibrated on distilled:8)"
    # the bench's statistics are taken on the same distilled images, distilled again from its record
    capsys.readouterr()
    assert (
        main(
            [
                "rank",
                "--bench",
                str(out),
                "--proxies",
                "fisher",
                "--split",
                "all",
                "--samples",
                "0",
                "--repeats",
                "1",
                *FAST[:0],
            ]
        )
        == 0
    )
    assert "fisher" in capsys.readouterr().out
