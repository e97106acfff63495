"""Runs from the command line, as a user meets them: a name run twice, Ctrl-C, `evoproxy runs`,
`show --top` and `--csv`, stored strings that try to drive the terminal, and the joblib workers
of a killed run."""

import csv
import hashlib
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from evoproxy.cli import main
from evoproxy.evolve import RunStore, full_report, run_summary

TINY = ["--preset", "paper", "--population", "4", "--samples", "30", "--seed", "1", "--no-report", "--log-every", "0"]

pytestmark = pytest.mark.usefixtures("shared_stats_cache")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, _stats_cache_dir):
    """A finished run of 4 iterations, to be copied by the tests that change a run."""
    os.environ["EVOPROXY_CACHE_DIR"] = str(_stats_cache_dir)
    runs = tmp_path_factory.mktemp("runs")
    assert main(["evolve", *TINY, "--iterations", "4", "--runs-dir", str(runs), "--name", "done"]) == 0
    return runs / "done"


def _copy(run_dir: Path, to: Path) -> Path:
    shutil.copytree(run_dir, to, ignore=shutil.ignore_patterns("run.db.lock"))
    return to


def _rows(run_dir: Path) -> list[tuple]:
    db = sqlite3.connect(run_dir / "run.db")
    try:
        return db.execute("SELECT * FROM candidates ORDER BY id").fetchall()
    finally:
        db.close()


def _one_line_error(err: str, command: str) -> str:
    assert err.count("\n") == 1 and err.startswith(f"evoproxy {command}: error: "), err
    return err


@pytest.mark.slow
def test_a_name_run_again_is_refused_without_resume_and_resume_says_where_it_continues(finished_run, tmp_path, capsys):
    run = _copy(finished_run, tmp_path / "done")
    before = _rows(run)
    assert main(["evolve", *TINY, "--iterations", "4", "--runs-dir", str(tmp_path), "--name", "done"]) == 2
    assert "--resume" in _one_line_error(capsys.readouterr().err, "evolve")
    assert _rows(run) == before
    assert main(["evolve", "--resume", str(run), "--no-report", "--log-every", "0"]) == 2  # nothing left to do
    assert "has done its 4 iterations: extend it with --iterations" in _one_line_error(
        capsys.readouterr().err, "evolve"
    )
    assert main(["evolve", "--resume", str(run), "--iterations", "6", "--no-report", "--log-every", "0"]) == 0
    assert f"continuing run {run} at iteration 5" in capsys.readouterr().err
    assert _rows(run)[: len(before)] == before and max(r[11] for r in _rows(run)) == 6


@pytest.mark.slow
def test_ctrl_c_saves_the_best_so_far_and_the_run_continues(tmp_path, _stats_cache_dir):
    env = {**os.environ, "EVOPROXY_CACHE_DIR": str(_stats_cache_dir)}
    run = tmp_path / "cut"
    # SIGINT restored to its default in the child: a suite started in the background of a shell
    # without job control inherits it ignored, and Python then installs no KeyboardInterrupt.
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "evoproxy.cli",
            "evolve",
            *TINY,
            "--iterations",
            "1000000",
            "--runs-dir",
            str(tmp_path),
            "--name",
            "cut",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:  # Ctrl-C once a few iterations are stored
        try:
            if (run / "run.db").is_file() and RunStore(run / "run.db").history()[2:]:
                break
        except Exception:  # noqa: BLE001 — the run may be starting
            pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the run went on after Ctrl-C") from None
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted: the best proxy so far is in" in err
    assert (run / "best.json").is_file() and (run / "best.py").is_file()
    summary = run_summary(run)
    assert summary["final"] is not None and summary["final"]["iteration"] == summary["iteration"]
    assert json.loads((run / "best.json").read_text())["name"] == "cut"
    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "evoproxy.cli",
            "evolve",
            "--resume",
            str(run),
            "--iterations",
            str(summary["iteration"] + 2),
            "--no-report",
            "--log-every",
            "0",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"at iteration {summary['iteration'] + 1}" in resumed.stderr


def test_runs_lists_each_run_with_its_status(finished_run, tmp_path, capsys):
    finished = _copy(finished_run, tmp_path / "finished")
    stopped = _copy(finished_run, tmp_path / "stopped")
    store = RunStore(stopped / "run.db", write=True)
    store.put(final=None)  # as a run killed before it chose its result
    store.close()
    running = _copy(finished_run, tmp_path / "running")
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "run.db").write_bytes(b"not a database")
    (tmp_path / "not-a-run").mkdir()
    formula = run_summary(finished)["best"]["formula"]
    (finished / "report.json").write_text(
        json.dumps(
            {"best": {"formula": formula}, "benches": {"fmnist-resnet20-w234": {"evolved": {"rho_all": 0.65432}}}}
        )
    )
    (stopped / "report.json").write_text(
        json.dumps({"best": {"formula": "another"}, "benches": {"fmnist-resnet20-w234": {"evolved": {"rho_all": 0.5}}}})
    )
    holder = RunStore(running / "run.db", write=True)
    try:
        assert main(["runs", "--runs-dir", str(tmp_path)]) == 0
    finally:
        holder.close()
    out = capsys.readouterr().out.splitlines()
    rows = {
        line.split()[0]: line.split()
        for line in out[2:]
        if line.split()[0] in ("finished", "stopped", "running", "damaged")
    }
    fittest = max(r[4] for r in _rows(finished) if r[9] == "ok")
    assert rows["finished"][1:5] == ["finished", "4/4", str(len(_rows(finished))), f"{fittest:.4f}"]
    assert rows["finished"][5] == "65.43"  # its report is about its result
    assert rows["stopped"][1] == "stopped" and rows["stopped"][5] == "-"  # a report about another proxy
    assert rows["running"][1:4] == ["running", "(process", f"{os.getpid()})"]
    assert rows["damaged"][1] == "unreadable"
    assert any(line.startswith("damaged: ") and "cannot be used as a run database" in line for line in out)
    assert not any(line.startswith("not-a-run") for line in out)


def test_show_top_prints_the_fittest_distinct_proxies_and_csv_exports_every_candidate(finished_run, tmp_path, capsys):
    assert main(["show", str(finished_run), "--top", "3", "--csv", str(tmp_path / "c.csv")]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = _rows(finished_run)
    assert out[0] == f"{len(rows)} candidates written to {tmp_path / 'c.csv'}"
    board = out[4:]
    fitness = [float(line.split()[1 if "*" not in line.split()[1] else 2]) for line in board]
    ok = sorted({(r[5], r[6], r[7]): r[4] for r in rows if r[9] == "ok"}.values(), reverse=True)
    assert len(board) == 3 and fitness == [round(f, 4) for f in ok[:3]]
    chosen = run_summary(finished_run)["best"]["formula"]
    assert sum(" * " in line for line in board) == (chosen in {line.split("  ")[-1] for line in board})
    with open(tmp_path / "c.csv", newline="", encoding="utf-8") as f:
        exported = list(csv.reader(f))
    assert exported[0][:4] == ["id", "hash", "genome", "formula"] and len(exported) == len(rows) + 1
    assert [e[1] for e in exported[1:]] == [r[1] for r in rows]
    assert main(["show", str(finished_run), "--csv", str(tmp_path / "missing" / "c.csv")]) == 2
    assert "existing, writable folder" in _one_line_error(capsys.readouterr().err, "show")
    assert main(["show", str(finished_run), "--top", "0"]) == 2
    assert "--top must be a whole number at least 1" in _one_line_error(capsys.readouterr().err, "show")


@pytest.mark.slow
def test_control_characters_stored_in_a_run_are_escaped_on_output(finished_run, tmp_path, capsys):
    run = _copy(finished_run, tmp_path / "evil\x1b[31m")
    best = _rows(run)[0]
    db = sqlite3.connect(run / "run.db")
    db.execute(
        "INSERT INTO candidates (hash, genome, formula, fitness, rho20, rho50, rho100, seconds, status, "
        "iteration, origin) VALUES ('forged', ?, ?, 2.0, 2.0, 2.0, 2.0, 0, 'ok', 1, 'init')",
        (best[2], "\x1b[2J\x1b]0;owned\x07 Σ(W)\n"),
    )
    db.execute("UPDATE meta SET value = 'null' WHERE key = 'final'")  # the fittest so far is shown
    db.commit()
    db.close()
    for command in (
        ["show", str(run), "--quick"],
        ["show", str(run), "--top", "1"],
        ["runs", "--runs-dir", str(tmp_path)],
    ):
        assert main(command) == 0
        out = capsys.readouterr().out
        assert "\x1b" not in out and "\x07" not in out, command
        assert ("\\x1b[2J\\x1b]0;owned\\x07 Σ(W)\\n" in out) if command[0] == "show" else ("evil\\x1b[31m" in out)
    text, _ = full_report(run, transfer=[])  # the whole report (what `show` prints) of the same run
    assert "\x1b" not in text and "evil\\x1b[31m" in text


@pytest.mark.slow
def test_a_resumed_run_replaces_links_planted_at_its_files_and_never_writes_through_them(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path / "done")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    written = ("best.json", "best.py", "report.txt", "report.json", "fitness.png")
    for name in written:
        (run / name).unlink(missing_ok=True)
        (run / name).symlink_to(victim)
    assert main(["evolve", "--resume", str(run), "--iterations", "5", "--log-every", "0"]) == 0
    assert victim.read_text() == "precious\n"
    assert all((run / n).is_file() and not (run / n).is_symlink() for n in written)


@pytest.mark.slow
def test_the_report_names_its_statistics_entries_and_an_entry_changed_with_its_checksum(
    finished_run, tmp_path, _stats_cache_dir, monkeypatch
):
    from evoproxy.files import save_with_checksum

    cache = Path(shutil.copytree(_stats_cache_dir, tmp_path / "cache"))  # the shared cache stays as it is
    monkeypatch.setenv("EVOPROXY_CACHE_DIR", str(cache))
    run = _copy(finished_run, tmp_path / "done")
    text, data = full_report(run, transfer=[])
    ((bench, entry),) = data["statistics"].items()
    path = Path(entry["path"])
    assert path.parent == cache and entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert entry["search"]["sha256"] == entry["sha256"] and "same" in text.split("Statistics ranked on")[1]
    # Changed by someone who can write the cache, checksum and all: used, but the report says so.
    blob = torch.load(path, weights_only=True)
    blob["layers"][0]["W"] = blob["layers"][0]["W"] * 2
    buffer = io.BytesIO()
    torch.save(blob, buffer)
    save_with_checksum(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))
    text, data = full_report(run, transfer=[])
    assert data["statistics"][bench]["sha256"] == hashlib.sha256(buffer.getvalue()).hexdigest()
    assert f"another: {entry['sha256'][:16]}" in text
    assert json.loads((run / "report.json").read_text())["statistics"] == data["statistics"]


def _children(pid: int) -> list[int]:
    """The loky worker processes that `pid` started."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"loky" in cmdline and b"resource_tracker" not in cmdline:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _evolve_in_background(cache: Path, *flags: str) -> subprocess.Popen:
    """`evoproxy evolve FLAGS` in its own process, on the shared statistics cache."""
    return subprocess.Popen(
        [sys.executable, "-m", "evoproxy.cli", "evolve", *flags],
        env={**os.environ, "EVOPROXY_CACHE_DIR": str(cache)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _kill_and_expect_no_orphans(proc: subprocess.Popen, workers: list[int]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(workers) >= 2
    deadline = time.monotonic() + 60  # far below loky's idle timeout of 300 s, which frees orphans otherwise
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(w) for w in workers)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="workers die with their parent on Linux (prctl)")
def test_joblib_workers_die_with_a_run_killed_with_sigkill(tmp_path, _stats_cache_dir):
    flags = [*TINY, "--iterations", "1000000", "--jobs", "2", "--offspring", "2", "--runs-dir", str(tmp_path)]
    proc = _evolve_in_background(_stats_cache_dir, *flags, "--name", "k")
    workers: list[int] = []
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline and len(workers) < 2:
        time.sleep(0.1)
        workers = _children(proc.pid) if (tmp_path / "k" / "run.db").is_file() else []
    while proc.poll() is None and time.monotonic() < deadline:  # killed while it judges, its workers busy
        try:
            if RunStore(tmp_path / "k" / "run.db").history()[3:]:
                break
        except Exception:  # noqa: BLE001 — the run may be starting
            pass
        time.sleep(0.1)
    _kill_and_expect_no_orphans(proc, workers)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="workers die with their parent on Linux (prctl)")
def test_joblib_workers_die_with_a_resumed_run_killed_while_they_start(finished_run, tmp_path, _stats_cache_dir):
    run = _copy(finished_run, tmp_path / "done")
    proc = _evolve_in_background(
        _stats_cache_dir, "--resume", str(run), "--iterations", "1000000", "--jobs", "2", "--log-every", "0"
    )
    workers: list[int] = []
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline and len(workers) < 2:
        workers = _children(proc.pid)  # polled without a pause: the kill comes while they import
    _kill_and_expect_no_orphans(proc, workers)


def test_a_runs_dir_that_cannot_be_written_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    assert main(["evolve", *TINY, "--runs-dir", str(tmp_path / "a-file" / "runs")]) == 2
    assert "--runs-dir" in _one_line_error(capsys.readouterr().err, "evolve")
