"""Bench building on a Dask cluster: the same bench file as a local build, entry for entry, even
when a worker dies in the middle of a chunk (Dask measures it again on another worker)."""

from pathlib import Path

import pytest

import user_models
from evoproxy.bench import build_bench, load_bench
from evoproxy.model import layer_registry
from evoproxy.quant import QuantSettings

distributed = pytest.importorskip("dask.distributed")
pytestmark = pytest.mark.slow


def _build(out: Path, model, backend=None):
    x, y = user_models.vectors()
    layers = layer_registry(model, (12,))
    return build_bench(
        out,
        model,
        "mlp",
        layers,
        x[:64],
        x[120:],
        y[120:],
        bit_choices=[2, 4, 8],
        n_configs=12,
        fixed={},
        settings=QuantSettings(act_bits=32),
        backend=backend,
        chunk=3,
        progress=False,
    )


def test_a_dask_build_writes_the_local_build_even_when_a_worker_dies_mid_chunk(tmp_path):
    mlp = user_models.fit(user_models.mlp(), *user_models.vectors())
    model = user_models.DiesInADaskWorker(mlp, str(tmp_path / "died"))
    local = _build(tmp_path / "local.jsonl", model)
    tests = str(Path(user_models.__file__).parent)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, env={"PYTHONPATH": tests}
        ) as cluster,
        distributed.Client(cluster),
    ):
        remote = _build(tmp_path / "remote.jsonl", model, backend="dask")
    assert (tmp_path / "died").exists()  # a worker did die
    assert [(e.bits, e.value) for e in remote.entries] == [(e.bits, e.value) for e in local.entries]
    assert load_bench(str(tmp_path / "remote.jsonl")).entries == load_bench(str(tmp_path / "local.jsonl")).entries


def test_a_dask_build_whose_client_is_killed_continues_where_it_stopped(tmp_path):
    """`evoproxy bench build --backend dask --scheduler ADDRESS`, SIGKILLed once its first chunk is in
    the file, then run again: the file keeps what was written and ends with every configuration once,
    valued as a local build values it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import torch

    from evoproxy.bench import read_bench_file

    tests = Path(user_models.__file__).parent
    torch.save(user_models.mlp().state_dict(), tmp_path / "mlp.pt")  # untrained: the bits change its accuracy
    slow, out = tmp_path / "slow", tmp_path / "b.jsonl"
    env = {**os.environ, "PYTHONPATH": f"{tests.parent}{os.pathsep}{tests}", "SLOW_MLP_FLAG": str(slow)}
    flags = ["--model", "user_models:slow_mlp", "--weights", str(tmp_path / "mlp.pt"), "--data", "user_models:vectors"]
    flags += ["--bits", "2,3,4,5,6,7,8", "--fixed", "none", "--configs", "96", "--out", str(out)]
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, env={"PYTHONPATH": str(tests)}
        ) as cluster,
        distributed.Client(cluster),
    ):
        build = [sys.executable, "-m", "evoproxy.cli", "bench", "build", *flags, "--backend", "dask"]
        build += ["--scheduler", cluster.scheduler_address]
        slow.touch()  # 16 configurations a chunk, about 1.3 s each: the client is killed with chunks to go
        client = subprocess.Popen(build, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while client.poll() is None and not (out.exists() and read_bench_file(out)[1]):
            time.sleep(0.02)
        client.send_signal(signal.SIGKILL)
        assert client.wait() == -signal.SIGKILL, client.stderr.read().decode()
        _, before, length = read_bench_file(out)
        assert 0 < len(before) < 96
        kept = out.read_bytes()[:length]
        slow.unlink()
        again = subprocess.run(build, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert again.returncode == 0, again.stderr
    assert out.read_bytes().startswith(kept)  # continued, not begun again
    local = subprocess.run(
        [sys.executable, "-m", "evoproxy.cli", "bench", "build", *flags[:-1], str(tmp_path / "local.jsonl")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert local.returncode == 0, local.stderr
    entries = load_bench(str(out)).entries
    assert len({e.bits for e in entries}) == len(entries) == 96
    assert sorted((e.bits, e.value) for e in entries) == sorted(
        (e.bits, e.value) for e in load_bench(str(tmp_path / "local.jsonl")).entries
    )
