"""benchmarks/same_result.py's text: a line per tensor (hash and sum) and per number, so that a
difference of one float's last bit shows in a diff, and nothing that differs from run to run."""

import importlib.util
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "same_result.py"


def _walk():
    spec = importlib.util.spec_from_file_location("same_result", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.walk


def test_one_bit_shows_and_timings_do_not():
    walk = _walk()
    x = torch.linspace(0, 1, 50)
    blob = {"layers": [{"H": x, 3: 1.5}], "timings": {"H": 2.0}, "seconds_per_config": 0.1, "model": "m"}
    lines = []
    walk(blob, "m", lines)
    assert len(lines) == 3 and lines[-1] == "m.model 'm'" and any(l.startswith("m.layers[0].3 ") for l in lines)
    assert not any("timings" in l or "seconds" in l for l in lines)
    nudged = x.clone()
    nudged[7] = torch.nextafter(nudged[7], torch.tensor(2.0))
    again = []
    walk({**blob, "layers": [{"H": nudged, 3: 1.5}], "timings": {"H": 9.0}, "seconds_per_config": 0.2}, "m", again)
    assert [l for l in again if l not in lines] == [next(l for l in again if ".H " in l)]
