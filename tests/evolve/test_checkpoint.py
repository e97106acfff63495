"""Resume: the state a run stores after every iteration, in today's shape and in the shape runs
stored before it had a type (a dict under "extra")."""

from dataclasses import asdict, fields

import pytest

from evoproxy.evolve import Evolution, EvolutionSettings, RunState, RunStore, run_summary
from stopped_runs import candidate_rows as _rows, stopped_during

pytestmark = pytest.mark.usefixtures("shared_stats_cache")

# Restarts (patience) and migrations happen within the first iterations, so the state matters.
SETTINGS = EvolutionSettings(population=6, iterations=10, samples=30, seed=3, islands=2, migration=3, patience=2)


def test_run_state_counts_stale_iterations_and_restarts():
    state = RunState()
    for best in (0.5, 0.5, 0.4, 0.6, 0.6):
        state.observe(best)
    assert (state.best, state.stale) == (0.6, 1)
    state.restart(9)
    assert (state.stale, state.restarts, state.restarted_at) == (0, 1, [9])


@pytest.mark.slow  # whole runs
def test_a_run_stored_in_the_older_shape_resumes_as_if_never_stopped(tmp_path, monkeypatch):
    whole = Evolution(tmp_path / "whole", SETTINGS, log=lambda m: None)
    best_whole = whole.run()
    whole.close()

    # Stop a run during iteration 7, then store its state as runs did before RunState existed.
    cut = stopped_during(tmp_path / "cut", SETTINGS, 7, monkeypatch)
    state = cut.store.get("state")
    typed = {f.name for f in fields(RunState)}
    assert typed <= set(state) and "extra" not in state
    assert state["restarted_at"]  # a restart happened before the cut: the old shape must carry it
    older = {k: v for k, v in state.items() if k not in typed}
    older["extra"] = {k: v for k, v in state.items() if k in typed}
    cut.store.put(state=older)
    cut.close()
    assert run_summary(tmp_path / "cut")["restarted_at"] == older["extra"]["restarted_at"]

    resumed = Evolution(tmp_path / "cut", None, log=lambda m: None)
    best_resumed = resumed.run()
    resumed.close()
    assert _rows(tmp_path / "cut") == _rows(tmp_path / "whole")
    assert (best_resumed.genome.wl_hash(), best_resumed.fitness) == (best_whole.genome.wl_hash(), best_whole.fitness)
    stores = [RunStore(tmp_path / name / "run.db") for name in ("cut", "whole")]
    states = [RunState.stored(store.get("state")) for store in stores]
    for store in stores:
        store.close()
    assert [{**asdict(s), "elapsed": 0} for s in states] == [{**asdict(states[1]), "elapsed": 0}] * 2


@pytest.mark.slow  # whole runs
def test_the_toolbox_steps_can_be_swapped_one_at_a_time(tmp_path):
    evo = Evolution(tmp_path / "t", EvolutionSettings(population=6, iterations=3, samples=30, seed=3, dps=False))
    chosen = []

    def fittest_twice(members):  # a selection without chance: the fittest is both parents
        best = max(members, key=lambda ind: ind.fitness)
        chosen.append(best.fitness)
        return best.genome, best.genome

    evo.toolbox.register("select", fittest_twice)
    evo.run(log_every=0)
    evo.close()
    assert len(chosen) >= 3  # at least once per iteration (more where CSP sent a slot back)
