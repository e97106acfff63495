"""Bench files are validated against their header, and one build at a time writes a file."""

import json
import math
import re

import pytest

from evoproxy import locking
from evoproxy.bench import build_bench, load_bench
from evoproxy.cli import main
from evoproxy.errors import EvoproxyError
from evoproxy.model import layer_registry, open_data
from synthetic_stats import tiny_conv_net

HEADER = {"name": "b", "model": "m", "layers": ["a", "b", "c"], "bit_choices": [2, 4], "fixed": {"a": 8}, "act_bits": 8}


def _write(path, header, entries):
    path.write_text("\n".join(json.dumps(x) for x in [header, *entries]) + "\n")
    return path


@pytest.mark.parametrize(
    "entries, message",
    [
        ([{"bits": [8, 2, 3], "accuracy": 50}], "layer c 3 bits, outside its choices [2, 4]"),
        ([{"bits": [4, 2, 2], "accuracy": 50}], "layer a 4 bits, outside its choices [8]"),
        ([{"bits": [8, 2.5, 2], "accuracy": 50}], "list of whole numbers"),
        ([{"bits": [8, 2, 2], "accuracy": math.nan}], "not a percentage"),
        ([{"bits": [8, 2, 2], "accuracy": 101}], "not a percentage"),
        (
            [{"bits": [8, 2, 2], "accuracy": 50}, {"bits": [8, 2, 2], "accuracy": 51}],
            "entries 1 and 2 have the same bits",
        ),
        ([{"bits": [8, 2], "accuracy": 50}], "2 bits for 3 layers"),
    ],
)
def test_entries_must_fit_the_header(tmp_path, entries, message):
    with pytest.raises(EvoproxyError, match=re.escape(message)):
        load_bench(_write(tmp_path / "b.jsonl", HEADER, entries))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"layers": "abc"}, "layers"),
        ({"bit_choices": [2, "4"]}, "bit_choices"),
        ({"fixed": {"a": 8.5}}, "fixed"),
        ({"act_bits": 0}, "act_bits"),
        ({"model": 3}, "model"),
        ({"fixed": {"z": 8}}, "does not have: z"),
    ],
)
def test_header_fields_of_the_wrong_type_are_refused(tmp_path, change, message):
    with pytest.raises(EvoproxyError, match=message):
        load_bench(_write(tmp_path / "b.jsonl", {**HEADER, **change}, []))


def test_shipped_benches_pass_the_checks():
    from evoproxy.bench import shipped_benches

    assert all(len(load_bench(name).entries) >= 600 for name in shipped_benches())


def test_a_second_build_of_the_same_file_is_refused_while_the_first_holds_it(tmp_path, capsys):
    out = tmp_path / "b.jsonl"
    model = tiny_conv_net(10)
    calib, images, labels = open_data().ptq_data(20)
    layers = layer_registry(model, (1, 28, 28))
    with locking.held(out, str(out)):  # as a running build holds it
        with pytest.raises(EvoproxyError, match=r"b.jsonl is in use by process \d+"):
            build_bench(
                out,
                model,
                "m",
                layers,
                calib,
                images,
                labels,
                bit_choices=[2, 4],
                n_configs=2,
                fixed={},
                progress=False,
            )
        assert locking.lock_holder(out) is not None
    assert locking.lock_holder(out) is None
    bench = build_bench(
        out, model, "m", layers, calib, images, labels, bit_choices=[2, 4], n_configs=2, fixed={}, progress=False
    )
    assert len(bench.entries) == 2


@pytest.mark.slow
@pytest.mark.parametrize(
    "flags, named",
    [(["--configs", "0"], "--configs"), (["--configs", "10000000"], "--configs"), (["--jobs", "0"], "--jobs")],
)
def test_bench_build_bounds_are_one_line_errors(tmp_path, capsys, flags, named):
    assert main(["bench", "build", "--out", str(tmp_path / "b.jsonl"), "--eval-size", "10", *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and named in err
