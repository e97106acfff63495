import random
import sqlite3

import numpy as np
import pytest
import torch

from evoproxy import pace
from evoproxy.bench import bench_stats, load_bench
from evoproxy.errors import EvoproxyError
from evoproxy.model import MODELS
from evoproxy.proxy import Genome, get_genome, load_space, prepare_inputs, sample_genome
from evoproxy.evolve import Evolution, EvolutionSettings, Individual, RunStore, migrate, search_partition, workers
from evoproxy.evolve.fitness import CSPSettings, FitnessTask, conflict
from evoproxy.evolve.progress import Tally, progress_line
from evoproxy.stats import quant_errors
from stopped_runs import candidate_rows as _rows, stopped_during

SMALL = dict(population=6, iterations=12, samples=30, seed=3)

pytestmark = pytest.mark.usefixtures("shared_stats_cache")


@pytest.fixture(scope="module")
def task_and_inputs(_stats_cache_dir):
    import os

    os.environ["EVOPROXY_CACHE_DIR"] = str(_stats_cache_dir)
    bench = load_bench("fmnist-resnet20-w234")
    stats, _, _ = bench_stats(bench)
    bits, acc = search_partition(bench, 50, 0)[0]
    return FitnessTask(bits, acc), prepare_inputs(stats), stats


@pytest.mark.slow
@pytest.mark.parametrize("islands", [{}, {"islands": 2, "migration": 3, "patience": 4}], ids=["one-island", "islands"])
def test_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch, islands):
    config = EvolutionSettings(**SMALL, **islands)
    whole = Evolution(tmp_path / "whole", config, log=lambda m: None)
    best_whole = whole.run()
    whole.close()

    # Kill the second run in the middle of iteration 7: its candidates are stored, its state is not.
    stopped_during(tmp_path / "cut", config, 7, monkeypatch).close()
    stored_before = len(_rows(tmp_path / "cut"))

    resumed = Evolution(tmp_path / "cut", None, log=lambda m: None)  # settings come from the run
    best_resumed = resumed.run()
    resumed.close()
    assert best_resumed.genome.wl_hash() == best_whole.genome.wl_hash()
    assert best_resumed.fitness == best_whole.fitness
    assert _rows(tmp_path / "cut") == _rows(tmp_path / "whole")  # nothing evaluated twice, nothing lost
    assert stored_before > 0
    assert (tmp_path / "cut" / "best.json").is_file() and (tmp_path / "cut" / "best.py").is_file()


def test_resume_with_other_settings_is_refused(tmp_path):
    run = Evolution(tmp_path / "r", EvolutionSettings(**SMALL), log=lambda m: None)
    run.close()
    with pytest.raises(EvoproxyError, match="other settings"):
        Evolution(tmp_path / "r", EvolutionSettings(**{**SMALL, "seed": 4}), log=lambda m: None)


def test_equivalent_candidates_are_evaluated_once(tmp_path):
    evo = Evolution(tmp_path / "r", EvolutionSettings(**SMALL), log=lambda m: None)
    calls = []
    real = evo.evaluate
    evo.evaluate = lambda genomes: calls.append(len(genomes)) or real(genomes)
    evo.seen, evo.replay = set(), {}
    counts = Tally()
    g = Genome.from_expression(("sum", ("mul", "G", "W")))
    swapped = Genome.from_expression(("sum", ("mul", "W", "G")))  # same proxy: commutative operands
    out = evo._judge([(g, "offspring"), (swapped, "random")], 1, counts)
    again = evo._judge([(g, "offspring")], 2, counts)
    evo.close()
    assert calls == [1] and out[0].ok and out[1] is None and again == [None]
    assert counts.screened == {"WL repeats": 2} and counts.evaluated == 1 and counts.proposed == 3


@pytest.mark.parametrize(
    "expr, rule",
    [
        (("sum", ("neg", ("neg", "W"))), "conflict"),
        (("sum", ("reciprocal", ("reciprocal", "G"))), "conflict"),
        (("mean", ("sign", ("abs", "W"))), "invalid"),  # 1 for every layer
        (("sum", ("mul", "W", ("neg", "W"))), None),
    ],
)
def test_rejection_rules(task_and_inputs, expr, rule):
    task, inputs, _ = task_and_inputs
    outcome = task.judge(Genome.from_expression(expr), inputs)
    assert outcome.rule == rule
    assert outcome.ok == (rule is None) and (np.isfinite(outcome.fitness) == (rule is None))


def test_switching_a_rule_off_lets_its_offender_through(task_and_inputs):
    task, inputs, _ = task_and_inputs
    g = Genome.from_expression(("sum", ("neg", ("neg", "W"))))
    assert conflict(g) == "neg after neg"
    assert task.judge(g, inputs, CSPSettings(conflict=False)).ok


def test_insensitive_scores_are_rejected(task_and_inputs):
    task, inputs, _ = task_and_inputs
    # The first layer is fixed at 8 bits in every configuration: a proxy dominated by it
    # gives scores that do not vary with the configuration.
    huge = FitnessTask(task.bits.numpy(), np.arange(len(task.bits), dtype=float))
    values = np.ones(task.bits.shape[1])
    values[0] = 1e15
    scores = task.bits.numpy() @ values
    assert np.ptp(scores) <= 1e-9 * np.abs(scores).max()

    class Dominated:
        graph = Genome.from_expression(("sum", "W")).graph
        bit_aware = False

        def evaluate(self, _):
            import torch

            from evoproxy.proxy import Evaluation

            return Evaluation(torch.tensor(values), None)

    assert huge.judge(Dominated(), inputs).rule == "insensitive"


def test_failing_and_slow_candidates_are_recorded_and_the_run_continues(tmp_path, monkeypatch):
    real = Genome.evaluate
    calls = {"n": 0}

    def flaky(self, stats):
        calls["n"] += 1
        if calls["n"] % 3 == 0:
            raise ValueError("boom")
        if calls["n"] % 3 == 1:
            import torch

            from evoproxy.proxy import Evaluation

            return Evaluation(torch.full((22,), float("nan")), "not finite (nan or inf)")
        return real(self, stats)

    monkeypatch.setattr(Genome, "evaluate", flaky)
    evo = Evolution(tmp_path / "r", EvolutionSettings(**{**SMALL, "iterations": 5}), log=lambda m: None)
    evo.run()
    evo.close()
    statuses = {row[2] for row in _rows(tmp_path / "r")}
    assert {"error", "invalid", "ok"} <= statuses


def test_a_hanging_candidate_is_stopped_at_the_timeout_and_the_run_continues(tmp_path, monkeypatch):
    import time

    real = Genome.evaluate
    calls = {"n": 0}

    def hangs_once(self, stats):
        calls["n"] += 1
        if calls["n"] == 2:
            time.sleep(600)  # never returns within the test's life: only the deadline can end it
        return real(self, stats)

    monkeypatch.setattr(Genome, "evaluate", hangs_once)
    evo = Evolution(
        tmp_path / "s",
        EvolutionSettings(**{**SMALL, "iterations": 2, "csp": CSPSettings(timeout_s=0.5)}),
        log=lambda m: None,
    )
    evo.run()
    evo.close()
    rows = _rows(tmp_path / "s")
    assert [r[2] for r in rows].count("too slow") == 1
    assert sum(r[2] == "ok" for r in rows) >= SMALL["population"]


@pytest.mark.slow
def test_parallel_workers_give_the_same_fitness(tmp_path, task_and_inputs):
    local = Evolution(tmp_path / "a", EvolutionSettings(**{**SMALL, "iterations": 3}), log=lambda m: None)
    par = Evolution(tmp_path / "b", EvolutionSettings(**{**SMALL, "iterations": 3}), jobs=2, log=lambda m: None)
    a, b = local.run(), par.run()
    local.close()
    par.close()
    assert a.genome.wl_hash() == b.genome.wl_hash() and a.fitness == b.fitness
    assert _rows(tmp_path / "a") == _rows(tmp_path / "b")


@pytest.mark.slow
def test_dask_backend_gives_the_same_fitness_as_local(tmp_path, task_and_inputs):
    distributed = pytest.importorskip("dask.distributed")
    with (
        distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster),
    ):
        remote = Evolution(
            tmp_path / "d", EvolutionSettings(**{**SMALL, "iterations": 2}), jobs=2, backend="dask", log=lambda m: None
        )
        best_remote = remote.run()
        remote.close()
    local = Evolution(tmp_path / "l", EvolutionSettings(**{**SMALL, "iterations": 2}), log=lambda m: None)
    best_local = local.run()
    local.close()
    assert best_remote.fitness == best_local.fitness
    assert _rows(tmp_path / "d") == _rows(tmp_path / "l")


def test_resuming_a_missing_run_is_a_clear_error_and_creates_nothing(tmp_path):
    with pytest.raises(EvoproxyError, match="no run to resume"):
        Evolution(tmp_path / "none", None, log=lambda m: None)
    assert not (tmp_path / "none").exists()


def test_a_finished_run_can_be_extended(tmp_path):
    evo = Evolution(
        tmp_path / "r", EvolutionSettings(**{**SMALL, "iterations": 4, "select_top": 0}), log=lambda m: None
    )
    first = evo.run()
    evo.close()
    more = Evolution(tmp_path / "r", None, log=lambda m: None)
    second = more.run(iterations=8)
    more.close()
    assert max(r[3] for r in _rows(tmp_path / "r")) == 8
    assert second.fitness >= first.fitness


def _ind(fitness, island, tag):
    return Individual(Genome.from_expression(("sum", tag)), fitness, (fitness,), island=island)


def test_migration_sends_each_islands_best_to_the_next_in_a_ring():
    population = [
        _ind(0.9, 0, "W"),
        _ind(0.1, 0, "G"),
        _ind(0.5, 1, "H"),
        _ind(0.2, 1, "A"),
        _ind(0.3, 2, "V"),
        _ind(0.4, 2, "GxW"),
    ]
    after = migrate(population, 3)
    by_island = {i: sorted((ind.fitness, ind.genome.formula()) for ind in after if ind.island == i) for i in range(3)}
    assert by_island == {
        0: [(0.4, "Σ(GxW)"), (0.9, "Σ(W)")],  # island 2's best replaced island 0's weakest
        1: [(0.5, "Σ(H)"), (0.9, "Σ(W)")],
        2: [(0.4, "Σ(GxW)"), (0.5, "Σ(H)")],
    }
    # An island that already ranks the sample like the emigrant keeps its members.
    same = [_ind(0.9, 0, "W"), _ind(0.1, 0, "G"), _ind(0.9, 1, "H"), _ind(0.2, 1, "A")]
    assert sorted(ind.fitness for ind in migrate(same, 2)) == [0.1, 0.2, 0.9, 0.9]


@pytest.mark.slow
def test_islands_keep_their_size_and_exchange_their_best(tmp_path):
    evo = Evolution(tmp_path / "i", EvolutionSettings(**{**SMALL, "islands": 3, "migration": 4}), log=lambda m: None)
    evo.run()
    evo.close()
    stored = RunStore(tmp_path / "i" / "run.db").get("state")
    assert sorted(stored["islands"]) == sorted([0, 1, 2] * SMALL["population"])
    # After the migration of iteration 12, a hash present in two islands shows an exchange took place.
    homes = {}
    for h, i in zip(stored["population"], stored["islands"]):
        homes.setdefault(h, set()).add(i)
    assert any(len(isl) > 1 for isl in homes.values())


def test_search_partition_splits_the_search_split_into_fitness_and_validation():
    bench = load_bench("fmnist-resnet20-w234")
    (fb, fa), (vb, va) = search_partition(bench, 50, 7)
    search = {tuple(e.bits) for e in bench.split("search")}
    fit, val = {tuple(r) for r in fb.tolist()}, {tuple(r) for r in vb.tolist()}
    assert len(fa) == 50 and len(fit) == 50 and not fit & val and fit | val == search
    assert search_partition(bench, 50, 7)[0][0].tolist() == fb.tolist()  # the run's seed fixes the sample
    (ab, _), (eb, _) = search_partition(bench, 0, 7)
    assert len(ab) == len(search) and len(eb) == 0


@pytest.mark.slow
def test_the_result_is_the_best_on_validation_among_the_fittest(tmp_path):
    from evoproxy.bench import rank_quality
    from evoproxy.evolve import run_summary

    k = 5
    evo = Evolution(tmp_path / "v", EvolutionSettings(**{**SMALL, "select_top": k}), log=lambda m: None)
    result = evo.run()
    evo.close()
    # Recompute the choice independently: distinct ρ@k parts, fittest first, judged by metrics.rank_quality.
    db = sqlite3.connect(tmp_path / "v" / "run.db")
    rows = db.execute(
        "SELECT genome, fitness, rho20, rho50, rho100 FROM candidates WHERE status = 'ok' ORDER BY fitness DESC, id"
    ).fetchall()
    db.close()
    picks, seen = [], set()
    for genome, fitness, *parts in rows:
        if tuple(round(p, 12) for p in parts) not in seen:
            seen.add(tuple(round(p, 12) for p in parts))
            picks.append(Genome.from_json(genome))
    picks = picks[:k]
    bench = load_bench("fmnist-resnet20-w234")
    _, (vb, va) = search_partition(bench, SMALL["samples"], SMALL["seed"])
    stats, _, _ = bench_stats(bench)
    inputs = prepare_inputs(stats)
    val = [rank_quality(vb @ g.evaluate(inputs).values.numpy(), va)["rho_mean"] for g in picks]
    chosen = picks[int(np.argmax(val))]
    assert result.genome.wl_hash() == chosen.wl_hash()
    assert result.validation == pytest.approx(max(val), abs=1e-9)
    assert Genome.load(tmp_path / "v" / "best.json").wl_hash() == chosen.wl_hash()
    summary = run_summary(tmp_path / "v")
    assert summary["final"]["hash"] == chosen.wl_hash() and f"the best there of the {k} fittest" in summary["choice"]
    # The choice is not simply the fittest here, or the test would not tell the two apart.
    assert chosen.wl_hash() != picks[0].wl_hash()


def test_a_time_budget_stops_the_run_after_the_initial_population(tmp_path):
    evo = Evolution(tmp_path / "h", EvolutionSettings(**{**SMALL, "iterations": 0}), log=lambda m: None)
    best = evo.run(hours=1e-9)
    evo.close()
    assert np.isfinite(best.fitness) and (tmp_path / "h" / "best.json").is_file()
    assert max(r[3] for r in _rows(tmp_path / "h")) == 0


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_to_the_uninterrupted_result(tmp_path, _stats_cache_dir):
    import os
    import signal
    import subprocess
    import sys
    import time

    args = [
        "--preset",
        "paper",
        "--population",
        "6",
        "--iterations",
        "60",
        "--samples",
        "30",
        "--seed",
        "3",
        "--no-report",
        "--runs-dir",
        str(tmp_path),
        "--name",
        "killed",
    ]
    env = {**os.environ, "EVOPROXY_CACHE_DIR": str(_stats_cache_dir)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "evoproxy.cli", "evolve", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    db = tmp_path / "killed" / "run.db"
    deadline = time.monotonic() + 120

    def stored() -> int:
        try:
            return len(_rows(tmp_path / "killed")) if db.is_file() else 0
        except sqlite3.OperationalError:  # the file exists, its tables not yet
            return 0

    while proc.poll() is None and time.monotonic() < deadline:
        if stored() >= 15:
            proc.send_signal(signal.SIGKILL)  # mid-run, wherever it is
            break
        time.sleep(0.02)
    assert proc.wait() == -signal.SIGKILL
    assert 15 <= len(_rows(tmp_path / "killed"))
    resumed = subprocess.run(
        [sys.executable, "-m", "evoproxy.cli", "evolve", "--resume", str(tmp_path / "killed"), "--no-report"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    whole = Evolution(
        tmp_path / "whole", EvolutionSettings(population=6, iterations=60, samples=30, seed=3), log=lambda m: None
    )
    whole.run()
    whole.close()
    assert _rows(tmp_path / "killed") == _rows(tmp_path / "whole")


@pytest.mark.slow
def test_report_compares_the_result_with_the_best_handcrafted_proxy_on_held_out_and_transfer(tmp_path, monkeypatch):
    import json

    from evoproxy.bench import rho_mean
    from evoproxy.proxy import HANDCRAFTED
    from evoproxy.evolve import full_report

    evo = Evolution(tmp_path / "r", EvolutionSettings(**{**SMALL, "iterations": 3}), log=lambda m: None)
    result = evo.run()
    evo.close()
    transfer = ["fmnist-mobilenetv2-w234"]  # one unseen model keeps the test short; the default is all five
    text, data = full_report(tmp_path / "r", transfer=transfer)
    assert json.loads((tmp_path / "r" / "report.json").read_text()) == json.loads(json.dumps(data))
    assert (tmp_path / "r" / "fitness.png").stat().st_size > 0
    assert result.genome.formula() in text and data["best"]["validation"] == pytest.approx(result.validation)
    assert set(data["benches"]) == {"fmnist-resnet20-w234", "fmnist-mobilenetv2-w234"}
    held = data["benches"]["fmnist-resnet20-w234"]
    assert held["split"] == "held-out" and held["seen"] and not data["benches"]["fmnist-mobilenetv2-w234"]["seen"]
    assert "On the 1 architectures the run never saw" in text
    # The reported difference is evolved minus the best handcrafted proxy over the whole split.
    bench = load_bench("fmnist-resnet20-w234")
    stats, _, _ = bench_stats(bench)
    bits, acc = bench.arrays(bench.split("held-out"))
    top = held["best_handcrafted"]["proxy"]
    ours = result.genome.score(stats, torch.as_tensor(bits)).numpy()
    theirs = HANDCRAFTED[top]().score(stats, torch.as_tensor(bits)).numpy()  # the tools' scores are bit-aware
    assert held["difference"]["value"] == pytest.approx(rho_mean(ours, acc) - rho_mean(theirs, acc))
    assert held["evolved"]["rho_all"] == pytest.approx(rho_mean(ours, acc))
    # "Best handcrafted" is the one ranking the whole split best, as the difference is measured.
    assert top == max(
        (n for n in HANDCRAFTED if n != "mean-bits"),
        key=lambda n: rho_mean(HANDCRAFTED[n]().score(stats, torch.as_tensor(bits)).numpy(), acc),
    )
    lo, hi = held["difference"]["interval_95"]
    assert lo < hi and f"{100 * held['difference']['value']:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]" in text

    # A result that cannot score a bench (say, non-finite on another model) is reported, not a crash.
    import evoproxy.evolve.report as report
    from evoproxy.bench import RankResult

    real = report.rank_proxy
    monkeypatch.setattr(
        report,
        "rank_proxy",
        lambda proxy, *a: (
            RankResult(proxy.name, {}, float("nan"), float("nan"), error="non-finite scores")
            if isinstance(proxy, Genome)
            else real(proxy, *a)
        ),
    )
    text, data = full_report(tmp_path / "r", transfer=transfer)
    assert text.count("the evolved proxy cannot rank fmnist-") == 2 and "non-finite scores" in text
    assert "difference" not in data["benches"]["fmnist-resnet20-w234"]


@pytest.mark.slow
def test_a_run_measured_around_a_bit_width_is_judged_and_reported_on_those_statistics(tmp_path):
    from evoproxy.evolve import full_report
    from evoproxy.stats import StatsSettings, load_stats_file

    config = EvolutionSettings(**{**SMALL, "iterations": 2, "space": "measured", "perturb_around": 3})
    evo = Evolution(tmp_path / "r", config, log=lambda m: None)
    evo.run()
    evo.close()
    assert EvolutionSettings.from_dict(config.to_dict()) == config
    assert Genome.load(tmp_path / "r" / "best.json").perturb_around == 3  # what allocate then measures
    text, data = full_report(tmp_path / "r", transfer=[])
    assert "output perturbations measured with every other layer at 3 bits" in text
    (entry,) = data["statistics"].values()
    assert entry["sha256"] == entry["search"]["sha256"]  # the report ranks on what the search read
    measured = load_stats_file(entry["path"])
    assert measured.settings.perturb_around == 3
    floating = bench_stats(load_bench("fmnist-resnet20-w234"), settings=StatsSettings(hessian=False))[0]
    assert not torch.equal(measured.layers[5].KL[2], floating.layers[5].KL[2])
    assert torch.equal(measured.layers[5].TAYLOR[2], floating.layers[5].TAYLOR[2])  # the layer's own either way


@pytest.mark.parametrize("space", ["bitaware", "branched"])
def test_a_run_computes_q_before_its_first_candidate_with_progress_lines_where_its_space_reads_q(
    tmp_path, monkeypatch, space
):
    monkeypatch.setattr(workers, "_CONTEXT", {})  # statistics loaded afresh: their Q not yet computed
    monkeypatch.setattr(pace, "PROGRESS_SECONDS", 0.0)  # every layer is "long" after the first
    computed = []
    real = quant_errors.weight_quantization_error
    monkeypatch.setattr(quant_errors, "weight_quantization_error", lambda *a: computed.append(a[1]) or real(*a))
    lines: list[str] = []
    evo = Evolution(tmp_path / space, EvolutionSettings(**{**SMALL, "iterations": 1, "space": space}), log=lines.append)
    evo.run()
    evo.close()
    n = len(evo.stats[0].layers)
    if space == "branched":  # no candidate reads Q: none computed, nothing to report
        assert computed == [] and not any("quantization errors" in l for l in lines)
        return
    first = next(i for i, l in enumerate(lines) if l.startswith("iteration"))
    assert [l.split(" (")[0] for l in lines[:first] if "quantization errors" in l] == [
        f"[stats] quantization errors: layer {i}/{n}" for i in range(1, n)
    ]
    assert set(computed) == set(np.unique(evo.fitness_configs[0][0]).tolist())  # those the fitness sample uses


def test_progress_line_gives_shares_of_proposed_candidates_since_the_last_line():
    from collections import Counter

    window = Tally(evaluated=8, screened=Counter({"WL repeats": 2, "invalid": 3, "conflict": 1}), seconds=2.0)
    assert (
        progress_line(window)
        == "4 evals/s | screened out of 10 proposed: invalid 30.0% WL repeats 20.0% conflict 10.0%"
    )
    assert progress_line(Tally(evaluated=5, seconds=1.0)).endswith("out of 5 proposed: none")
    # Equal shares keep the order the reasons came up in, across the iterations a line sums.
    window = Tally()
    for reasons in ({"same behaviour": 0, "error": 1}, {"WL repeats": 1, "same behaviour": 1}):
        window.add(Tally(evaluated=4, screened=Counter(reasons), seconds=1.0))
    assert progress_line(window).endswith("same behaviour 11.1% error 11.1% WL repeats 11.1%")
    assert window.rejected() == {"same behaviour": 1, "error": 1}


@pytest.mark.slow
def test_given_proxies_start_the_population(tmp_path, task_and_inputs):
    from evoproxy.proxy import get_genome

    fisher = get_genome("fisher")
    evo = Evolution(
        tmp_path / "g", EvolutionSettings(**{**SMALL, "iterations": 2, "init": (fisher.to_json(),)}), log=lambda m: None
    )
    evo.run()
    evo.close()
    first = _rows(tmp_path / "g")[0]
    _, inputs, _ = task_and_inputs
    (bits, acc), _ = search_partition(load_bench("fmnist-resnet20-w234"), SMALL["samples"], SMALL["seed"])
    assert first[4] == "given" and first[2] == "ok" and first[0] == fisher.wl_hash()
    assert first[1] == pytest.approx(FitnessTask(bits, acc).judge(fisher, inputs).fitness)

    outside = Genome.from_expression(("sum", "W"))  # a single input: not the branched skeleton
    with pytest.raises(EvoproxyError, match="does not lie in the branched space"):
        Evolution(tmp_path / "x", EvolutionSettings(**{**SMALL, "init": (outside.to_json(),)}), log=lambda m: None)
    assert not (tmp_path / "x").exists()  # a run with bad settings leaves nothing to trip over later


@pytest.mark.slow
def test_presets_fill_the_flags_left_out(tmp_path, capsys):
    from evoproxy.cli import main

    assert EvolutionSettings.preset("paper") == EvolutionSettings()  # the paper's setting is the defaults

    def config(*flags):
        name = f"r{len(list(tmp_path.iterdir()))}"
        assert (
            main(["evolve", *flags, "--runs-dir", str(tmp_path), "--name", name, "--no-report", "--log-every", "0"])
            == 0
        )
        store = RunStore(tmp_path / name / "run.db")
        try:
            return store.get("config")
        finally:
            store.close()

    strong = config("--preset", "strong", "--iterations", "1", "--population", "4")
    assert (strong["samples"], strong["islands"], strong["population"], strong["iterations"]) == (0, 4, 4, 1)
    assert [Genome.from_json(g).wl_hash() for g in strong["init"]] == [get_genome("fisher").wl_hash()]
    plain = config("--preset", "strong", "--init", "none", "--samples", "40", "--iterations", "0", "--islands", "1")
    assert (plain["samples"], plain["islands"], plain["population"], plain["init"]) == (40, 1, 50, [])
    zoo = config("--iterations", "0", "--population", "4")  # the default preset
    assert (zoo["space"], zoo["aggregate"], zoo["samples"], zoo["islands"]) == ("bitaware", "mean", 0, 2)
    assert [Genome.from_json(g).wl_hash() for g in zoo["init"]] == [get_genome("hawq-v2").wl_hash()]
    # the zoo: not the language model, nor the wider zoo's models
    classifiers = [m for m in sorted(MODELS) if MODELS[m].data == "fmnist" and MODELS[m].bench_set == "zoo"]
    assert zoo["benches"] == [f"fmnist-{m.removesuffix('-fmnist')}-w234" for m in classifiers]
    mixed = config("--iterations", "0", "--population", "4", "--benches", "fmnist-vgg-w345,zoo,fmnist-vgg-w345")
    assert mixed["benches"][0] == "fmnist-vgg-w345" and len(mixed["benches"]) == 7  # repeats count once


@pytest.mark.slow
def test_the_report_measures_transfer_on_the_main_bench_of_every_model_the_run_never_saw():
    from evoproxy.evolve import transfer_benches

    assert transfer_benches(["fmnist-resnet20-w234", "fmnist-vgg-w345"]) == [
        "fmnist-mixer-w234",
        "fmnist-mobilenetv2-w234",
        "fmnist-shufflenet-w234",
        "fmnist-squeezenet-w234",
    ]
    assert len(transfer_benches([])) == 6


@pytest.mark.slow
def test_fitness_over_several_benches_is_the_aggregate_of_their_fitnesses():
    from evoproxy.evolve.fitness import BenchesTask

    benches = [load_bench(b) for b in ("fmnist-resnet20-w234", "fmnist-vgg-w234")]
    tasks = [FitnessTask(*search_partition(b, 40, 1)[0]) for b in benches]
    inputs = [prepare_inputs(bench_stats(b)[0]) for b in benches]
    space, rng = load_space("branched"), random.Random(0)
    judged = 0
    for genome in [get_genome("fisher"), *(sample_genome(space, rng) for _ in range(30))]:
        single = [task.judge(genome, x) for task, x in zip(tasks, inputs)]
        mean, worst = (BenchesTask(tasks, aggregate).judge(genome, inputs) for aggregate in ("mean", "min"))
        if all(o.ok for o in single):
            judged += 1
            assert mean.fitness == pytest.approx(np.mean([o.fitness for o in single]), abs=1e-12)
            assert worst.fitness == min(o.fitness for o in single)
            assert mean.parts == pytest.approx({k: np.mean([o.parts[k] for o in single]) for k in single[0].parts})
        else:  # rejected on one bench: rejected, for that bench's reason
            assert not mean.ok and mean.rule == next(o.rule for o in single if not o.ok)
    assert judged >= 10
    one, alone = (
        BenchesTask(tasks[:1]).judge(get_genome("fisher"), inputs[:1]),
        tasks[0].judge(get_genome("fisher"), inputs[0]),
    )
    assert (one.fitness, one.parts) == (alone.fitness, alone.parts)  # on one bench: its fitness, to the last bit
    with pytest.raises(EvoproxyError, match="BenchesTask.aggregate must be one of mean, min, softmin, q25"):
        BenchesTask(tasks, "median")


def test_a_run_on_several_benches_stores_them_and_resumes(tmp_path):
    config = EvolutionSettings(
        **{**SMALL, "iterations": 3, "benches": ("fmnist-resnet20-w234", "fmnist-vgg-w234"), "aggregate": "min"}
    )
    evo = Evolution(tmp_path / "m", config, log=lambda m: None)
    best = evo.run()
    evo.close()
    store = RunStore(tmp_path / "m" / "run.db")
    stored = store.get("config")
    store.close()
    assert EvolutionSettings.from_dict(stored) == config
    assert EvolutionSettings.from_dict(
        {**{k: v for k, v in stored.items() if k != "benches"}, "bench": "fmnist-vgg-w234"}
    ).benches == ("fmnist-vgg-w234",)  # older runs
    assert np.isfinite(best.fitness) and (tmp_path / "m" / "best.json").is_file()


@pytest.mark.slow
def test_hall_of_fame_keeps_the_fittest_of_each_complexity_that_beats_every_simpler_one(tmp_path):
    from evoproxy.evolve.runs import hall_of_fame

    evo = Evolution(tmp_path / "h", EvolutionSettings(**SMALL), log=lambda m: None)
    evo.run()
    rows = evo.store.candidates()
    front = hall_of_fame(evo.store)
    evo.close()
    ok = [(Genome.from_json(r["genome"]).complexity, r["fitness"]) for r in rows if r["status"] == "ok"]
    assert len(front) >= 2
    for entry in front:  # the best fitness at this complexity or below, found at exactly this complexity
        assert entry["fitness"] == max(f for c, f in ok if c <= entry["complexity"])
        assert entry["fitness"] == max(f for c, f in ok if c == entry["complexity"])
    assert [e["complexity"] for e in front] == sorted({e["complexity"] for e in front})
    assert front[-1]["fitness"] == max(f for _, f in ok)


def test_parsimony_makes_the_simplest_proxy_win_when_it_dominates(tmp_path):
    config = EvolutionSettings(**{**SMALL, "select_top": 0, "parsimony": 1.0})  # 1 per node outweighs any ρ
    evo = Evolution(tmp_path / "p", config, log=lambda m: None)
    result = evo.run()
    rows = [r for r in evo.store.candidates() if r["status"] == "ok"]
    evo.close()
    simplest = min(Genome.from_json(r["genome"]).complexity for r in rows)
    assert result.genome.complexity == simplest
    assert result.fitness == pytest.approx(
        max(r["fitness"] for r in rows if Genome.from_json(r["genome"]).complexity == simplest) - simplest
    )
    with pytest.raises(EvoproxyError, match="parsimony must be"):
        EvolutionSettings(parsimony=-1)


@pytest.mark.slow
def test_run_summary_knows_restarts_and_the_proxies_a_run_started_from(tmp_path):
    from evoproxy.proxy import genome_form
    from evoproxy.evolve import run_summary
    from evoproxy.evolve.plot import plot_history

    config = EvolutionSettings(
        **{**SMALL, "iterations": 10, "islands": 2, "migration": 3, "patience": 2},
        init=(genome_form("fisher").to_json(),),
    )
    evo = Evolution(tmp_path / "r", config, log=lambda m: None)
    evo.run()
    evo.close()
    summary = run_summary(tmp_path / "r")
    assert summary["restarted_at"] and all(0 < r <= 10 for r in summary["restarted_at"])
    ((name, fitness),) = summary["started_from"]
    assert name == "fisher" and fitness <= max(h[1] for h in summary["history"])
    plot_history(summary, tmp_path / "f.png", "a title")
    assert (tmp_path / "f.png").stat().st_size > 0


def test_the_worst_case_aggregates_lie_between_the_worst_bench_and_the_mean():
    from evoproxy.evolve.fitness import AGGREGATES, SOFTMIN_TEMPERATURE

    fitnesses = [0.81, 0.52, 0.77, 0.74, 0.79, 0.69]
    mean, worst = AGGREGATES["mean"](fitnesses), AGGREGATES["min"](fitnesses)
    for name in ("softmin", "q25"):
        assert worst <= AGGREGATES[name](fitnesses) <= mean, name
    assert AGGREGATES["q25"](fitnesses) == pytest.approx(0.7025)  # numpy's linear interpolation
    # The soft minimum is within τ·log(n) of the worst, and equal to it when every bench agrees.
    assert AGGREGATES["softmin"](fitnesses) - worst <= SOFTMIN_TEMPERATURE * np.log(len(fitnesses))
    assert AGGREGATES["softmin"]([0.6] * 4) == pytest.approx(0.6, abs=1e-15)
    assert AGGREGATES["softmin"]([0.9, -0.9]) == pytest.approx(-0.9 + SOFTMIN_TEMPERATURE * np.log(2), abs=1e-9)
    from evoproxy.cli import build_parser

    evolve = build_parser()._subparsers._group_actions[0].choices["evolve"]
    assert next(a.choices for a in evolve._actions if "--aggregate" in a.option_strings) == list(AGGREGATES)
