"""A run's storage: one SQLite file (standard library sqlite3) holding every candidate
evaluated, the state after each iteration and the history. Every write is committed at once,
so a run killed at any moment (kill -9 included) keeps every completed evaluation."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS candidates (
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
CREATE TABLE IF NOT EXISTS history (
    iteration INTEGER PRIMARY KEY,
    best REAL, median REAL,
    evaluated INTEGER, rejected TEXT, duplicates INTEGER, seconds REAL
);
"""


class RunStore:
    """The SQLite database of one run (`runs/<name>/run.db`)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None)  # autocommit: each write is durable
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def get(self, key: str, default=None):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def put(self, **items) -> None:
        with self.db:
            self.db.execute("BEGIN")
            for key, value in items.items():
                self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def add_candidate(self, h: str, genome_json: str, formula: str, outcome, iteration: int, origin: str) -> None:
        parts = outcome.parts
        self.db.execute(
            "INSERT OR IGNORE INTO candidates (hash, genome, formula, fitness, rho20, rho50, rho100, seconds, status,"
            " reason, iteration, origin) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (h, genome_json, formula, outcome.fitness if outcome.ok else None, parts.get("rho@20%"),
             parts.get("rho@50%"), parts.get("rho@100%"), outcome.seconds, "ok" if outcome.ok else outcome.rule,
             outcome.reason, iteration, origin))

    def candidates(self, where: str = "1", params: tuple = ()) -> list[sqlite3.Row]:
        self.db.row_factory = sqlite3.Row
        try:
            return self.db.execute(f"SELECT * FROM candidates WHERE {where} ORDER BY id", params).fetchall()
        finally:
            self.db.row_factory = None

    def add_history(self, iteration: int, best: float, median: float, evaluated: int, rejected: dict,
                    duplicates: int, seconds: float) -> None:
        self.db.execute("INSERT OR REPLACE INTO history VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (iteration, best, median, evaluated, json.dumps(rejected), duplicates, seconds))

    def history(self) -> list[tuple]:
        return self.db.execute("SELECT iteration, best, median, evaluated, rejected, duplicates, seconds "
                               "FROM history ORDER BY iteration").fetchall()

    def close(self) -> None:
        self.db.close()
