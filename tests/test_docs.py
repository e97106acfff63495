"""README.md and the manual in docs/ stay true to the repository: every relative link (and anchor)
points to an existing file (and heading), every repository path and `evoproxy.` name they quote
exists, every `--flag` is a flag of the command line or of a benchmarks/ script, the blocks marked
`<!-- runnable -->` run, and docs/api.md lists exactly the public names of `evoproxy._API`."""

from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path

import pytest

import evoproxy
from evoproxy.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = "<!-- runnable -->"
FENCE = re.compile(r"^```[^\n]*\n.*?^```[ \t]*$", re.S | re.M)
# A path into the repository: it starts with one of these top-level folders (runs/ holds users' runs).
REPO_PATH = re.compile(r"(?<![\w./<>-])((?:evoproxy|benchmarks|tests|examples|docs)/[\w./-]*)")
MODULE_NAME = re.compile(r"(?<![\w.-])(evoproxy(?:\.\w+)+)")
FLAG = re.compile(r"(?<![\w-])(--[a-z][\w-]*)")


def _text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def _prose(text: str) -> str:
    """The text without its fenced code blocks."""
    return FENCE.sub("", text)


def _code(text: str) -> list[str]:
    """Inline code spans and fenced code blocks: where a page names paths, modules and flags."""
    return [*re.findall(r"`([^`]+)`", _prose(text)), *FENCE.findall(text)]


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text, lower case, punctuation dropped, spaces as '-'."""
    heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, seen = set(), {}
    for line in _prose(_text(page)).splitlines():
        if match := re.match(r"#{1,6} (.+)", line):
            base = slug(match.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def test_the_pages_exist_and_the_readme_stays_a_front_door():
    names = {page.name for page in PAGES}
    assert {"index.md", "api.md", "results.md", "speed.md", "architecture.md"} <= names
    readme = _text(ROOT / "README.md")
    assert len(readme.splitlines()) <= 300
    assert "](docs/api.md)" in readme and "](docs/index.md)" in readme


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_points_to_an_existing_file_and_heading(page):
    broken = []
    for target in re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", _prose(_text(page))):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file.relative_to(ROOT)}")
        elif anchor and (file.suffix != ".md" or anchor not in anchors(file)):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_repository_path_named_exists(page):
    paths = {m.rstrip(".,;:") for code in _code(_text(page)) for m in REPO_PATH.findall(code)}
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"{page.name} names paths that do not exist: {missing}"


def _resolves(name: str) -> bool:
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_evoproxy_module_or_name_quoted_exists(page):
    names = {m for code in _code(_text(page)) for m in MODULE_NAME.findall(code)}
    missing = sorted(name for name in names if not _resolves(name))
    assert not missing, f"{page.name} names what evoproxy does not have: {missing}"


def _known_flags() -> set[str]:
    # Other tools' flags that the pages use: ruff format's --check (the test command), and the Dask
    # scheduler's and workers' of bench.md's multi-GPU build.
    flags = {"--help", "--version", "--check", "--port", "--nworkers", "--nthreads"}

    def walk(parser: argparse.ArgumentParser) -> None:
        parser.format_help()  # a command may add its flags only when first used
        for action in parser._actions:
            flags.update(option for option in action.option_strings if option.startswith("--"))
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)

    walk(build_parser())
    for script in (ROOT / "benchmarks").glob("*.py"):
        flags.update(re.findall(r"""["'](--[a-z][\w-]*)["']""", script.read_text(encoding="utf-8")))
    return flags


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_flag_named_is_a_flag_of_the_command_line_or_a_benchmark_script(page):
    unknown = sorted(set(FLAG.findall(_text(page))) - _known_flags())
    assert not unknown, f"{page.name} names flags that nothing takes: {unknown}"


def _runnable_blocks() -> list[tuple[str, str]]:
    blocks = []
    for page in PAGES:
        text = _text(page)
        for match in re.finditer(re.escape(RUNNABLE) + r"\n(```[^\n]*)\n(.*?)^```", text, re.S | re.M):
            assert match.group(1) == "```python", f"{page.name}: {RUNNABLE} must come right before a python block"
            line = text[: match.start()].count("\n") + 2
            blocks.append((f"{page.name}:{line}", match.group(2)))
        assert text.count(RUNNABLE) == sum(1 for where, _ in blocks if where.startswith(page.name + ":"))
    return blocks


BLOCKS = _runnable_blocks()


def test_there_are_runnable_blocks():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize(("where", "code"), BLOCKS, ids=[where for where, _ in BLOCKS])
def test_runnable_block_runs(where, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a block that writes a file writes it here
    exec(compile(code, where, "exec"), {"__name__": "__docs__"})


def test_api_page_lists_exactly_the_public_names_by_stage():
    text = _prose(_text(ROOT / "docs" / "api.md"))
    listed: dict[str, list[str]] = {}
    for section in re.split(r"^## ", text, flags=re.M)[1:]:
        heading, _, body = section.partition("\n")
        if match := re.fullmatch(r"`evoproxy\.(\w+)`", heading.strip()):
            listed[match.group(1)] = re.findall(r"^\| `(\w+)` \|", body, re.M)
    assert {stage: sorted(names) for stage, names in listed.items()} == {
        stage: sorted(names) for stage, names in evoproxy._API.items()
    }
