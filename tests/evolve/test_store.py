"""A run's database holds up: it never exists without its settings (a kill at every line of its
creation), one writer at a time (the lock, in one process and across two), and damaged or
foreign files end in one-line errors, from the store and from the commands, with nothing
written by `show`."""

import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys

import pytest

from evoproxy.cli import main
from evoproxy.errors import EvoproxyError
from evoproxy.evolve import RunStore
from evoproxy.evolve.fitness import Outcome
from evoproxy.locking import lock_holder

CONFIG = {"benches": ["fmnist-resnet20-w234"], "population": 4, "iterations": 3, "samples": 30}


def _new_run(run_dir, candidates: int = 3):
    """A small but complete run database: settings, candidates, state and history."""
    store = RunStore(run_dir / "run.db", new={"config": CONFIG})
    for i in range(candidates):
        store.add_candidate(
            f"h{i}",
            json.dumps({"nodes": []}),
            f"f{i}(W)",
            Outcome(0.5 + i / 10, {"rho@20%": 0.1 * i, "rho@50%": 0.2, "rho@100%": 0.3}),
            i,
            "init",
        )
    store.put(state={"iteration": 0, "rng": random.Random(0).getstate(), "population": [], "extra": {}})
    store.add_history(0, 0.7, 0.6, candidates, {}, 0, 0.1)
    store.close()
    return run_dir / "run.db"


# -- start-up window ------------------------------------------------------------------------------


def _lines_of(function) -> list[int]:
    code = function.__code__
    return sorted({line for _, _, line in code.co_lines() if line is not None and line > code.co_firstlineno})


def _kill_at(line: int, function, run_dir) -> int:
    """Create a run in a forked child that exits abruptly (no cleanup, like kill -9) on reaching
    `line` of `function`; returns the child's exit status (9: it died there, 0: line not reached)."""
    pid = os.fork()
    if pid == 0:  # the child: no pytest machinery runs here

        def tracer(frame, event, arg):
            if frame.f_code is function.__code__:
                if event == "line" and frame.f_lineno == line:
                    os._exit(9)
                return tracer
            return None

        sys.settrace(tracer)
        try:
            RunStore(run_dir / "run.db", new={"config": CONFIG}).close()
        finally:
            os._exit(0)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.mark.slow
@pytest.mark.parametrize("where", ["__init__", "_build", "_open"])
def test_a_run_killed_at_any_line_of_its_creation_is_absent_or_complete(tmp_path, where):
    function = getattr(RunStore, where)
    function = getattr(function, "__wrapped__", function)  # _open is guarded
    died = 0
    for line in _lines_of(function):
        run_dir = tmp_path / f"{where}-{line}"
        died += _kill_at(line, function, run_dir) == 9
        db = run_dir / "run.db"
        if db.exists():  # whatever exists holds the settings
            store = RunStore(db)
            assert store.get("config") == CONFIG
            store.close()
        else:  # nothing to resume, in one line; the original command starts the run afresh
            with pytest.raises(EvoproxyError, match="no run"):
                RunStore(db)
            RunStore(db, new={"config": CONFIG}).close()
            assert RunStore(db).get("config") == CONFIG
    assert died >= 5  # the child did die inside the function, at most of its lines


# -- the lock -------------------------------------------------------------------------------------


def test_a_second_writer_in_the_same_process_is_refused_naming_the_holder(tmp_path):
    db = _new_run(tmp_path / "r")
    first = RunStore(db, write=True)
    with pytest.raises(EvoproxyError, match=f"in use by process {os.getpid()}"):
        RunStore(db, write=True)
    reader = RunStore(db)  # readers never wait for the lock
    assert reader.count() == 3
    reader.close()
    assert lock_holder(db) == f"process {os.getpid()}"
    first.close()
    assert lock_holder(db) is None
    RunStore(db, write=True).close()  # released on close


@pytest.mark.slow
def test_a_writer_in_another_process_holds_the_run_until_it_dies(tmp_path):
    db = _new_run(tmp_path / "r")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from evoproxy.evolve import RunStore; "
            f"s = RunStore({str(db)!r}, write=True); print('held', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(EvoproxyError, match=f"in use by process {holder.pid}"):
            RunStore(db, write=True)
        with pytest.raises(EvoproxyError, match=f"in use by process {holder.pid}"):
            RunStore(tmp_path / "r" / "run.db", new={"config": CONFIG})  # a new run of the same name
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    RunStore(db, write=True).close()  # the system released the lock of the killed process


# -- damaged and foreign files --------------------------------------------------------------------


def _damage(db, kind: str) -> None:
    data = db.read_bytes()
    if kind == "empty":
        db.write_bytes(b"")
    elif kind == "garbage header":
        db.write_bytes(b"\xde\xad\xbe\xef" * 8 + data[32:])
    elif kind == "random bytes":
        db.write_bytes(hashlib.sha256(b"seed").digest() * (len(data) // 32))
    elif kind == "truncated to half":
        db.write_bytes(data[: len(data) // 2])
    elif kind.startswith("truncated to "):
        db.write_bytes(data[: int(kind.split()[-1])])
    elif kind == "text file":
        db.write_text("not a database\n")
    else:
        db.unlink()
        con = sqlite3.connect(db)
        if kind == "schema only":
            con.executescript(
                "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                "CREATE TABLE candidates (id INTEGER); CREATE TABLE history (iteration INTEGER);"
            )
        elif kind == "foreign database":
            con.execute("CREATE TABLE trials (id INTEGER, value REAL)")
        elif kind == "settings not JSON":
            con.executescript(
                "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                "CREATE TABLE candidates (id INTEGER); CREATE TABLE history (iteration INTEGER);"
                "INSERT INTO meta VALUES ('config', '{not json');"
            )
        elif kind == "settings not an object":
            con.executescript(
                "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                "CREATE TABLE candidates (id INTEGER); CREATE TABLE history (iteration INTEGER);"
                "INSERT INTO meta VALUES ('config', '[1, 2]');"
            )
        con.commit()
        con.close()


DAMAGE = [
    "empty",
    "garbage header",
    "random bytes",
    "truncated to 100",
    "truncated to 4096",
    "truncated to half",
    "text file",
    "schema only",
    "foreign database",
    "settings not JSON",
    "settings not an object",
]


@pytest.mark.slow
@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_or_foreign_run_database_is_a_one_line_error_and_show_writes_nothing(tmp_path, capsys, kind):
    db = _new_run(tmp_path / "r", candidates=200)  # several pages, so that truncation cuts tables
    _damage(db, kind)
    before = db.read_bytes()
    for write in (False, True):
        with pytest.raises(EvoproxyError):
            RunStore(db, write=write)
    for command in (
        ["show", str(db.parent)],
        ["show", "--quick", str(db.parent)],
        ["show", "--top", "3", str(db.parent)],
        ["evolve", "--resume", str(db.parent)],
    ):
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"evoproxy {command[0]}: error: "), err
        assert "Traceback" not in err
    assert db.read_bytes() == before  # neither show nor the refused resume changed it
    assert sorted(p.name for p in db.parent.iterdir()) == ["run.db", "run.db.lock"]


def test_settings_of_the_wrong_type_are_refused_by_resume_in_one_line(tmp_path, capsys):
    run_dir = tmp_path / "r"
    RunStore(run_dir / "run.db", new={"config": {**CONFIG, "population": "many"}}).close()
    assert main(["evolve", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stored run settings are not valid" in err


def test_show_opens_the_database_read_only(tmp_path):
    db = _new_run(tmp_path / "r")
    store = RunStore(db)
    with pytest.raises(EvoproxyError, match="readonly"):
        store.put(anything=1)
    store.close()


# -- the lock file and the leftovers of a killed start ---------------------------------------------


def test_a_link_in_place_of_the_lock_file_is_refused_and_the_file_it_names_is_untouched(tmp_path):
    db = _new_run(tmp_path / "r")
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me\n")
    (tmp_path / "r" / "run.db.lock").unlink()
    (tmp_path / "r" / "run.db.lock").symlink_to(precious)
    with pytest.raises(EvoproxyError, match="run.db.lock is a symbolic link"):
        RunStore(db, write=True)
    with pytest.raises(EvoproxyError, match="run.db.lock is a symbolic link"):
        lock_holder(db)
    assert precious.read_text() == "keep me\n"


def test_a_writer_removes_the_temporary_files_a_killed_start_left_and_a_reader_does_not(tmp_path):
    db = _new_run(tmp_path / "r")
    stray = tmp_path / "r" / ".run.db-k1ll3d.tmp"
    stray.write_bytes(b"half a database")
    folder = tmp_path / "r" / ".run.db-folder.tmp"
    folder.mkdir()
    other = tmp_path / "r" / ".best.json-k1ll3d.tmp"  # another file's: not the run database's to remove
    other.write_text("{}")
    RunStore(db).close()
    assert stray.exists()
    RunStore(db, write=True).close()
    assert not stray.exists() and folder.is_dir() and other.exists()


def test_the_state_record_checked_on_open_is_the_one_a_checkpoint_saves(tmp_path):
    from evoproxy.evolve.checkpoint import RunState, save_checkpoint
    from evoproxy.evolve.records import RECORDS

    store = RunStore(_new_run(tmp_path / "r"), write=True)
    save_checkpoint(store, 0, random.Random(1), [], RunState())
    assert set(store.get("state")) == set(RECORDS["state"]) - {"extra"}  # "extra": runs stored before RunState
    store.close()
    RunStore(tmp_path / "r" / "run.db").close()  # and it passes the check


def test_a_state_naming_more_candidates_than_one_query_takes_is_checked_through_every_one(tmp_path, monkeypatch):
    from evoproxy.evolve import store as store_module
    from evoproxy.proxy import get_genome

    monkeypatch.setattr(store_module, "IN_CHUNK", 2)  # as if SQLite took two parameters a statement
    store = RunStore(tmp_path / "run.db", new={"config": CONFIG})
    genome = get_genome("fisher").to_json()
    for i in range(5):
        store.add_candidate(f"h{i}", genome, "fisher", Outcome(0.5, {"rho@20%": 0.1}), i, "init")
    state = {"iteration": 0, "rng": random.Random(0).getstate(), "population": [f"h{i}" for i in range(5)]}
    store.put(state={**state, "extra": {}})
    store.close()
    RunStore(tmp_path / "run.db").close()  # all five found, across three queries
    store = RunStore(tmp_path / "run.db", write=True)
    store.put(state={**state, "population": [*state["population"], "h9"], "extra": {}})
    store.close()
    with pytest.raises(EvoproxyError, match="names candidate 'h9', which is not stored as evaluated"):
        RunStore(tmp_path / "run.db")
