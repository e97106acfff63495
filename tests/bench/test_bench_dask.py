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
