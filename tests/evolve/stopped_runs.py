"""What the resume tests share: a run's candidates as rows, and a run stopped during an iteration
as a kill would stop it (its candidates stored, the state after the iteration not)."""

import sqlite3

import pytest

from evoproxy.evolve import Evolution


def candidate_rows(run_dir) -> list[tuple]:
    db = sqlite3.connect(run_dir / "run.db")
    rows = db.execute("SELECT hash, fitness, status, iteration, origin FROM candidates ORDER BY id").fetchall()
    db.close()
    return rows


def stopped_during(run_dir, settings, iteration: int, monkeypatch) -> Evolution:
    """The run of `settings` in `run_dir`, stopped during `iteration` and still open."""
    original = Evolution._save_state

    def crash(self, it, population, state):
        if it == iteration:
            raise KeyboardInterrupt
        original(self, it, population, state)

    monkeypatch.setattr(Evolution, "_save_state", crash)
    cut = Evolution(run_dir, settings, log=lambda m: None)
    with pytest.raises(KeyboardInterrupt):
        cut.run()
    monkeypatch.setattr(Evolution, "_save_state", original)
    return cut
