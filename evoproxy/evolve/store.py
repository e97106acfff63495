"""A run's storage: one SQLite file (standard library sqlite3) holding the run's settings, every
candidate evaluated, the state after each iteration and the history. Every write is committed at
once, so a run killed at any moment (kill -9 included) keeps every completed evaluation.

A new database is built with its settings in a temporary file and renamed into place, so
`run.db` never exists without them. One process at a time may write a run: a writer holds an
exclusive lock on `run.db.lock` (released by the system when the process ends, however it ends).
Readers open the database read-only and never change it. A file that is damaged or not a run
database ends in a one-line EvoproxyError."""

from __future__ import annotations

import functools
import json
import os
import sqlite3
from pathlib import Path

from .. import files, locking
from ..errors import EvoproxyError
from ..proxy import Genome
from .records import RECORDS
from .settings import EvolutionSettings

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE candidates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    hash TEXT UNIQUE NOT NULL,
    genome TEXT NOT NULL,
    formula TEXT NOT NULL,
    fitness REAL,
    rho20 REAL, rho50 REAL, rho100 REAL,
    seconds REAL NOT NULL,
    status TEXT NOT NULL,          -- 'ok' or the CSP rule that rejected it
    reason TEXT,
    iteration INTEGER NOT NULL,
    origin TEXT NOT NULL           -- 'init', 'offspring' or 'random' (diversity-prompting sample)
);
CREATE TABLE history (
    iteration INTEGER PRIMARY KEY,
    best REAL, median REAL,
    evaluated INTEGER, rejected TEXT, duplicates INTEGER, seconds REAL
);
"""
TABLES = ("meta", "candidates", "history")
PART_COLUMNS = (("rho@20%", "rho20"), ("rho@50%", "rho50"), ("rho@100%", "rho100"))  # fitness part → its column


# The columns' SQLite types as the writers store them (fitness: NULL for a rejected candidate).
CANDIDATE_TYPES = {
    "hash": ("text",),
    "genome": ("text",),
    "formula": ("text",),
    "fitness": ("real", "integer", "null"),
    **{column: ("real", "integer", "null") for _, column in PART_COLUMNS},
    "seconds": ("real", "integer"),
    "status": ("text",),
    "reason": ("text", "null"),
    "iteration": ("integer",),
    "origin": ("text",),
}


IN_CHUNK = 500  # hashes per `IN (...)` query: SQLite before 3.32 takes at most 999 parameters a statement


def row_parts(row) -> dict[str, float]:
    """The fitness parts (ρ@k) stored in a candidates row; none for a rejected candidate."""
    return {part: row[column] for part, column in PART_COLUMNS if row[column] is not None}


def damaged(path: Path, what: str) -> EvoproxyError:
    """The one-line error of a run database `path` whose content is damaged: `what` is wrong."""
    return EvoproxyError(f"{path} is damaged: {what}; move it away and start the run again")


def _guarded(method):
    """SQLite's errors (a damaged file, a foreign one) as one-line EvoproxyErrors."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            raise EvoproxyError(
                f"{self.path} cannot be used as a run database ({exc}); if it is damaged, move "
                f"it away and start the run again"
            ) from None

    return wrapper


SQLITE_FILES = ("", "-wal", "-shm", "-journal")  # the database and the files SQLite keeps beside it


class RunStore:
    """The SQLite database of one run (`runs/<name>/run.db`): read-only by default; with `write`,
    under the run's exclusive lock. `new` creates the database with these settings (meta items)
    in one step; it must not exist yet."""

    def __init__(self, path: str | Path, write: bool = False, new: dict | None = None):
        self.path = Path(path)
        self.write, self._lock = write or new is not None, None
        if self.write:
            if new is not None:  # a folder planted as a link would take the run elsewhere
                files.refuse_link(self.path.parent, "the run folder").mkdir(parents=True, exist_ok=True)
            self._lock = locking.acquire(self.path, str(self.path.parent))
        try:
            if self.write:
                files.remove_leftovers(self.path)  # only a writer makes them, under this lock: none is live
                for side in SQLITE_FILES:  # SQLite opens them following links
                    files.refuse_link(self.path.with_name(self.path.name + side), "the run's database file")
            if new is not None:
                if self.path.exists():
                    raise EvoproxyError(
                        f"{self.path} already exists; continue that run with `evoproxy evolve "
                        f"--resume {self.path.parent}`"
                    )
                self._build(new)
            elif not self.path.is_file():
                raise EvoproxyError(f"{self.path.parent} holds no run (no run.db); runs live in runs/<name>/")
            self._open(check=new is None)
        except BaseException:
            self.close()
            raise

    def _build(self, meta: dict) -> None:
        """The database with its schema and `meta`, built beside `path` and renamed into place."""
        with files.replacing(self.path) as tmp:
            db = sqlite3.connect(tmp, isolation_level=None)
            try:
                db.execute("PRAGMA synchronous=FULL")
                db.executescript("BEGIN;" + SCHEMA)
                db.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
                db.execute("COMMIT")
            finally:
                db.close()

    @_guarded
    def _open(self, check: bool) -> None:
        """Open the database; with `check`, refuse one whose content is not a run's (`_check_records`)."""
        if self.write:
            self.db = sqlite3.connect(self.path, isolation_level=None)  # autocommit: each write is durable
        else:
            self.db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
        problems = [r[0] for r in self.db.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise EvoproxyError(f"{self.path} is damaged ({problems[0]}); move it away and start the run again")
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if missing := [t for t in TABLES if t not in tables]:
            raise EvoproxyError(f"{self.path} is not an evoproxy run database (no {', '.join(missing)} table)")
        if not isinstance(self.get("config"), dict):
            raise EvoproxyError(f"{self.path} holds no run settings; it is not a run that evoproxy evolve started")
        if check:  # a new database holds what its creator just gave
            self._check_records()
        if self.write:  # readers go on reading while the writer commits
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")

    def _check_records(self) -> None:
        """The run's settings valid, its records as RECORDS and CANDIDATE_TYPES describe them, and
        the candidates that the state and the result name stored, evaluated and with a genome that
        reads (every other genome is read where it is used, by `genome`); else `damaged`.
        The records are read before the candidates: a writer stores candidates before the records
        that name them, so a run being written passes too."""
        try:
            EvolutionSettings.from_dict(self.get("config"))
        except EvoproxyError as exc:
            raise damaged(self.path, str(exc)) from None
        records = {key: self.get(key) for key in RECORDS}
        for key, fields in RECORDS.items():
            record = records[key]
            if record is None:
                continue
            if not isinstance(record, dict):
                raise damaged(self.path, f"its {key} record is not an object")
            nested = record.get("extra") if isinstance(record.get("extra"), dict) else {}
            for name, (check, what, required) in fields.items():
                for values in (record, nested):
                    if name in values and not check(values[name]):
                        raise damaged(self.path, f"the {name!r} of its {key} record is not {what}")
                if required and name not in record:
                    raise damaged(self.path, f"its {key} record has no {name!r}")
        state, final = records["state"], records["final"]
        if state and len(state.get("islands", state["population"])) != len(state["population"]):
            raise damaged(self.path, "its state record has not one island per member of the population")
        types = ", ".join(f"typeof({column})" for column in CANDIDATE_TYPES)
        wrong = " OR ".join(f"typeof({c}) NOT IN ({', '.join(map(repr, t))})" for c, t in CANDIDATE_TYPES.items())
        bad = self.db.execute(
            f"SELECT id, {types} FROM candidates WHERE {wrong} OR (status = 'ok' AND fitness IS NULL) LIMIT 1"
        ).fetchone()
        if bad is not None:
            found = dict(zip(CANDIDATE_TYPES, bad[1:]))
            column = next((c for c, t in found.items() if t not in CANDIDATE_TYPES[c]), None)
            if column is None:
                raise damaged(self.path, f"candidate {bad[0]} is evaluated but has no fitness")
            raise damaged(
                self.path,
                f"the {column} of candidate {bad[0]} is {found[column]}, not {' or '.join(CANDIDATE_TYPES[column])}",
            )
        named = [(h, "state") for h in state["population"]] if state else []
        named += [(final["hash"], "result")] if final else []
        hashes, rows = [h for h, _ in named], {}
        for i in range(0, len(hashes), IN_CHUNK):
            chunk = tuple(hashes[i : i + IN_CHUNK])
            where = f"status = 'ok' AND hash IN ({', '.join('?' * len(chunk))})"
            rows.update((r["hash"], r) for r in self.candidates(where, chunk))
        if missing := next(((h, what) for h, what in named if h not in rows), None):
            raise damaged(
                self.path, f"its {missing[1]} names candidate {missing[0]!r}, which is not stored as evaluated"
            )
        for row in rows.values():
            self.genome(row)

    def genome(self, row) -> Genome:
        """The genome of a `candidates` row (the store may be closed); `damaged` where it is not one."""
        try:
            return Genome.from_json(row["genome"])
        except EvoproxyError as exc:
            raise damaged(self.path, f"the genome of candidate {row['id']} cannot be read ({exc})") from None

    @_guarded
    def get(self, key: str, default=None):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            return default
        try:
            return json.loads(row[0])
        except (TypeError, ValueError):
            raise damaged(self.path, f"its {key!r} entry is not JSON") from None

    @_guarded
    def put(self, **items) -> None:
        with self.db:
            self.db.execute("BEGIN")
            for key, value in items.items():
                self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    @_guarded
    def add_candidate(self, h: str, genome_json: str, formula: str, outcome, iteration: int, origin: str) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO candidates (hash, genome, formula, fitness, rho20, rho50, rho100, seconds, status,"
            " reason, iteration, origin) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                h,
                genome_json,
                formula,
                outcome.fitness if outcome.ok else None,
                *(outcome.parts.get(part) for part, _ in PART_COLUMNS),
                outcome.seconds,
                "ok" if outcome.ok else outcome.rule,
                outcome.reason,
                iteration,
                origin,
            ),
        )

    @_guarded
    def candidates(self, where: str = "1", params: tuple = ()) -> list[sqlite3.Row]:
        self.db.row_factory = sqlite3.Row
        try:
            return self.db.execute(f"SELECT * FROM candidates WHERE {where} ORDER BY id", params).fetchall()
        finally:
            self.db.row_factory = None

    @_guarded
    def count(self, where: str = "1", params: tuple = ()) -> int:
        return self.db.execute(f"SELECT COUNT(*) FROM candidates WHERE {where}", params).fetchone()[0]

    @_guarded
    def add_history(
        self,
        iteration: int,
        best: float,
        median: float,
        evaluated: int,
        rejected: dict,
        duplicates: int,
        seconds: float,
    ) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO history VALUES (?, ?, ?, ?, ?, ?, ?)",
            (iteration, best, median, evaluated, json.dumps(rejected), duplicates, seconds),
        )

    @_guarded
    def history(self) -> list[tuple]:
        return self.db.execute(
            "SELECT iteration, best, median, evaluated, rejected, duplicates, seconds FROM history ORDER BY iteration"
        ).fetchall()

    def close(self) -> None:
        """Close the database and release the lock. A writer leaves the file in rollback-journal
        mode, one file that readers open without creating WAL side files; where a reader keeps it
        busy, it stays in WAL mode, which readers handle too."""
        db = getattr(self, "db", None)
        if db is not None:
            if self.write:
                try:
                    db.execute("PRAGMA journal_mode=DELETE")
                except sqlite3.DatabaseError:
                    pass
            db.close()
            self.db = None
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor releases the flock
            self._lock = None
