"""Progress lines of long loops (evoproxy.pace): when they come, what they say, and that every
long stage of the statistics, AdaRound's reconstruction, a PTQ measurement's passes, the
competing allocators' calibration passes and Shapley rounds and bench building's chunks give them
(those as plain lines off a terminal, a bar on one)."""

from types import SimpleNamespace

import pytest
import torch

from evoproxy import pace
from evoproxy.pace import paced
from evoproxy.stats import StatsSettings, compute_stats


def test_a_line_before_each_item_once_the_interval_has_passed_none_before_the_first():
    lines: list[str] = []
    assert list(paced("abcd", 4, "step", lines.append, seconds=0.0)) == list("abcd")
    assert [line.split(" (")[0] for line in lines] == ["step 1/4", "step 2/4", "step 3/4"]
    assert all(line.endswith(" s left)") for line in lines)
    lines.clear()
    assert list(paced(range(3), 3, "step", lines.append, seconds=3600.0)) == [0, 1, 2] and lines == []
    assert list(paced(range(3), 3, "step", None, seconds=0.0)) == [0, 1, 2]  # no log: no lines, same items


def test_loops_too_short_to_speak_alone_speak_once_their_silence_adds_up(monkeypatch):
    clock = iter(range(0, 1000, 10))  # each reading of the clock 10 s after the one before
    monkeypatch.setattr(pace, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    monkeypatch.setattr(pace, "_quiet_since", None)
    lines: list[str] = []
    assert list(paced("ab", 2, "first", lines.append, seconds=30.0)) == list("ab") and lines == []  # 20 s
    assert list(paced("ab", 2, "second", lines.append, seconds=30.0)) == list("ab")  # 20 s of its own
    assert lines == ["second 1/2 (20 s, about 20 s left)"]  # 50 s since the first began
    monkeypatch.setattr(pace, "_quiet_since", None)
    lines.clear()
    assert list(paced("ab", 2, "second", lines.append, seconds=30.0)) == list("ab") and lines == []  # alone: quiet


def test_every_long_stage_of_the_statistics_reports_its_progress(tiny, monkeypatch):
    monkeypatch.setattr(pace, "PROGRESS_SECONDS", 0.0)
    model, x, y = tiny
    lines: list[str] = []
    compute_stats(model.float(), x.float(), y, "tiny", StatsSettings(hutchinson_samples=3, power_iters=3), lines.append)
    for stage in ("Hutchinson sample 1/3", "top eigenvalues: layer 1/"):
        assert any(line.startswith(stage) for line in lines), (stage, lines)
    assert any(line.startswith("output perturbations: layer 1/") for line in lines), lines


def test_adaround_reports_its_progress_within_a_block(monkeypatch):
    from evoproxy.model import layer_registry
    from evoproxy.quant import AdaRoundSettings, adaround_model

    monkeypatch.setattr(pace, "PROGRESS_SECONDS", 0.0)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
    layers = layer_registry(model, (6,))
    lines: list[str] = []
    adaround_model(model, layers, [4, 4], torch.randn(16, 6), AdaRoundSettings(iters=4), log=lines.append)
    assert any(line.startswith("block 1/") and ": iteration 1/4 (" in line for line in lines), lines


@pytest.mark.parametrize("sweep", [True, False], ids=["sweep", "one model at a time"])
def test_a_ptq_measurement_reports_each_of_its_passes_over_the_images(monkeypatch, sweep):
    from evoproxy.model import layer_registry
    from evoproxy.quant import PtqEvaluator, QuantSettings

    monkeypatch.setattr(pace, "PROGRESS_SECONDS", 0.0)  # every batch is "long" after the first
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(32, 3)
    ).eval()
    calib, images, labels = torch.randn(300, 1, 6, 6), torch.randn(250, 1, 6, 6), torch.randint(0, 3, (250,))
    lines: list[str] = []
    evaluator = PtqEvaluator(net, layer_registry(net, (1, 6, 6)), calib, images, labels, QuantSettings(8), lines.append)
    if not sweep:
        evaluator.sweep = None
    quiet = PtqEvaluator(net, evaluator.layers, calib, images, labels, QuantSettings(8))
    assert evaluator.fp_value() == quiet.fp_value() and evaluator.measure([4, 4]) == quiet.measure([4, 4])
    assert [line.split(" (")[0] for line in lines] == [
        *(f"evaluation: batch {i}/3" for i in (1, 2)),  # the float model's
        "BatchNorm re-estimation: batch 1/2",  # batches of 256
        *(f"activation ranges: batch {i}/3" for i in (1, 2)),
        *(f"evaluation: batch {i}/3" for i in (1, 2)),
    ]


def test_quantize_reports_its_passes_on_stderr(trained_mlp, monkeypatch, capsys):
    import json

    from evoproxy.cli import main

    with open("bits.json", "w") as f:
        json.dump({"bits": [4, 4, 4]}, f)
    monkeypatch.setattr(pace, "PROGRESS_SECONDS", 0.0)
    assert main(["quantize", *trained_mlp, "--bits-file", "bits.json"]) == 0
    out, err = capsys.readouterr()
    assert "[rtn] activation ranges: batch 1/2 (" in err  # the mlp has no BatchNorm; its 48 test vectors are one batch
    assert "batch" not in out


@pytest.mark.parametrize("method", ["edmips", "seam", "smpq", "adaqat"])
def test_the_competing_allocators_report_their_setup_passes(trained_mlp, monkeypatch, capsys, method):
    from evoproxy.cli import main

    monkeypatch.setattr(pace, "PROGRESS_SECONDS", 0.0)
    own = {"smpq": ["--val-images", "64", "--samples", "2"], "seam": ["--batch-size", "4"]}.get(method, [])
    assert main(["mpq", "--method", method, *trained_mlp, "--size-mb", "1", "--out", "a.json", *own]) == 0
    err = capsys.readouterr().err
    assert f"[{method}] activation ranges: batch 1/2 (" in err  # the mlp's 192 calibration vectors
    if method == "seam":
        assert "[seam] class statistics: batch 1/2 (" in err  # its 8 training vectors' features, 4 a batch
    if method == "smpq":
        assert "[smpq] Shapley round: removal 1/" in err  # within the round, not only at the epoch's end


@pytest.mark.parametrize("terminal", [False, True], ids=["log file", "terminal"])
def test_bench_build_prints_a_bar_on_a_terminal_and_plain_lines_elsewhere(trained_mlp, monkeypatch, capsys, terminal):
    import sys

    from evoproxy.cli import main

    monkeypatch.setattr(pace, "PROGRESS_SECONDS", 0.0)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)
    build = ["bench", "build", *trained_mlp, "--fixed", "none", "--bits", "2,3,4,8", "--configs", "40"]
    assert main([*build, "--out", "b.jsonl"]) == 0
    err = capsys.readouterr().err
    chunks = [line.split(" (")[0] for line in err.splitlines() if "chunk" in line]
    if terminal:  # tqdm redraws its bar in place
        assert "\r" in err and "40/40" in err and chunks == []
    else:  # a log file gets whole lines, the chunks' among them (16 configurations each: 3 chunks)
        assert "\r" not in err and chunks == ["b: 16-configuration chunk 1/3", "b: 16-configuration chunk 2/3"]
