import json

import pytest
import torch
from torch import nn

from evoproxy.bench import bench_model, build_bench, is_held_out, load_bench, shipped_benches
from evoproxy.errors import EvoproxyError, ParameterError
from evoproxy.model import MODELS, layer_registry, weights_hash


def _tiny():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 1, 6, 6, generator=g)
    y = model(x).argmax(1)  # labels the float model gets right, so quantization has an effect to show
    return model, layer_registry(model, (1, 6, 6)), x, y


def _build(out, n, **kw):
    model, layers, x, y = _tiny()
    return build_bench(
        out,
        model,
        "tiny",
        layers,
        x[:32],
        x,
        y,
        bit_choices=[2, 3, 4],
        n_configs=n,
        fixed={2: 8},
        name="tiny",
        progress=False,
        **kw,
    )


def test_resumed_build_writes_the_same_file_as_an_uninterrupted_one(tmp_path):
    whole = tmp_path / "whole.jsonl"
    _build(whole, 7, chunk=2)
    lines = whole.read_bytes().splitlines(keepends=True)
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(b"".join(lines[:4]) + b'{"bits": [2, 3')  # killed after 3 entries, writing the 4th
    bench = _build(cut, 7, chunk=2)
    assert cut.read_bytes() == whole.read_bytes()
    assert len(bench.entries) == 7 and len({e.bits for e in bench.entries}) == 7
    assert all(e.bits[2] == 8 for e in bench.entries)


def test_a_longer_build_adds_the_configurations_it_lacks(tmp_path):
    whole, grown = _build(tmp_path / "whole.jsonl", 7), tmp_path / "grown.jsonl"
    first = _build(grown, 3)
    bench = _build(grown, 7)
    assert bench.entries[:3] == first.entries  # kept, not measured again
    assert sorted(bench.entries, key=lambda e: e.bits) == whole.entries  # the first 7 sampled, as one build


def test_resume_with_other_settings_is_refused(tmp_path):
    out = tmp_path / "b.jsonl"
    _build(out, 2)
    model, layers, x, y = _tiny()
    with pytest.raises(EvoproxyError, match="exists with other settings"):
        build_bench(out, model, "tiny", layers, x, x, y, bit_choices=[3, 4], n_configs=3, fixed={2: 8}, progress=False)


@pytest.mark.slow
def test_parallel_build_gives_the_same_entries(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    _build(a, 5)
    _build(b, 5, jobs=2, chunk=2)
    assert a.read_bytes() == b.read_bytes()


def test_too_many_configs_for_the_space_is_a_clear_error(tmp_path):
    with pytest.raises(
        EvoproxyError, match=r"build_bench\.n_configs must be at most 9, the distinct configurations of 2 free layers"
    ):
        _build(tmp_path / "x.jsonl", 10)  # 2 free layers × 3 choices = 9


def test_plain_json_from_another_tool_loads_and_split_is_stable(tmp_path):
    header = {
        "name": "other",
        "model": "m",
        "layers": ["a", "b"],
        "bit_choices": [2, 4],
        "fixed": {},
        "act_bits": 8,
        "split_seed": 3,
        "held_out_fraction": 0.5,
    }
    entries = [{"bits": [a, b], "accuracy": 50.0 + a + b} for a in (2, 4) for b in (2, 4)]
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"header": header, "entries": entries}))
    bench = load_bench(path)
    assert len(bench.entries) == 4 and bench.entries[0].bits == (2, 2)
    held = bench.split("held-out")
    assert len(held) + len(bench.split("search")) == 4
    assert all(is_held_out(e.bits, 3, 0.5) for e in held)


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "empty or not a benchmark"),
        ('{"name": "x"}\n', "lacks header field"),
        (
            '{"name": "x", "model": "m", "layers": ["a"], "bit_choices": [2], "fixed": {}, "act_bits": 8}\n'
            '{"bits": [2, 2], "accuracy": 1}\n',
            "has 2 bits for 1 layers",
        ),
        (
            '{"name": "x", "model": "m", "layers": ["a"], "bit_choices": [2], "fixed": {}, "act_bits": 8}\n'
            '{"bits": [2]}\n',
            "needs 'bits'",
        ),
    ],
)
def test_malformed_files_give_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(EvoproxyError, match=message):
        load_bench(path)


def test_unknown_bench_lists_the_shipped_ones():
    with pytest.raises(EvoproxyError, match="fmnist-resnet20-w234"):
        load_bench("no-such-bench")


def test_shipped_benches_load_and_match_their_models():
    names = shipped_benches()
    benches = [load_bench(name) for name in names]
    assert {b.header["model"] for b in benches} == set(MODELS)  # a bench per model
    for bench in benches:
        assert len(bench.entries) >= 500
        assert len(bench.split("held-out")) > 50 and len(bench.split("search")) > 400
        model, layers, source = bench_model(bench)  # the shipped checkpoint, its data and its registry
        assert weights_hash(model) == bench.header["weights_hash"]
        bench.check_layers([l.name for l in layers])
        with pytest.raises(EvoproxyError, match="another model's layers"):
            bench.check_layers([l.name for l in layers][::-1])
        assert bench.metric == source.metric
        fixed = bench.header["fixed"]
        if source.is_text:  # weights only, every layer free, the output head at full precision
            assert fixed == {} and bench.header["act_bits"] == 32 and bench.header["exclude"] == ["head"]
        else:
            assert all(e.bits[0] == 8 and e.bits[-1] == 8 for e in bench.entries) and len(fixed) == 2


@pytest.mark.parametrize(
    "n, bad, param",
    [
        (0, {}, "n_configs"),
        (3, {"seed": -1}, "seed"),
        (3, {"jobs": 0}, "jobs"),
        (3, {"bit_choices": [1, 2]}, "bit_choices"),
    ],
)
def test_bad_build_settings_are_refused_before_anything_is_written(tmp_path, n, bad, param):
    model, layers, x, y = _tiny()
    args = {"bit_choices": [2, 3, 4], "n_configs": n, "fixed": {2: 8}, "progress": False} | bad
    with pytest.raises(ParameterError) as info:
        build_bench(tmp_path / "b.jsonl", model, "tiny", layers, x, x, y, **args)
    assert (info.value.owner, info.value.param) == ("build_bench", param)
    assert not (tmp_path / "b.jsonl").exists()
