"""Common architectures through every step a user takes: torchvision's classifiers (random
weights, 10 classes, random 64×64 images) through `stats`, `allocate --proxy hawq-v2`, `quantize`
and `export`, one line per model and step: its exit code, whether a traceback was printed (none
may be), its seconds, and what it printed last (export: how near onnxruntime's outputs came to
PyTorch's), or its one-line error. torchvision is not a dependency of the product; any recent one
serves: its classifiers are plain Python, and its C operators (detection's) are not needed, so a
torchvision built for another torch, whose operators do not load, is imported without them
(pip install --no-deps --target DIR torchvision; PYTHONPATH=DIR).

Usage: python benchmarks/architectures.py [NAME ...]   (default: the list below)
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import time
import traceback
import types

import torch

ARCHITECTURES = [
    "mobilenet_v3_small",
    "efficientnet_b0",
    "regnet_y_400mf",
    "convnext_tiny",
    "densenet121",
    "shufflenet_v2_x0_5",
    "squeezenet1_0",
    "mnasnet0_5",
    "googlenet",
    "vit_b_16",
    "swin_t",
    "resnext50_32x4d",
]
ARCH_ENV = "EVOPROXY_ARCHITECTURE"


def model():
    """The architecture $EVOPROXY_ARCHITECTURE names, for `--model architectures:model`."""
    # Registers fake kernels for torchvision's C operators, which fails where they did not load
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    import torchvision.models

    torch.manual_seed(0)
    name = os.environ[ARCH_ENV]
    extra = {"image_size": 64} if name.startswith("vit") else {"aux_logits": False} if name == "googlenet" else {}
    return torchvision.models.get_model(name, num_classes=10, **extra)


def images(n: int = 96, seed: int = 0):
    """Random 64×64 RGB images and labels of 10 classes, for `--data architectures:images`."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 64, 64, generator=g), torch.randint(0, 10, (n,), generator=g)


def _run(argv: list[str]) -> tuple[int, bool, str]:
    """Exit code, whether a traceback came out, and what the step said last: having run, stdout's last
    line from its second clause on (export's: how near onnxruntime's outputs came), else stderr's last."""
    from evoproxy.cli import main

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except BaseException:  # noqa: BLE001 — what the user would see as a traceback
            traceback.print_exc()
            code = 1
    text, printed = err.getvalue(), out.getvalue().strip().splitlines()
    if code == 0 and printed:
        return code, "Traceback" in text, printed[-1].split("; ", 1)[-1]
    lines = [l for l in text.splitlines() if l.strip() and not l.startswith(("[", " "))]
    said = [l for l in lines if ": error: " in l] or [l for l in lines if "runs with the weights" not in l]
    return code, "Traceback" in text, said[-1] if said else ""


def main() -> None:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    fast = ["--batch-size", "8", "--hutchinson-samples", "2", "--power-iters", "2"]
    source = ["--model", "architectures:model", "--data", "architectures:images"]
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("EVOPROXY_CACHE_DIR", os.path.join(tmp, "cache"))
        bits, onnx = os.path.join(tmp, "bits.json"), os.path.join(tmp, "m.onnx")
        steps = {
            "stats": ["stats", *source, *fast],
            "allocate": ["allocate", *source, *fast, "--proxy", "hawq-v2", "--avg-bits", "4", "--out", bits],
            "quantize": ["quantize", *source, "--bits-file", bits, "--eval-size", "16"],
            "export": ["export", *source, "--bits-file", bits, "--onnx", onnx, "--eval-size", "8"],
        }
        for name in sys.argv[1:] or ARCHITECTURES:
            os.environ[ARCH_ENV] = name
            for step, argv in steps.items():
                start = time.perf_counter()
                code, crashed, last = _run(argv)
                print(
                    f"{name:<20} {step:<9} exit {code}  traceback {'YES' if crashed else 'no '}  "
                    f"{time.perf_counter() - start:6.1f} s  {last[:200]}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
