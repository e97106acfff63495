"""`evoproxy latency` writes a table that `evoproxy allocate --latency-ms --latency-table` reads: the
allocation meets the budget and records it with its predicted latency; a budget without a table, a
table of other layers, a budget below the fastest configuration and a search method with a latency
budget are one-line errors."""

import json

import pytest

from evoproxy.cli import main

FAST = ["--batch-size", "8", "--hutchinson-samples", "4", "--power-iters", "3"]


def test_a_latency_budget_without_a_table_names_the_fix(one_line_error):
    assert main(["allocate", "--proxy", "snip", "--size-mb", "0.1", "--latency-ms", "0.5"]) == 2
    one_line_error("--latency-ms", "evoproxy latency", "--latency-table")


def test_a_search_method_takes_no_latency_budget(tmp_path, one_line_error):
    (tmp_path / "lat.json").write_text("{}")
    argv = ["allocate", "--method", "edmips", "--size-mb", "0.1", "--latency-ms", "0.5"]
    assert main([*argv, "--latency-table", str(tmp_path / "lat.json")]) == 2
    one_line_error("--method edmips searches without the latency table")


@pytest.mark.slow
def test_latency_table_then_allocate_under_a_latency_budget(trained_mlp, one_line_error, capsys):
    pytest.importorskip("onnxruntime", reason="onnxruntime is absent: pip install -e '.[onnx]'")
    assert main(["latency", *trained_mlp, "--repeats", "3", "--warmup", "1", "--out", "lat.json"]) == 0
    out = capsys.readouterr().out
    assert "W8A8" in out and "int8" in out and "wrote lat.json" in out
    table = json.loads(open("lat.json").read())
    assert [r["name"] for r in table["layers"]] == ["0", "2", "4"] and table["settings"]["threads"] == 1

    allocate = ["allocate", *trained_mlp, *FAST, "--proxy", "snip", "--size-mb", "1", "--bits", "4,8,32"]
    allocate += ["--act-bits", "8,32", "--latency-table", "lat.json"]
    assert main([*allocate, "--out", "free.json"]) == 0
    free = json.loads(open("free.json").read())["latency_ms"]
    assert "predicted by lat.json (no latency budget)" in capsys.readouterr().out
    assert main([*allocate, "--out", "tight.json", "--latency-ms", "0.0001"]) == 2
    fastest = float(one_line_error("below the fastest feasible").split("feasible ")[1].split(" ms")[0])
    budget = round((fastest + free) / 2, 6) if free > fastest else free
    assert main([*allocate, "--out", "budget.json", "--latency-ms", str(budget)]) == 0
    record = json.loads(open("budget.json").read())
    assert record["latency_budget_ms"] == budget and record["latency_ms"] <= budget
    printed = capsys.readouterr().out
    assert f"(budget {budget} ms)" in printed and "latency (ms)" in printed

    table["layers"].pop()
    open("short.json", "w").write(json.dumps(table))
    assert main([*allocate[:-1], "short.json", "--latency-ms", "1", "--out", "x.json"]) == 2
    one_line_error("latency table short.json was measured on", "(2 layers, the model has 3)", "evoproxy latency")
