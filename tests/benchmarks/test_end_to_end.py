"""benchmarks/end_to_end.py on tiny settings: one row per (budget, allocator) with every stage's
accuracy, a configuration met twice copied rather than measured again, a rerun that does no work,
and the markdown table."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from evoproxy.model import load_fmnist

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "end_to_end.py"


@pytest.fixture
def end_to_end():
    spec = importlib.util.spec_from_file_location("end_to_end", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def data(tmp_path):
    """The shipped test split cut into a train and a test part (a fresh machine has no train split)."""
    images, labels = load_fmnist("test")
    images = images.permute(0, 2, 3, 1).numpy()  # stored N×H×W×C
    path = tmp_path / "fmnist.npz"
    np.savez(
        path,
        train_images=images[:600],
        train_labels=labels[:600].numpy(),
        test_images=images[600:900],
        test_labels=labels[600:900].numpy(),
    )
    return path


@pytest.mark.slow
def test_rows_resume_and_table(end_to_end, data, tmp_path, capsys, monkeypatch):
    out = tmp_path / "e2e.jsonl"
    # W2 (0.0683 MB, 0.50 GBOPs) is the largest uniform width under both budgets: met twice.
    argv = [
        "--models",
        "resnet20-fmnist",
        "--budgets-mb",
        "resnet20-fmnist=0.085",
        "--bops-g",
        "resnet20-fmnist=0.105:0.6",
        "--proxies",
        "mean-bits",
        "--methods",
        "",
        "--eval-size",
        "200",
        "--qat-images",
        "256",
        "--adaround-iters",
        "20",
        "--calib-images",
        "64",
        "--stats-batch",
        "16",
        "--data",
        str(data),
        "--out",
        str(out),
    ]
    end_to_end.main(argv)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["budget_mb"], r["budget_gbops"], r["allocator"]) for r in rows] == [
        (0.085, None, "mean-bits"),
        (0.085, None, "uniform"),
        (0.105, 0.6, "mean-bits"),
        (0.105, 0.6, "uniform"),
    ]
    for r in rows:
        assert r["size_mb"] <= r["budget_mb"] and (r["budget_gbops"] is None or r["gbops"] <= r["budget_gbops"])
        assert set(r["acc"]) == {"fp", "ptq", "adaround", "qat"} and all(0 <= a <= 100 for a in r["acc"].values())
        assert r["settings"]["eval_size"] == 200 and r["machine"].startswith("CPU")
    uniform = [r for r in rows if r["allocator"] == "uniform"]
    assert min(uniform[0]["w_bits"]) == 2 and uniform[1]["w_bits"] == uniform[0]["w_bits"]
    assert uniform[1]["same_as"] == "uniform at 0.085 MB" and uniform[1]["acc"] == uniform[0]["acc"]
    assert "statistics" in rows[0]["seconds"] and "qat" in rows[0]["seconds"]
    capsys.readouterr()

    def no_work(*args, **kwargs):
        raise AssertionError("a finished row was measured again")

    monkeypatch.setattr(end_to_end.Runner, "_accuracies", no_work)
    before = out.read_text()
    end_to_end.main(argv)
    assert out.read_text() == before
    table = capsys.readouterr().out
    assert "| allocator | 0.085 MB | 0.105 MB + 0.6 GBOPs | cost (s) | measured on |" in table
    mean_bits = next(line for line in table.splitlines() if line.startswith("| mean-bits"))
    assert f"{rows[0]['acc']['ptq']:.2f} / {rows[0]['acc']['adaround']:.2f} / {rows[0]['acc']['qat']:.2f}" in mean_bits
    assert "W2 (0.068 MB): " in table

    end_to_end.main(argv + ["--table-only"])
    assert capsys.readouterr().out == table


@pytest.mark.slow
def test_a_method_row_is_one_searchs_and_another_search_is_another_row(end_to_end, data, tmp_path, capsys):
    out = tmp_path / "e2e.jsonl"
    argv = [
        "--models",
        "resnet20-fmnist",
        "--budgets-mb",
        "resnet20-fmnist=0.095",
        "--bops-g",
        "resnet20-fmnist=0.095:0.8",
        "--proxies",
        "",
        "--methods",
        "edmips",
        "--search-images",
        "128",
        "--eval-size",
        "100",
        "--qat-images",
        "128",
        "--adaround-iters",
        "5",
        "--calib-images",
        "64",
        "--data",
        str(data),
        "--out",
        str(out),
    ]
    end_to_end.main(argv)
    end_to_end.main(argv)  # finished: nothing searched again
    end_to_end.main(argv + ["--search-epochs", "2"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    methods = [r for r in rows if r["kind"] == "method"]
    assert [(r["budget_gbops"], r["search"]["epochs"]) for r in methods] == [(None, 1), (0.8, 1), (None, 2), (0.8, 2)]
    assert all(r["search"]["train_images"] == 128 and r["size_mb"] <= 0.095 for r in methods)
    assert len(rows) == len(methods) + 2  # uniform's two rows, measured once
    capsys.readouterr()
    for epochs, row in ((1, methods[0]), (2, methods[2])):
        end_to_end.main(argv + ["--search-epochs", str(epochs), "--table-only"])
        edmips = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| edmips"))
        assert f"{row['acc']['ptq']:.2f} / {row['acc']['adaround']:.2f}" in edmips
