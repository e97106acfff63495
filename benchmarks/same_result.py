"""Does README's main command give the same result on this machine as on another? Runs
`evoproxy evolve` (seed 0 unless more flags are given) from an empty statistics cache and writes
what it found as text to diff against the same file from another machine:

- per shipped model and statistic, the SHA-256 of the tensor's bytes (equal only if bit for bit
  equal) and its sum, so a difference shows where it starts and how large it is;
- the run's report.json without its timings (formula, hall of fame, every ρ and interval).

    python benchmarks/same_result.py --out here.txt [evolve flags]   # on each machine, then:
    diff here.txt there.txt
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

from evoproxy.cli import main as evoproxy_main
from evoproxy.files import CACHE_ENV


def walk(value, path: str, lines: list[str]) -> None:
    """One line per tensor (hash and sum) or number under `value`, timings left out."""
    if isinstance(value, torch.Tensor):
        t = value.detach().contiguous().cpu()
        lines.append(f"{path} {hashlib.sha256(t.numpy().tobytes()).hexdigest()[:16]} {t.double().sum().item():.17g}")
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            if key != "timings" and not str(key).startswith("seconds"):
                walk(value[key], f"{path}.{key}", lines)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            walk(item, f"{path}[{i}]", lines)
    else:
        lines.append(f"{path} {value!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="text file written")
    args, evolve_flags = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ[CACHE_ENV] = str(Path(tmp) / "cache")
        if evoproxy_main(["evolve", "--runs-dir", str(Path(tmp) / "runs"), *evolve_flags]) != 0:
            raise SystemExit("evoproxy evolve failed")
        lines: list[str] = []
        for path in sorted((Path(tmp) / "cache").glob("stats-*.pt")):
            blob = torch.load(path, weights_only=True)
            walk(blob, blob["model"], lines)
        lines.sort()
        (report,) = (Path(tmp) / "runs").glob("*/report.json")
        walk(json.loads(report.read_text()), "report", lines)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"{len(lines)} lines written to {args.out}; diff it against the same file from another machine")


if __name__ == "__main__":
    main()
