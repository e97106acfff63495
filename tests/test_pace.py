"""Progress lines of long loops (evoproxy.pace): when they come, what they say, and that every
long stage of the statistics and AdaRound's reconstruction gives them."""

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
