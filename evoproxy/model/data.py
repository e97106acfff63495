"""Image data: Fashion-MNIST from IDX files, and what the package ships so that the embedded
default needs no dataset at all: a 512-image calibration subset of the training split, and the
whole test split (the 10 000 images every shipped model and bench is evaluated on, 4.4 MB as
published, under the dataset's MIT licence).

Nothing here downloads anything: only training needs the training split, and its absence is an
error that names the package to install.
"""

from __future__ import annotations

import gzip
import os
import struct
from importlib import resources
from pathlib import Path

import torch

from ..errors import EvoproxyError

FMNIST_ENV = "EVOPROXY_FMNIST_DIR"
FMNIST_DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
# Mean and standard deviation of the Fashion-MNIST training pixels in [0, 1].
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530
FMNIST_CLASSES = 10
CALIBRATION_ASSET = "calib_fmnist.pt"


def fmnist_dir(override: str | os.PathLike | None = None) -> Path:
    """Where the Fashion-MNIST IDX files are: `override`, else $EVOPROXY_FMNIST_DIR, else the
    folder that Debian's `dataset-fashion-mnist` package installs."""
    return Path(override or os.environ.get(FMNIST_ENV) or FMNIST_DEFAULT_DIR)


def asset_path(name: str) -> Path:
    """A data file shipped in the package (evoproxy/assets/)."""
    return Path(str(resources.files("evoproxy") / "assets" / name))


def _read_idx(path: Path) -> torch.Tensor:
    """Read one IDX file (optionally gzipped) into a uint8 tensor of its stated shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise EvoproxyError(f"{path} is not an unsigned-byte IDX file; reinstall dataset-fashion-mnist")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = torch.frombuffer(bytearray(raw[4 + 4 * ndim :]), dtype=torch.uint8)
    if data.numel() != torch.Size(shape).numel():
        raise EvoproxyError(f"{path} is truncated ({data.numel()} bytes for shape {shape}); reinstall it")
    return data.reshape(shape)


def _find(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    shipped = asset_path(stem + ".gz")
    if shipped.is_file():  # the test split: a folder that holds it is read first, else the shipped copy
        return shipped
    raise EvoproxyError(
        f"Fashion-MNIST file {stem}[.gz] not found in {folder} (only training needs it): install it with "
        f"`apt-get install dataset-fashion-mnist`, point ${FMNIST_ENV} at the IDX files, or train on your own data"
    )


def load_fmnist(split: str = "train", data_dir: str | os.PathLike | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST images as uint8 (N, 1, 28, 28) and labels as int64 (N,).

    `split` is "train" (60 000 images) or "test" (10 000). Each is read from the IDX files in
    `fmnist_dir(data_dir)`; where they are missing, the test split comes from the package."""
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise EvoproxyError(f"unknown Fashion-MNIST split {split!r}: use 'train' or 'test'")
    folder = fmnist_dir(data_dir)
    images = _read_idx(_find(folder, f"{prefix}-images-idx3-ubyte"))
    labels = _read_idx(_find(folder, f"{prefix}-labels-idx1-ubyte"))
    return images.unsqueeze(1), labels.long()


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, 1, 28, 28) to the float32 input the shipped models expect."""
    return (images.float() / 255.0 - FMNIST_MEAN) / FMNIST_STD


def calibration_set() -> tuple[torch.Tensor, torch.Tensor]:
    """The calibration subset shipped inside the package: uint8 images (512, 1, 28, 28) drawn
    from the Fashion-MNIST training split with a fixed seed, and their int64 labels."""
    blob = torch.load(asset_path(CALIBRATION_ASSET), weights_only=True)
    return blob["images"], blob["labels"]
