"""Property-based fuzzing of the input files (genome JSON, search-space TOML, bit configuration
files, bench files) and of the numeric flags of allocate, pareto, rank and bench build, through the
command line: every case ends with exit code 0 and a correct result, or exit code 2 and a one-line
message, never a traceback. Inputs known to be wrong must be refused (no silent accept). Models
are the tiny test nets, so that the suite runs in seconds."""

import json
import math
import random
from collections import Counter

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import evoproxy.bench.build  # noqa: E402
import evoproxy.evolve  # noqa: E402
from evoproxy.cli import main  # noqa: E402
from evoproxy.proxy import Genome, available_spaces, load_space, sample_genome  # noqa: E402

FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MODEL = ["--model", "synthetic_stats:tiny_fmnist_net"]
FAST_STATS = ["--batch-size", "8", "--hutchinson-samples", "4", "--power-iters", "3"]
LAYERS = ["0", "2", "6"]  # tiny_fmnist_net's layer registry
TALLY: Counter = Counter()  # what the suite saw: cases, clean errors, accepts (printed at the end)

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


class _Started(Exception):
    """Raised where a command would start its long work: every input was accepted."""


def _outcome(argv: list[str], capsys) -> tuple[str, str]:
    """("ok", stdout) or ("error", the one-line message) of a command; anything else (an exception,
    another exit code, a message of several lines) fails the test."""
    TALLY["cases"] += 1
    try:
        code = main(argv)
    except _Started:
        code = 0
    out, err = capsys.readouterr()
    assert code in (0, 2), (argv, code, err)
    if code == 2:
        lines = [line for line in err.splitlines() if not line.startswith("evoproxy: warning:")]
        assert len(lines) == 1 and lines[0].startswith(f"evoproxy {argv[0]}: error: "), err
        assert "Traceback" not in err
        TALLY["clean errors"] += 1
        return "error", lines[0]
    TALLY["accepts"] += 1
    return "ok", out


def _must_refuse(result: tuple[str, str], case) -> None:
    assert result[0] == "error", f"silently accepted: {case!r}"


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print(
        f"\nfuzz_inputs: {TALLY['cases']} cases, {TALLY['clean errors']} clean errors, "
        f"{TALLY['accepts']} accepts (a traceback or a silent accept fails its test)"
    )


@pytest.fixture
def stopped_before_evolving(monkeypatch):
    def started(*args, **kwargs):
        raise _Started

    monkeypatch.setattr(evoproxy.evolve, "Evolution", started)


# -- genome JSON (read by evolve --init, before anything runs) ------------------------------------


def _genome_data(seed: int) -> dict:
    space = load_space(available_spaces()[seed % len(available_spaces())])
    return sample_genome(space, random.Random(seed)).to_dict()


def _mutate_genome(data: dict, kind: str, value, rng: random.Random) -> tuple[object, bool]:
    """A mutation of a genome's data and whether it must be refused."""
    nodes = data["nodes"]
    i = rng.randrange(len(nodes))
    if kind == "drop node":  # every node but the output is an operand; the output is the aggregation
        del nodes[i]
        return data, True
    if kind == "unknown name":
        nodes[i]["name"] = "no such op " + str(value)
        return data, True
    if kind == "dangling operand":
        nodes[i]["operands"] = [*nodes[i].get("operands", []), 10_000]
        return data, True
    if kind == "field value":  # any JSON value in any field: refused, or a genome that round-trips
        key = rng.choice(["id", "role", "name", "operands"])
        nodes[i][key] = value
        return data, False
    if kind == "top value":
        data[rng.choice(["format", "version", "nodes", "name", "space"])] = value
        return data, False
    if kind == "nested":
        return {"format": "evoproxy-genome", "version": 1, "nodes": [[[[[]]]]] * 2 + ["x" * 3] + [value]}, True
    return value, True  # any JSON value instead of a genome


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind", ["drop node", "unknown name", "dangling operand", "field value", "top value", "nested", "replaced"]
)
def test_genome_files_are_loaded_or_refused_in_one_line(kind, tmp_path, capsys, stopped_before_evolving):
    @FUZZ
    @given(st.integers(0, 10**6), JSON_VALUES)
    def check(seed, value):
        data, must_refuse = _mutate_genome(_genome_data(seed), kind, value, random.Random(seed))
        path = tmp_path / "g.json"
        path.write_text(json.dumps(data))
        result = _outcome(["evolve", "--preset", "paper", "--runs-dir", str(tmp_path), "--init", str(path)], capsys)
        if must_refuse:
            _must_refuse(result, data)
        elif result[0] == "ok":  # what was accepted is a genome that reads back as itself
            genome = Genome.load(path)
            assert Genome.from_json(genome.to_json()) == genome and len(genome.names) == len(data["nodes"])

    check()


@pytest.mark.parametrize(
    "content",
    [
        b"\xff\xfe\x00{",
        '{"format": "évoproxy"}'.encode("latin-1"),
        b"[" * 100_000,
        b'{"a":' * 50_000,
        b"",
        b"\x00" * 100,
        b" " * 300_000,
        json.dumps(
            {
                "format": "evoproxy-genome",
                "version": 1,
                "nodes": [
                    {
                        "id": i,
                        "role": "unary" if i else "input",
                        "name": "abs" if i else "W",
                        "operands": [i - 1] if i else [],
                    }
                    for i in range(5000)
                ],
            }
        ).encode(),
    ],
    ids=lambda c: repr(c[:24]),
)
def test_genome_files_that_are_not_genomes_are_refused(content, tmp_path, capsys, stopped_before_evolving):
    (tmp_path / "g.json").write_bytes(content)
    _must_refuse(
        _outcome(
            ["evolve", "--preset", "paper", "--runs-dir", str(tmp_path), "--init", str(tmp_path / "g.json")], capsys
        ),
        content[:40],
    )


# -- search-space TOML (read by validity) ---------------------------------------------------------

GOOD_COUNTS = {
    "n_inputs": st.integers(1, 3),
    "n_nodes": st.integers(0, 3),
    "chain_length": st.integers(0, 2),
    "tail_length": st.integers(0, 3),
}
BAD_NUMBERS = st.sampled_from(["-1", "300", "1000000000000000000", "nan", "inf", "1.5", "true", '"3"', "[1]"])


def _toml(counts: dict, extra: str = "") -> str:
    return "\n".join(f"{k} = {v}" for k, v in counts.items()) + '\ninputs = ["W", "G"]\n' + extra


@pytest.mark.slow
@FUZZ
@given(
    st.fixed_dictionaries(GOOD_COUNTS),
    st.sampled_from([None, *GOOD_COUNTS]),
    BAD_NUMBERS,
    st.sampled_from(
        [
            "",
            "[osp]\nabs = 2.0\n",
            "[osp]\nabs = nan\n",
            "[osp]\nabs = -inf\n",
            "[osp]\nabs = 0\n",
            "[osp]\nnot_an_op = 1.0\n",
            "unknown_key = 1\n",
            'unary = ["abs", "exp"]\n',
            'unary = ["eval"]\n',
            "binary = []\n",
            "a = " + "[" * 2000 + "\n",
        ]
    ),
)
def test_search_space_files_are_loaded_or_refused_in_one_line(tmp_path_factory, capsys, counts, bad_key, bad, extra):
    text = _toml({**counts, **({bad_key: bad} if bad_key else {})}, extra)
    path = tmp_path_factory.mktemp("space") / "space.toml"
    path.write_text(text)
    result = _outcome(
        [
            "validity",
            "--space",
            str(path),
            "--samples",
            "8",
            *MODEL,
            "--batch-size",
            "8",
            "--cache-dir",
            str(path.parent / "cache"),
            "--json",
        ],
        capsys,
    )
    degenerate = (counts["n_nodes"] == 0 and counts["n_inputs"] != 1) or (
        counts["n_inputs"] == 1 and counts["chain_length"] == 0 and counts["n_nodes"] > 1
    )
    good_extra = extra in ("", "[osp]\nabs = 2.0\n", 'unary = ["abs", "exp"]\n')
    if bad_key or degenerate or not good_extra:
        _must_refuse(result, text)
    else:
        assert result[0] == "ok", (text, result)
        assert json.loads(result[1])["samples"] == 8


# -- bit configuration files (read by quantize) ---------------------------------------------------


def _bits_case(kind: str, value, rng: random.Random) -> tuple[object, bool]:
    good = {"bits": [rng.choice([2, 4, 8, 32]) for _ in LAYERS], "act_bits": rng.choice([4, 8, 32])}
    if kind == "good":
        return good, False
    if kind == "bits out of range":
        good["bits"][rng.randrange(3)] = rng.choice([-1, 0, 1, 33, 10**30])
        return good, True
    if kind == "act_bits out of range":
        good["act_bits"] = rng.choice([-8, 0, 33, 10**30, [0, 0, 0], 8.5, "8", None, True])
        return good, True
    if kind == "wrong length":
        good["bits"] = [4] * rng.choice([0, 1, 2, 4, 22])
        return good, True
    if kind == "field value":
        good[rng.choice(["bits", "act_bits", "layers"])] = value
        return good, False
    return value, True


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind", ["good", "bits out of range", "act_bits out of range", "wrong length", "field value", "replaced"]
)
def test_bit_configuration_files_are_loaded_or_refused_in_one_line(kind, tmp_path, capsys):
    @settings(FUZZ, max_examples=10 if kind == "good" else 40)  # an accepted file is quantized and evaluated
    @given(st.integers(0, 10**6), JSON_VALUES)
    def check(seed, value):
        data, must_refuse = _bits_case(kind, value, random.Random(seed))
        path = tmp_path / "bits.json"
        path.write_text(json.dumps(data))
        result = _outcome(["quantize", "--bits-file", str(path), *MODEL, "--eval-size", "16"], capsys)
        if must_refuse:
            _must_refuse(result, data)
        elif kind == "good":
            assert result[0] == "ok" and f"A{data['act_bits']}" in result[1], result

    check()


@pytest.mark.parametrize(
    "content",
    [
        b"\xff\xfe",
        b"[" * 100_000,
        b"",
        b'{"bits": [2, 2, 2], "layers": 5}',
        b'{"bits": [2, 2, 2], "layers": [{"name": "x"}]}',
    ],
    ids=lambda c: repr(c[:24]),
)
def test_bit_configuration_files_that_do_not_fit_are_refused(content, tmp_path, capsys):
    (tmp_path / "bits.json").write_bytes(content)
    _must_refuse(_outcome(["quantize", "--bits-file", str(tmp_path / "bits.json"), *MODEL], capsys), content[:40])


# -- bench files (read by bench show) -------------------------------------------------------------

HEADER = {
    "format": "evoproxy-bench/1",
    "name": "tiny",
    "model": "synthetic_stats:tiny_fmnist_net",
    "layers": LAYERS,
    "bit_choices": [2, 3, 4],
    "fixed": {"0": 8},
    "act_bits": 8,
}


def _bench_case(kind: str, value, rng: random.Random) -> tuple[bytes, bool]:
    header = json.loads(json.dumps(HEADER))
    entries = [
        {"bits": [8, a, b], "accuracy": rng.uniform(0, 100), "size_mb": 0.1, "bops": 1e6}
        for a in (2, 3, 4)
        for b in (2, 3, 4)
    ]
    rng.shuffle(entries)
    must_refuse = kind != "good"
    e = rng.choice(entries)
    if kind == "bits outside the choices":
        e["bits"][rng.randrange(3)] = rng.choice([0, 1, 5, 33, -2])
    elif kind == "fractional bits":
        e["bits"][1] = 2.5
    elif kind == "accuracy not a percentage":
        e["accuracy"] = rng.choice([math.nan, math.inf, -1.0, 100.5, "high", None, [50]])
    elif kind == "wrong bit count":
        e["bits"] = e["bits"][: rng.randrange(3)]
    elif kind == "duplicate":
        entries.append(dict(e))
    elif kind == "header field":
        key = rng.choice(["name", "model", "layers", "bit_choices", "fixed", "act_bits"])
        header[key] = value
        must_refuse = key not in ("name", "model") and not (key == "fixed" and value == {})
    elif kind == "entry value":
        entries[0] = value
    lines = [json.dumps(header)] + [json.dumps(x) for x in entries]
    return ("\n".join(lines) + "\n").encode(), must_refuse


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind",
    [
        "good",
        "bits outside the choices",
        "fractional bits",
        "accuracy not a percentage",
        "wrong bit count",
        "duplicate",
        "header field",
        "entry value",
    ],
)
def test_bench_files_are_loaded_or_refused_in_one_line(kind, tmp_path, capsys):
    @FUZZ
    @given(st.integers(0, 10**6), JSON_VALUES)
    def check(seed, value):
        content, must_refuse = _bench_case(kind, value, random.Random(seed))
        path = tmp_path / "b.jsonl"
        path.write_bytes(content)
        result = _outcome(["bench", "show", str(path)], capsys)
        if must_refuse:
            _must_refuse(result, content[:200])
        elif kind == "good":
            assert result[0] == "ok" and "9 configurations" in result[1], result

    check()


@pytest.mark.parametrize(
    "content",
    [
        b"\xff\xfe\n",
        b"",
        b"\n\n",
        json.dumps(HEADER).encode() + b'\n{"bits": [8, 2, 2], "accuracy": 1e999}\n',
        json.dumps(HEADER).encode() + b"\n" + b"[" * 100_000 + b"\n",
        json.dumps(HEADER).encode() + b'\n{"bits": [8, 2, 2], "accuracy": 1' + b"0" * 400 + b"}\n",
        b'{"header": ' + json.dumps(HEADER).encode() + b', "entries": 5}',
    ],
    ids=lambda c: repr(c[:24]),
)
def test_bench_files_that_are_not_benches_are_refused(content, tmp_path, capsys):
    (tmp_path / "b.jsonl").write_bytes(content)
    _must_refuse(_outcome(["bench", "show", str(tmp_path / "b.jsonl")], capsys), content[:40])


# -- numeric flags of allocate, pareto, rank and bench build --------------------------------------

FLOATS = st.one_of(
    st.sampled_from([0.0, -0.0, 1e-300, 0.001, 1.0, 1e12, 1e13, 1e308, math.nan, math.inf, -math.inf]),
    st.floats(allow_nan=True, allow_infinity=True),
)
INTS = st.one_of(st.integers(-3, 40), st.integers(-(10**18), 10**18))


@pytest.fixture(scope="module")
def stats_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("stats")
    assert main(["stats", *MODEL, *FAST_STATS, "--cache-dir", str(cache)]) == 0
    return cache


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["--size-mb", "--bops-g", "--act-bits", "--fixed-bits"])
def test_numeric_flags_of_allocate(flag, stats_cache, tmp_path, capsys):
    @FUZZ
    @given(INTS if flag in ("--act-bits", "--fixed-bits") else FLOATS)
    def check(value):
        flags = {"--size-mb": 0.01, "--bops-g": None, "--act-bits": 8, "--fixed-bits": 8, flag: value}
        argv = [
            "allocate",
            "--proxy",
            "fisher",
            *MODEL,
            *FAST_STATS,
            "--cache-dir",
            str(stats_cache),
            "--out",
            str(tmp_path / "a.json"),
        ]
        argv += [f"{k}={v}" for k, v in flags.items() if v is not None]
        result = _outcome(argv, capsys)
        within = {
            "--size-mb": lambda v: 0 < v <= 1e12,
            "--bops-g": lambda v: 0 < v <= 1e21,
            "--act-bits": lambda v: 1 <= v <= 32,
            "--fixed-bits": lambda v: 2 <= v <= 32,
        }[flag](value)
        if not within:
            _must_refuse(result, (flag, value))
        elif result[0] == "ok":  # the bits written fit the budget that was asked for
            record = json.loads((tmp_path / "a.json").read_text())
            assert flag != "--size-mb" or record["size_mb"] <= value
            assert flag != "--fixed-bits" or record["bits"][0] == value == record["bits"][-1]
        else:  # within the flag's bounds, only an infeasible budget may be refused
            assert "below the smallest feasible" in result[1], result

    check()


@pytest.mark.slow
def test_sizes_of_pareto(stats_cache, capsys):
    @FUZZ
    @given(st.lists(FLOATS, min_size=1, max_size=3))
    def check(sizes):
        result = _outcome(
            [
                "pareto",
                "--proxies",
                "fisher",
                *MODEL,
                *FAST_STATS,
                "--cache-dir",
                str(stats_cache),
                "--json",
                "--sizes=" + ",".join(map(str, sizes)),
            ],
            capsys,
        )
        if not all(0 < s <= 1e12 for s in sizes):
            _must_refuse(result, sizes)
        elif result[0] == "ok":
            assert {p["budget_mb"] for p in json.loads(result[1])["points"]} - {None} <= set(sizes)

    check()


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["--samples", "--repeats", "--seed"])
def test_numeric_flags_of_rank(flag, capsys, monkeypatch):
    def started(*args, **kwargs):
        raise _Started

    monkeypatch.setattr(evoproxy.bench, "bench_stats", started)

    @FUZZ
    @given(INTS)
    def check(value):
        result = _outcome(["rank", "--bench", "fmnist-resnet20-w234", "--proxies", "fisher", f"{flag}={value}"], capsys)
        within = {"--samples": lambda v: v >= 0, "--repeats": lambda v: v >= 1, "--seed": lambda v: v >= 0}[flag]
        if not within(value):
            _must_refuse(result, (flag, value))

    check()


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["--configs", "--eval-size", "--seed", "--act-bits", "--fixed-bits", "--jobs"])
def test_numeric_flags_of_bench_build(flag, tmp_path, capsys, monkeypatch):
    """Fewer examples: each accepted one reads the test images."""

    def started(*args, **kwargs):
        raise _Started

    monkeypatch.setattr(evoproxy.bench.build, "_measure", started)  # after every check, before any quantizing

    @settings(FUZZ, max_examples=12)
    @given(INTS)
    def check(value):
        result = _outcome(["bench", "build", *MODEL, "--out", str(tmp_path / "b.jsonl"), f"{flag}={value}"], capsys)
        if (
            value
            < {"--configs": 1, "--eval-size": 1, "--seed": 0, "--act-bits": 1, "--fixed-bits": 2, "--jobs": 1}[flag]
        ):
            _must_refuse(result, (flag, value))

    check()


# -- run databases, bench files and the names they hold (issue 29: runs and benches) --------------

RUN_CONFIG = {"benches": ["fmnist-resnet20-w234"], "population": 3, "iterations": 2, "samples": 30}


def _stored_run(run_dir, config: dict = RUN_CONFIG):
    """A finished run of 2 iterations as evolve stores it, made without evaluating anything: three
    sampled proxies in its population, the fittest its result."""
    from evoproxy.evolve import RunStore
    from evoproxy.evolve.fitness import Outcome

    rng = random.Random(0)
    store = RunStore(run_dir / "run.db", new={"config": config})
    genomes = [sample_genome(load_space("branched"), rng) for _ in range(3)]
    for i, g in enumerate(genomes):
        parts = {"rho@20%": 0.1 * i, "rho@50%": 0.2 * i, "rho@100%": 0.3 * i}
        store.add_candidate(g.wl_hash(), g.to_json(), g.formula(), Outcome(0.1 * i, parts), 0, "init")
    hashes = [g.wl_hash() for g in genomes]
    store.put(
        state={"iteration": 2, "rng": rng.getstate(), "population": hashes, "islands": [0, 0, 0], "elapsed": 1.0},
        final={
            "iteration": 2,
            "hash": hashes[2],
            "fitness": 0.2,
            "validation": None,
            "validation_configs": 0,
            "among": 1,
        },
    )
    store.close()
    return run_dir


def _damage_run(run_dir, kind: str) -> None:
    import sqlite3

    db = sqlite3.connect(run_dir / "run.db")
    state, final = (
        json.loads(db.execute("SELECT value FROM meta WHERE key = ?", (k,)).fetchone()[0]) for k in ("state", "final")
    )

    def put(key, value):
        db.execute("UPDATE meta SET value = ? WHERE key = ?", (json.dumps(value), key))

    if kind == "state names a missing candidate":
        put("state", {**state, "population": ["missing", *state["population"][1:]]})
    elif kind == "state without its random state":
        put("state", {k: v for k, v in state.items() if k != "rng"})
    elif kind == "state with a random state of the wrong shape":
        put("state", {**state, "rng": [3, [1, 2], None]})
    elif kind == "state a list":
        put("state", [state])
    elif kind == "state counts of the wrong type":
        put("state", {**state, "restarted_at": "3", "iteration": 2.5})
    elif kind == "result names a missing candidate":
        put("final", {**final, "hash": "missing"})
    elif kind == "result not an object":
        put("final", "the third")
    elif kind == "fitness text":
        db.execute("UPDATE candidates SET fitness = 'high' WHERE id = 2")
    elif kind == "fitness NULL":
        db.execute("UPDATE candidates SET fitness = NULL WHERE id = 2")
    elif kind == "genome not JSON":  # the result's, which every command reads
        db.execute("UPDATE candidates SET genome = '{\"nodes\": [' WHERE hash = ?", (final["hash"],))
    elif kind == "genome not a genome":
        db.execute("UPDATE candidates SET genome = ? WHERE hash = ?", (json.dumps({"nodes": [1]}), final["hash"]))
    elif kind == "no evaluated candidate":
        db.execute("UPDATE candidates SET status = 'conflict', fitness = NULL")
    elif kind == "settings of the wrong type":
        put("config", {**RUN_CONFIG, "benches": [3], "iterations": "all"})
    elif kind == "lock a folder":
        (run_dir / "run.db.lock").unlink(missing_ok=True)
        (run_dir / "run.db.lock").mkdir()
    elif kind == "lock a symbolic link":
        (run_dir / "run.db.lock").unlink(missing_ok=True)
        (run_dir / "run.db.lock").symlink_to(run_dir / "elsewhere")
    db.commit()
    db.close()


RUN_DAMAGE = [
    "state names a missing candidate",
    "state without its random state",
    "state with a random state of the wrong shape",
    "state a list",
    "state counts of the wrong type",
    "result names a missing candidate",
    "result not an object",
    "fitness text",
    "fitness NULL",
    "genome not JSON",
    "genome not a genome",
    "no evaluated candidate",
    "settings of the wrong type",
    "lock a folder",
    "lock a symbolic link",
]


@pytest.mark.parametrize("kind", RUN_DAMAGE)
def test_a_damaged_run_is_one_line_in_every_command_and_runs_lists_the_others(kind, tmp_path, capsys):
    _stored_run(tmp_path / "good")
    run = _stored_run(tmp_path / "r")
    _damage_run(run, kind)
    lock = kind.startswith("lock")  # readers never open the lock: only a writer and `runs` meet it
    for argv in (
        ["show", "--quick", str(run)],
        ["show", "--top", "3", str(run)],
        ["show", "--csv", str(tmp_path / "c.csv"), str(run)],
        ["evolve", "--resume", str(run), "--no-report", "--log-every", "0"],
    ):
        result = _outcome(argv, capsys)
        if argv[0] == "evolve" or not lock:
            assert result[0] == "error" and ("run.db.lock" if lock else f"{run / 'run.db'} is damaged") in result[1]
        else:  # a reader never opens the lock: the run is shown as it is
            assert result[0] == "ok" and (argv[1] == "--csv" or "max(" in result[1]), result
    if kind == "lock a symbolic link":
        assert not (run / "elsewhere").exists()  # never created through the link
    kind, out = _outcome(["runs", "--runs-dir", str(tmp_path)], capsys)
    lines = out.splitlines()
    assert kind == "ok" and {line.split()[0]: line.split()[1] for line in lines[2:4]} == {
        "good": "finished",
        "r": "unreadable",
    }, lines
    assert [line.split(": ")[0] for line in lines[4:]] == ["r"], lines  # one reason, for the damaged run


def test_a_damaged_genome_that_no_record_names_is_refused_naming_the_run_where_it_is_read(tmp_path, capsys):
    import sqlite3

    run = _stored_run(tmp_path / "r")
    db = sqlite3.connect(run / "run.db")
    row = db.execute("SELECT * FROM candidates WHERE id = 1").fetchone()
    db.execute(  # the fittest candidate, outside the population: only the leaderboard reads its genome
        "INSERT INTO candidates VALUES (NULL, 'other', '[1, 2', ?, 0.9, ?, ?, ?, ?, 'ok', NULL, 1, 'offspring')",
        row[3:4] + row[5:9],
    )
    db.commit()
    db.close()
    assert _outcome(["show", "--quick", str(run)], capsys)[0] == "ok"
    kind, message = _outcome(["show", "--top", "3", str(run)], capsys)
    assert kind == "error" and f"{run / 'run.db'} is damaged: the genome of candidate 4 cannot be read" in message


@pytest.mark.parametrize(
    "content",
    [
        json.dumps(HEADER).encode() + b"\n",  # a build killed before its first measurement
        json.dumps({"header": HEADER, "entries": []}).encode(),
        *(random.Random(seed).randbytes(300) for seed in range(6)),
        *(
            (json.dumps({**HEADER, key: value}) + '\n{"bits": [8, 2, 2], "accuracy": 50}\n').encode()
            for key, value in [
                ("held_out_fraction", "0.2"),
                ("held_out_fraction", 7),
                ("split_seed", 1.5),
                ("fp_accuracy", "high"),
                ("eval", [1]),
            ]
        ),
    ],
    ids=lambda c: repr(c[:24]) if c[:1] != b"{" else c.decode(errors="replace")[-60:],
)
def test_bench_files_without_entries_or_binary_or_with_bad_optional_fields_are_refused(content, tmp_path, capsys):
    path = tmp_path / "b.jsonl"
    path.write_bytes(content)
    for argv in (["bench", "show", str(path)], ["evolve", "--benches", str(path), "--population", "4"]):
        kind, message = _outcome(argv, capsys)
        assert kind == "error" and str(path) in message, (argv, message)


EVIL = "\x1b[2J\x1b]0;owned\x07\n"


@pytest.mark.parametrize(
    "where", ["bench name", "bench model", "bench eval", "genome name", "setting key", "run folder"]
)
def test_names_from_files_reach_the_terminal_escaped(where, tmp_path, capsys):
    path = tmp_path / "b.jsonl"
    header = {**HEADER, "eval": {"dataset": "fmnist"}}
    header.update(
        {"bench name": {"name": EVIL}, "bench model": {"model": EVIL}, "bench eval": {"eval": {EVIL: 1}}}.get(where, {})
    )
    entries = [{"bits": [8, a, b], "accuracy": 10.0 * a + b} for a in (2, 3, 4) for b in (2, 3, 4)]
    path.write_text("\n".join(json.dumps(x) for x in [header, *entries]) + "\n")
    if where.startswith("bench"):
        argv = ["bench", "show", str(path)]
    elif where == "genome name":
        genome = json.loads(sample_genome(load_space("branched"), random.Random(1)).to_json())
        (tmp_path / "g.json").write_text(json.dumps({**genome, "name": EVIL}))
        argv = ["evolve", "--benches", str(path), "--space", "sequential", "--init", str(tmp_path / "g.json")]
    elif where == "setting key":
        argv = ["show", "--quick", str(_stored_run(tmp_path / "r", {**RUN_CONFIG, EVIL: 1}))]
    else:
        argv = ["show", "--top", "1", str(_stored_run(tmp_path / f"r{EVIL}"))]
    main(argv)
    out, err = capsys.readouterr()
    TALLY["cases"] += 1
    TALLY["clean errors" if err else "accepts"] += 1
    assert not any(c in out + err for c in "\x1b\x07"), (out, err)
    assert "\\x1b[2J" in out + err, (out, err)
    assert len([line for line in err.splitlines() if not line.startswith("evoproxy: warning:")]) <= 1, err


# -- token data and the language-model flags (issue 25: language models) ----------------------------

TOKEN_DTYPES = ["int64", "int32", "uint16", "uint8", "float32", "bool"]


def test_token_data_and_group_sizes_are_measured_or_refused_in_one_line(tmp_path, capsys):
    """An .npz of tokens of any dtype, shape and range, any --seq-len and --group-size, through a
    bench build of the tiny language model (vocabulary 256, layer inputs 32 and 64 wide)."""
    import numpy as np

    made = Counter()

    @settings(FUZZ, max_examples=30)
    @given(
        st.sampled_from(TOKEN_DTYPES),
        st.sampled_from(["stream", "windows", "empty", "3-d"]),
        st.integers(0, 6000),
        st.integers(-3, 300),
        st.sampled_from(["4", "16", "32", "0", "-2", "33000"]),
        st.sampled_from(["channel", "16", "32", "48", "0", "-1", "x"]),
    )
    def check(dtype, shape, n, high, seq_len, group):
        made["n"] += 1
        rng = np.random.default_rng(n)
        values = rng.integers(min(0, high), max(high, 1), size=n)
        tokens = {
            "stream": values,
            "windows": values[: n // 10 * 10].reshape(-1, 10),
            "empty": values[:0],
            "3-d": values[: n // 4 * 4].reshape(-1, 2, 2),
        }[shape]
        path = tmp_path / f"t{made['n']}.npz"
        np.savez(path, tokens=tokens.astype(dtype))
        argv = ["bench", "build", "--model", "user_models:tiny_lm", "--data", str(path), "--seq-len", seq_len]
        out = str(tmp_path / f"b{made['n']}.jsonl")
        result = _outcome([*argv, "--group-size", group, "--configs", "2", "--out", out], capsys)
        wrong = (
            dtype in ("float32", "bool")
            or shape in ("empty", "3-d")
            or high > 255  # beyond the model's vocabulary
            or min(0, high) < 0 <= n - 1  # negative ids drawn
            or group in ("0", "-1", "x", "48")
            or int(seq_len) < 1
        )
        if wrong and n > 0:
            _must_refuse(result, (dtype, shape, n, high, seq_len, group))

    check()
