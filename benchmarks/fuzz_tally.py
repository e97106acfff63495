"""The bad-input suites' tally: every call of `evoproxy.cli.main` that the fuzz and damage tests make,
classified by what it returned (a clean error is exit 2, usage included; accepted is exit 0, or a
test stopping the command where its work would start; a traceback is any other exception), per
class of input. The tests themselves assert that each error is one line and that every input that
must be refused is; so with every test passed there is no silent accept, and none hung.

    python benchmarks/fuzz_tally.py
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUITES = [  # the test files the tally runs
    "tests/model/test_data_attacks.py",
    "tests/cli/test_fuzz_inputs.py",
    "tests/quant/test_qat_checkpoint.py",
    "tests/cli/test_runs_cli.py",
    "tests/cli/test_fuzz_flags.py",
]
CLASSES = [  # the first part of a test's id that names its class of input, and the class
    ("test_data_attacks.py", "data sources"),
    ("test_token_data", "data sources"),
    ("test_qat_checkpoint.py", "QAT checkpoints"),
    ("damaged", "damaged runs"),
    ("test_runs_cli.py", "damaged runs"),
    ("bench_files", "bench files"),
    ("names_from_files", "printing"),
    ("genome_files", "genome, search space and bits files"),
    ("search_space_files", "genome, search space and bits files"),
    ("bit_configuration_files", "genome, search space and bits files"),
    ("", "flags"),
]
KINDS = ("clean error", "accepted", "traceback")


class Tally:
    """A pytest plugin that wraps `evoproxy.cli.main` and counts its outcomes per suite."""

    def __init__(self):
        self.counts = defaultdict(lambda: defaultdict(int))
        self.suite, self.failed = None, []

    def pytest_configure(self, config):
        import evoproxy.cli

        real = evoproxy.cli.main

        def main(argv=None):
            counts = self.counts[self.suite]
            counts["cases"] += 1
            try:
                code = real(argv)
            except SystemExit as exc:  # argparse's refusal of a flag: usage and one error line
                counts["clean error" if exc.code == 2 else "traceback"] += 1
                raise
            except BaseException as exc:
                counts["accepted" if type(exc).__name__ == "_Started" else "traceback"] += 1
                raise
            counts["clean error" if code == 2 else "accepted" if code == 0 else "traceback"] += 1
            return code

        evoproxy.cli.main = main

    def pytest_runtest_protocol(self, item, nextitem):
        self.suite = next(cls for key, cls in CLASSES if key in item.nodeid)

    def pytest_runtest_logreport(self, report):
        if report.failed:
            self.failed.append(report.nodeid)


def main() -> None:
    tally = Tally()
    start = time.perf_counter()
    code = pytest.main(["-q", "-p", "no:cacheprovider", "--rootdir", str(ROOT), *SUITES], plugins=[tally])
    print(f"\n{time.perf_counter() - start:.0f} s, {len(tally.failed)} failed tests {tally.failed or ''}")
    print("| class | cases | " + " | ".join(KINDS) + " |")
    print("| --- " * (len(KINDS) + 2) + "|")
    for suite in dict.fromkeys(cls for _, cls in CLASSES):
        c = tally.counts[suite]
        print(f"| {suite} | {c['cases']} | " + " | ".join(str(c[k]) for k in KINDS) + " |")
    total = {k: sum(c[k] for c in tally.counts.values()) for k in ("cases", *KINDS)}
    print(f"| all | {total['cases']} | " + " | ".join(str(total[k]) for k in KINDS) + " |")
    sys.exit(code)


if __name__ == "__main__":
    main()
