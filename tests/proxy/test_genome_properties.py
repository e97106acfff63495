"""Property test over 1000 random valid genomes of each shipped space: the exported Python
module, JSON round-trip and sympy expression all agree with the engine."""

import importlib.util
import math
import random

import pytest
import torch
from synthetic_stats import scalar_stats, tiny_conv_stats

from evoproxy.proxy import Genome, load_space, sample_genome, sympy_function

N_VALID = 1000


@pytest.fixture(scope="module")
def stats():
    return tiny_conv_stats()


def _import_fresh(source: str, path) -> object:
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fields(layer, log_scale: float) -> dict[str, float]:
    # The engine reads V at its true scale, V·e^log_scale (see primitives.inputs).
    return {k: float(getattr(layer, k).reshape(-1)[0]) * (math.exp(log_scale) if k == "V" else 1.0) for k in "WGAHV"}


@pytest.mark.slow
@pytest.mark.parametrize("space_name", ["sequential", "branched", "dag"])
def test_export_json_and_sympy_agree_with_engine(space_name, stats, tmp_path):
    space, rng, scalars = load_space(space_name), random.Random(1), scalar_stats()
    scalar_fields = [_fields(layer, scalars.synflow_log_scale) for layer in scalars.layers]
    valid = sympy_checked = 0
    while valid < N_VALID:
        genome = sample_genome(space, rng)
        result = genome.evaluate(stats)
        if not result.valid:
            continue
        valid += 1

        source = genome.to_python()
        imports = {line for line in source.splitlines() if line.startswith(("import ", "from "))}
        standalone = {
            "import torch",
            "from collections.abc import Mapping",
            "from typing import Protocol, runtime_checkable",
        }
        assert imports == standalone
        module = _import_fresh(source, tmp_path / f"proxy_{valid}.py")
        assert torch.allclose(module.sensitivities(stats), result.values, rtol=1e-12, atol=0), genome

        loaded = Genome.from_json(genome.to_json())
        assert loaded == genome and loaded.wl_hash() == genome.wl_hash()
        assert torch.equal(loaded.evaluate(stats).values, result.values)

        # On one-element statistics the genome is a function of numbers, as its sympy form is.
        on_scalars = genome.evaluate(scalars).values
        if on_scalars is None:
            continue
        numeric = sympy_function(genome)
        for fields, value in zip(scalar_fields, on_scalars.tolist()):
            if math.isfinite(value):
                sympy_checked += 1
                # Loose relative tolerance: sympy reorders float operations, and guarded
                # divisions by ε amplify the rounding differences.
                assert math.isclose(numeric(fields), value, rel_tol=1e-6, abs_tol=1e-9), genome
    assert sympy_checked > 3 * N_VALID  # most genomes were also checked against sympy (4 layers each)
