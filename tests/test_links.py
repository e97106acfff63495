"""No file the product writes is written through a symbolic link planted in its place: a link
named by a file flag is refused in one line, a link at a file the product makes (a cache entry,
a run's files, a bench's lock) is replaced or refused, and the file it points to is never
changed."""

import os
from pathlib import Path

import pytest

from evoproxy.cli import main
from evoproxy.errors import EvoproxyError
from evoproxy.evolve import RunStore
from evoproxy.files import filling, open_in_place, write_atomically

PRECIOUS = "precious: must stay as it is\n"


@pytest.fixture
def victim(tmp_path):
    """A file that a planted link points to."""
    path = tmp_path / "victim.txt"
    path.write_text(PRECIOUS)
    return path


def _plant(at: Path, target: Path) -> Path:
    at.unlink(missing_ok=True)
    at.symlink_to(target)
    return at


FAST = ["--batch-size", "16", "--hutchinson-samples", "4", "--power-iters", "3"]
ALLOCATE = ["--proxy", "fisher", "--size-mb", "1", *FAST]

# Each command with a file flag, its model and data flags M (the trained MLP's), the bits file
# B that `allocate` wrote for it, and the link L; the flag its error names.
FILE_FLAGS = {
    "bits file": (lambda M, B, L: ["allocate", *M, *ALLOCATE, "--out", L], "--out"),
    "plot": (lambda M, B, L: ["allocate", *M, *ALLOCATE, "--plot", L], "--plot"),
    "onnx": (lambda M, B, L: ["export", *M, "--bits-file", B, "--onnx", L, "--eval-size", "0"], "--onnx"),
    "qat checkpoint": (
        lambda M, B, L: ["quantize", *M, "--bits-file", B, "--method", "qat", "--checkpoint", L],
        "checkpoint",
    ),
    "layer config": (lambda M, B, L: ["layer-config", "--bits-file", B, "--to", "modules", "--out", L], "--out"),
    "latency table": (lambda M, B, L: ["latency", *M, "--repeats", "1", "--warmup", "0", "--out", L], "--out"),
    "bench file": (lambda M, B, L: ["bench", "build", *M, "--configs", "2", "--eval-size", "40", "--out", L], "bench"),
}


@pytest.mark.parametrize("case", FILE_FLAGS)
def test_a_file_flag_naming_a_link_is_refused_in_one_line_and_the_target_is_untouched(
    case, trained_mlp, victim, capsys, one_line_error
):
    assert main(["allocate", *trained_mlp, *ALLOCATE, "--out", "bits.json"]) == 0
    command, flag = FILE_FLAGS[case]
    link = _plant(Path("out.link"), victim)
    capsys.readouterr()  # what allocate printed
    assert main(command(trained_mlp, "bits.json", str(link))) == 2
    one_line_error(flag, "out.link", "symbolic link")
    assert victim.read_text() == PRECIOUS and link.is_symlink()


def test_a_statistics_cache_entry_planted_as_links_is_replaced_not_written_through(
    trained_mlp, tmp_path, victim, capsys
):
    assert main(["stats", *trained_mlp, *FAST]) == 0
    entries = sorted((tmp_path / "cache").glob("stats-*"))
    assert [p.suffix for p in entries] == [".pt", ".sha256"]
    for entry in entries:
        _plant(entry, victim)
    assert main(["stats", *trained_mlp, *FAST]) == 0  # the links do not match: recomputed and written anew
    assert victim.read_text() == PRECIOUS
    assert all(p.is_file() and not p.is_symlink() for p in entries)
    assert main(["stats", *trained_mlp, *FAST]) == 0
    assert "computing" not in capsys.readouterr().err.split("stats")[-1]  # the rewritten entry serves


def test_a_run_folder_or_a_database_file_planted_as_a_link_is_refused(tmp_path, victim):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "runs").mkdir()
    _plant(tmp_path / "runs" / "v", elsewhere)
    with pytest.raises(EvoproxyError, match="the run folder .*runs/v is a symbolic link"):
        RunStore(tmp_path / "runs" / "v" / "run.db", new={"config": {}})
    assert list(elsewhere.iterdir()) == []
    run = tmp_path / "r" / "run.db"
    RunStore(run, new={"config": {"space": "x"}}).close()
    for side in ("-wal", "-shm", "-journal"):
        link = _plant(run.with_name("run.db" + side), victim)
        with pytest.raises(EvoproxyError, match=f"run.db{side} is a symbolic link"):
            RunStore(run, write=True)
        link.unlink()
    assert victim.read_text() == PRECIOUS


def test_files_written_in_one_step_replace_a_link_and_files_grown_in_place_refuse_one(tmp_path, victim):
    link = _plant(tmp_path / "best.py", victim)
    write_atomically(link, "new\n")
    assert not link.is_symlink() and link.read_text() == "new\n"
    bench = _plant(tmp_path / "bench.jsonl", victim)
    for mode in ("a", "r+b"):
        with pytest.raises(EvoproxyError, match="bench.jsonl is a symbolic link"):
            open_in_place(bench, mode)
    folder = tmp_path / "saved"
    folder.mkdir()
    _plant(folder / "config.json", victim)
    with filling(folder) as tmp:  # what save_pretrained writes goes to a fresh folder first
        (tmp / "config.json").write_text("{}")
    assert (folder / "config.json").read_text() == "{}" and not (folder / "config.json").is_symlink()
    assert [p.name for p in folder.iterdir()] == ["config.json"]
    assert victim.read_text() == PRECIOUS and os.listdir(tmp_path).count("victim.txt") == 1
