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


def row_parts(row) -> dict[str, float]:
    """The fitness parts (ρ@k) stored in a candidates row; none for a rejected candidate."""
    return {part: row[column] for part, column in PART_COLUMNS if row[column] is not None}


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


class RunStore:
    """The SQLite database of one run (`runs/<name>/run.db`): read-only by default; with `write`,
    under the run's exclusive lock. `new` creates the database with these settings (meta items)
    in one step; it must not exist yet."""

    def __init__(self, path: str | Path, write: bool = False, new: dict | None = None):
        self.path = Path(path)
        self.write, self._lock = write or new is not None, None
        if self.write:
            if new is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock = locking.acquire(self.path, str(self.path.parent))
        try:
            if new is not None:
                if self.path.exists():
                    raise EvoproxyError(
                        f"{self.path} already exists; continue that run with `evoproxy evolve "
                        f"--resume {self.path.parent}`"
                    )
                self._build(new)
            elif not self.path.is_file():
                raise EvoproxyError(f"{self.path.parent} holds no run (no run.db); runs live in runs/<name>/")
            self._open()
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
    def _open(self) -> None:
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
        if self.write:  # readers go on reading while the writer commits
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")

    @_guarded
    def get(self, key: str, default=None):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            return default
        try:
            return json.loads(row[0])
        except (TypeError, ValueError):
            raise EvoproxyError(
                f"{self.path} is damaged: its {key!r} entry is not JSON; move it away and start the run again"
            ) from None

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
