import gzip
import struct

import pytest
import torch

from evoproxy.errors import EvoproxyError
from evoproxy.model import calibration_batch, calibration_set, load_fmnist


def _write_idx(path, array, gz):
    header = bytes([0, 0, 0x08, array.dim()]) + struct.pack(f">{array.dim()}I", *array.shape)
    payload = header + array.numpy().tobytes()
    (gzip.open if gz else open)(path, "wb").write(payload)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_are_read_from_an_overridden_folder(tmp_path, monkeypatch, gz):
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    labels = torch.tensor([3, 1, 4, 1, 5], dtype=torch.uint8)
    suffix = ".gz" if gz else ""
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", images, gz)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", labels, gz)
    monkeypatch.setenv("EVOPROXY_FMNIST_DIR", str(tmp_path))
    x, y = load_fmnist("test")
    assert x.shape == (5, 1, 28, 28) and torch.equal(x[:, 0], images)
    assert y.dtype == torch.int64 and y.tolist() == [3, 1, 4, 1, 5]


def test_missing_training_split_names_the_debian_package(tmp_path):
    with pytest.raises(EvoproxyError, match="apt-get install dataset-fashion-mnist"):
        load_fmnist("train", data_dir=tmp_path)


def test_the_test_split_ships_with_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("EVOPROXY_FMNIST_DIR", str(tmp_path))  # empty, as on a fresh machine
    images, labels = load_fmnist("test")
    assert images.shape == (10_000, 1, 28, 28) and images.dtype == torch.uint8
    assert torch.bincount(labels).tolist() == [1000] * 10  # the published test split: 1000 per class
    assert 0.28 < images.float().mean().item() / 255 < 0.29  # its mean pixel, close to the training split's


def test_truncated_idx_file_is_rejected(tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 2, 28, 28) + b"\0" * 10)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 2) + b"\0\0")
    with pytest.raises(EvoproxyError, match="truncated"):
        load_fmnist("test", data_dir=tmp_path)


def test_shipped_calibration_set_needs_no_dataset(monkeypatch, tmp_path):
    monkeypatch.setenv("EVOPROXY_FMNIST_DIR", str(tmp_path))  # empty: the shipped subset must not need it
    images, labels = calibration_set()
    assert images.shape == (512, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (512,) and set(labels.tolist()) <= set(range(10))
    x, y = calibration_batch(16)
    assert x.shape == (16, 1, 28, 28) and x.dtype == torch.float32
    assert abs(x.mean().item()) < 1.0
    with pytest.raises(EvoproxyError, match=r"DataSource\.calibration\.n must be a whole number between 1 and 512"):
        calibration_batch(10_000)
