import argparse
import json

import pytest

from evoproxy.cli import build_parser, main
from evoproxy.cli.args import FLAGS

FAST = ["--batch-size", "8", "--hutchinson-samples", "4", "--power-iters", "3"]


@pytest.mark.slow
def test_stats_on_the_default_model_prints_all_22_layers(capsys, tmp_path):
    assert main(["stats", "--model", "default", *FAST, "--json", "--cache-dir", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["layers"]) == 22 and out["from_cache"] is False
    assert out["layers"][0]["name"] == "conv1" and out["layers"][-1]["name"] == "fc"
    assert all(row["grad_norm"] > 0 for row in out["layers"])
    assert main(["stats", "--model", "default", *FAST, "--cache-dir", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "from cache" in table and "layers.8.conv2" in table and "λmax(H)" in table


def test_bad_input_is_one_line_on_stderr(capsys, tmp_path):
    assert main(["stats", "--model", "default", "--weights", str(tmp_path / "nope.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.pt does not exist" in err and "Traceback" not in err
    assert main(["stats", "--model", "default", "--batch-size", "0"]) == 2
    assert "--batch-size" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--name", "../escape"], "--name"),
        (["--name", "/tmp/abs"], "--name"),
        (["--name", ".."], "--name"),
        (["--candidate-timeout", "0"], "--candidate-timeout"),
        (["--jobs", "0"], "--jobs"),
        (["--seed", "-1"], "--seed"),
        (["--hours", "0"], "--hours"),
        (["--hours", "nan"], "--hours"),
        (["--patience", "-1"], "--patience"),
        (["--log-every", "-1"], "--log-every"),
        (["--population", "10000000"], "--population"),
        (["--islands", "1000000"], "--islands"),
        (["--parsimony", "-0.1"], "--parsimony"),
        (["--device", "nonsense"], "--device"),
    ],
)
def test_evolve_refuses_bad_numbers_and_run_names_in_one_line(flags, named, capsys, tmp_path):
    # Checked before anything runs or is written: no statistics, no run folder.
    assert main(["evolve", "--preset", "paper", *flags, "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and named in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "escape").exists()


@pytest.mark.parametrize("flags", [["--repeats", "0"], ["--samples", "-1"]])
def test_rank_refuses_bad_counts(flags, capsys):
    assert main(["rank", *flags]) == 2
    assert flags[0] in capsys.readouterr().err


def test_a_user_model_without_weights_is_warned_about_in_one_line(tmp_path):
    import warnings

    import torch

    from evoproxy.cli import _one_line
    from evoproxy.errors import EvoproxyWarning
    from evoproxy.model import load_model

    with pytest.warns(EvoproxyWarning, match="pass weights, a saved state_dict") as caught:
        model, _ = load_model("synthetic_stats:tiny_fmnist_net")
    line = _one_line(caught[0].message, EvoproxyWarning, "f.py", 1)
    assert line.startswith("evoproxy: warning: synthetic_stats:tiny_fmnist_net runs with") and line.count("\n") == 1
    torch.save(model.state_dict(), tmp_path / "w.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # with its weights: no warning
        load_model("synthetic_stats:tiny_fmnist_net", tmp_path / "w.pt")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["stats", "--calib-images", "0"], "--calib-images must be a whole number at least 1, got 0"),
        (["stats", "--data", "nonsense"], "--data must be fmnist, kjv, a folder, an .npz/.pt file"),
        (["stats", "--batch-size", "600"], "--batch-size must be a whole number between 1 and 512 (the calibration"),
        (["stats", "--power-iters", "0"], "--power-iters must be a whole number at least 1, got 0"),
        (["stats", "--hessian-seconds", "0"], "--hessian-seconds must be a number above 0, got 0.0"),
        (["bench", "build", "--out", "b.jsonl", "--configs", "0"], "--configs must be a whole number between 1 and"),
        (["rank", "--seed", "-1"], "--seed must be a whole number at least 0, got -1"),
        (["bench", "build", "--out", "b.jsonl", "--scheduler", "tcp://h:8786"], "--scheduler needs --backend dask"),
        (["evolve", "--scheduler", "tcp://h:8786"], "--scheduler needs --backend dask"),
        (["quantize", "--bits-file", "b.json", "--method", "qat", "--epochs", "0"], "--epochs must be a whole number"),
        (["quantize", "--bits-file", "b.json", "--method", "qat", "--batch-size", "0"], "--batch-size must be a whole"),
    ],
)
def test_a_setting_out_of_range_is_named_by_its_flag(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--hutchinson-samples", "2"] if argv[0] == "stats" else argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"evoproxy {argv[0]}: error: {message}" in err
    assert not (tmp_path / "b.jsonl").exists()


def test_every_flag_of_the_flags_table_is_a_flag_of_a_command():
    options: set[str] = set()

    def collect(parser: argparse.ArgumentParser) -> None:
        parser.format_help()  # a command may add flags only when it is first used
        for action in parser._actions:
            options.update(action.option_strings)
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    collect(sub)

    collect(build_parser())
    assert set(FLAGS.values()) <= options, set(FLAGS.values()) - options


def test_the_help_names_the_statistics_stages_own_batch_defaults():
    from evoproxy import stats
    from evoproxy.cli import args

    # The help is built without importing the stage, so it holds copies that must stay the stage's.
    assert (args.STATS_BATCH, args.TEXT_STATS_BATCH) == (stats.STATS_BATCH, stats.TEXT_STATS_BATCH)
