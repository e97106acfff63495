"""The public API importable from `evoproxy`, and README's Python example, run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import evoproxy

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_public_name_imports_from_the_package():
    for name in evoproxy.__all__:
        assert getattr(evoproxy, name) is not None, name
    from evoproxy import Genome, allocate
    from evoproxy.allocation import allocate as allocate_in_its_stage
    from evoproxy.proxy.genome import Genome as genome_in_its_module

    assert allocate is allocate_in_its_stage and Genome is genome_in_its_module


def test_an_unknown_name_is_an_attribute_error():
    try:
        evoproxy.no_such_name
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("evoproxy.no_such_name did not raise")


@pytest.mark.slow
def test_the_command_line_loads_no_stage_before_a_command_runs():
    # errors, files (how outputs are written) and version are leaves of the standard library alone
    code = (
        "import sys, evoproxy.cli; evoproxy.cli.build_parser(); "
        "print(sorted(m for m in sys.modules if m.startswith('evoproxy.') and not m.startswith("
        "('evoproxy.cli', 'evoproxy.errors', 'evoproxy.files', 'evoproxy.version'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow  # the Hessian statistics of the shipped model: about 20 s on 2 cores
def test_readme_python_example_runs_and_allocates_within_the_budget(capsys):
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Python API") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    printed = capsys.readouterr().out
    result, stats, proxy = namespace["result"], namespace["stats"], namespace["proxy"]
    assert proxy.formula() in printed
    assert len(result.w_bits) == len(stats.layers) == 22
    assert result.w_bits[0] == result.w_bits[-1] == 8 and set(result.w_bits[1:-1]) <= {2, 3, 4}
    assert result.size_mb <= 0.1 and result.optimal


@pytest.mark.slow
def test_a_users_own_primitives_module_does_not_shadow_the_package(tmp_path):
    for name in ("primitives", "search_spaces"):
        (tmp_path / f"{name}.py").write_text("raise ImportError('the user module was imported')\n")
    code = (
        "from evoproxy.proxy import available_spaces, get_proxy; print(*available_spaces(), get_proxy('fisher').name)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert {"branched", "dag", "sequential", "fisher"} <= set(out.split())
