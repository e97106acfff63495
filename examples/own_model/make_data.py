"""Make the worked example's data and weights: `bars.npz`, 3×16×16 images (stored N, H, W, C as
image tools do) of a bar at one of 8 orientations (the class) on a noisy background of random
colour, in a train and a test part, and `tinynet.pt`, TinyNet trained on the train part for
about a minute on the CPU.

    python make_data.py [--images 3000] [--epochs 4] [--out .]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tinynet import CLASSES, build


def make_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` uint8 images (n, 16, 16, 3) and int64 labels (n,)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    yy, xx = np.mgrid[0:16, 0:16] - 7.5
    images = np.empty((n, 16, 16, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        angle = label * math.pi / CLASSES + rng.normal(0, 0.12)
        offset = rng.normal(0, 1.5)
        distance = np.abs(xx * math.sin(angle) - yy * math.cos(angle) - offset)
        bar = np.clip(1.5 - distance, 0, 1)[..., None] * rng.uniform(0.5, 1.0, 3)
        background = rng.uniform(0, 0.4, 3) + rng.normal(0, 0.25, (16, 16, 3))
        images[i] = (255 * np.clip(background + bar, 0, 1)).astype(np.uint8)
    return images, labels


def train(images: np.ndarray, labels: np.ndarray, epochs: int, seed: int = 0) -> nn.Module:
    """TinyNet trained with Adam on `images` (as floats in [0, 1], channels first: what
    `evoproxy --data bars.npz` gives it)."""
    torch.manual_seed(seed)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    y = torch.from_numpy(labels)
    model = build()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", default=".")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images, labels = make_images(args.images)
    cut = len(images) * 4 // 5
    np.savez_compressed(
        out / "bars.npz",
        train_images=images[:cut],
        train_labels=labels[:cut],
        test_images=images[cut:],
        test_labels=labels[cut:],
    )
    model = train(images[:cut], labels[:cut], args.epochs)
    torch.save(model.state_dict(), out / "tinynet.pt")
    print(f"wrote {out / 'bars.npz'} ({cut} train and {len(images) - cut} test images) and {out / 'tinynet.pt'}")


if __name__ == "__main__":
    main()
