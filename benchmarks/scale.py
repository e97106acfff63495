"""The scale table: each command's time and peak memory on models from the shipped ResNet-20 to
ResNet-18 at 224 pixels, ViT-Ti/16 and ViT-B/16 (benchmarks/real_models.py, random weights, random images of
1000 classes), run as a user runs them (`python -m evoproxy.cli ...`, one process per command, a
fresh statistics cache per model). Peak memory is the command process's maximum resident set.

    python benchmarks/scale.py [--models resnet20,resnet18-64,resnet18-224,vit-224,vit-b-64] [--batch-size 16]
                               [--hessian-seconds 120] [--configs 3] [--eval-size 256] [--adaround]
                               [--adaround-iters N]
                               [--commands stats,allocate,quantize,bench]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _real(model: str, images: str) -> list[str]:
    """The flags of a model and an image source of benchmarks/real_models.py."""
    return ["--model", f"benchmarks.real_models:{model}", "--data", f"benchmarks.real_models:{images}"]


# name: (the flags that give its model and data, what it is)
MODELS = {
    "resnet20": ([], "ResNet-20, 0.27 M parameters, 28×28 Fashion-MNIST (shipped)"),
    "resnet18-64": (_real("resnet18", "images_64"), "ResNet-18, 11.7 M parameters, 64×64"),
    "resnet18-224": (_real("resnet18", "images_224"), "ResNet-18, 11.7 M parameters, 224×224"),
    "vit-224": (_real("vit_tiny", "images_224"), "ViT-Ti/16, 5.7 M parameters, 224×224"),
    "vit-b-64": (_real("vit_base_64", "images_64"), "ViT-B/16, 86 M parameters, 64×64"),
}


def run(argv: list[str], env: dict) -> tuple[float, float]:
    """Seconds and peak resident GiB of `python -m evoproxy.cli argv`; its output goes to stderr."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "evoproxy.cli", *argv], cwd=ROOT, env=env, stdout=sys.stderr)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"evoproxy {' '.join(argv)} failed (exit {os.waitstatus_to_exitcode(status)})")
    return seconds, usage.ru_maxrss / 2**20  # kilobytes on Linux


COMMANDS = ("stats", "allocate", "quantize", "bench")  # quantize reads the bits allocate writes


def steps(args, folder: Path) -> list[tuple[str, list[str], list[str]]]:
    """(label, command, its flags but the model's) of each command of `args.commands`, in the order
    they run."""
    stats = ["--batch-size", str(args.batch_size)]
    if args.hessian_seconds:
        stats += ["--hessian-seconds", str(args.hessian_seconds)]
    alloc, evaluate = str(folder / "alloc.json"), ["--eval-size", str(args.eval_size)]
    out = [
        ("stats", ["stats"], stats),
        ("allocate hawq-v2 (cached statistics)", ["allocate"], ["--proxy", "hawq-v2", "--avg-bits", "4", *stats]),
        ("quantize (RTN PTQ)", ["quantize"], ["--bits-file", alloc, *evaluate]),
        (
            f"bench build, {args.configs} configurations",
            ["bench", "build"],
            ["--configs", str(args.configs), *evaluate, "--out", str(folder / "bench.jsonl")],
        ),
    ]
    out[1][2].extend(["--out", alloc])
    out = [step for name, step in zip(COMMANDS, out) if name in args.commands]
    if args.adaround:
        iters = ["--iters", str(args.adaround_iters)] if args.adaround_iters else []
        out.append(
            (
                f"quantize --method adaround{' '.join(['', *iters])}",
                ["quantize"],
                ["--bits-file", alloc, "--method", "adaround", *iters, *evaluate],
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--batch-size", type=int, default=16, help="statistics' batch (default 16)")
    parser.add_argument("--hessian-seconds", type=float, help="the Hessian's time bound (default: none)")
    parser.add_argument("--configs", type=int, default=3, help="bench configurations measured (default 3)")
    parser.add_argument("--eval-size", type=int, default=256, help="test images per measurement (default 256)")
    parser.add_argument("--adaround", action="store_true", help="also time quantize --method adaround")
    parser.add_argument("--adaround-iters", type=int, help="its iterations per block (default: the command's)")
    parser.add_argument(
        "--commands",
        default=",".join(COMMANDS),
        help=f"comma-separated, of {', '.join(COMMANDS)} (default all; quantize and --adaround need allocate)",
    )
    args = parser.parse_args()
    names, args.commands = args.models.split(","), args.commands.split(",")
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}: use {', '.join(MODELS)}")
    if unknown := [c for c in args.commands if c not in COMMANDS]:
        parser.error(f"unknown command {unknown[0]!r}: use {', '.join(COMMANDS)}")
    if ("quantize" in args.commands or args.adaround) and "allocate" not in args.commands:
        parser.error("quantize reads the bits that allocate writes: add allocate to --commands")
    rows = []
    for name in names:
        flags, title = MODELS[name]
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "EVOPROXY_CACHE_DIR": str(Path(tmp) / "cache")}
            for label, command, rest in steps(args, Path(tmp)):
                seconds, gib = run([*command, *flags, *rest], env)
                rows.append((title, label, seconds, gib))
                print(f"{title}: {label}: {seconds:.1f} s, peak {gib:.2f} GiB", file=sys.stderr, flush=True)
    print(f"batch {args.batch_size}, Hessian bound {args.hessian_seconds or 'none'}, {args.eval_size} test images")
    print("| model | command | seconds | peak memory (GiB) |\n| --- | --- | --- | --- |")
    for title, label, seconds, gib in rows:
        print(f"| {title} | {label} | {seconds:.1f} | {gib:.2f} |")


if __name__ == "__main__":
    main()
