"""Validity rate of the search spaces (EMQ Table 3) and the `evoproxy validity` command."""

import json

import pytest
from synthetic_stats import tiny_conv_stats

from evoproxy.cli import main
from evoproxy.proxy import measure_validity

MODEL = ["--model", "synthetic_stats:tiny_fmnist_net", "--batch-size", "16"]


@pytest.mark.slow
def test_measure_validity_accounts_for_every_sample():
    stats = tiny_conv_stats()
    report = measure_validity("dag", stats, 200, osp=False, seed=1)
    assert report.valid + sum(report.reasons.values()) == 200 and 0 < report.rate < 1
    assert any(reason.startswith("shape mismatch") for reason in report.reasons)
    assert measure_validity("dag", stats, 200, osp=False, seed=1) == report  # seeded
    assert measure_validity("dag", stats, 200, osp=True, seed=1) != report


def test_validity_command_prints_the_share(capsys):
    assert main(["validity", "--space", "branched", "--samples", "40", *MODEL]) == 0
    out = capsys.readouterr().out
    assert out.startswith("branched space, with OSP, seed 0, synthetic_stats:tiny_fmnist_net: ")
    assert "sampled proxies valid (" in out
    assert (
        main(["validity", "--space", "sequential", "--samples", "40", "--no-osp", "--seed", "3", "--json", *MODEL]) == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["space"] == "sequential" and report["osp"] is False and report["samples"] == 40
    assert report["valid"] + sum(report["reasons"].values()) == 40


@pytest.mark.parametrize(
    "args, message",
    [
        (["--space", "tree"], "no search space 'tree'"),
        (["--samples", "0"], "--samples must be at least 1"),
    ],
)
def test_validity_command_errors_are_one_line(capsys, args, message):
    assert main(["validity", *args, *MODEL]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
