"""Data sources (`--data`): npz/pt files, ImageFolder folders, module:function, torchvision, and
the shipped Fashion-MNIST; their splits, layouts, normalisation and bad input."""

import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from evoproxy.errors import EvoproxyError, ParameterError
from evoproxy.model import DataSettings, DataSource, calibration_set, normalize, open_data


def _arrays(n=50, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 6, 6, 3), dtype=np.uint8), rng.integers(0, 3, n)


def test_npz_single_set_is_cut_into_disjoint_seeded_train_and_test_parts(tmp_path):
    images, labels = _arrays()
    np.savez(tmp_path / "d.npz", images=images, labels=labels)
    source = open_data(str(tmp_path / "d.npz"), DataSettings(calib_images=8))
    train_x, train_y = source.training()
    test_x, test_y = source.evaluation()
    assert (len(train_x), len(test_x)) == (40, 10)
    assert train_x.shape[1:] == (3, 6, 6) and train_x.dtype == torch.float32  # NHWC became NCHW
    assert 0.0 <= float(train_x.min()) and float(train_x.max()) <= 1.0  # uint8 scaled to [0, 1]
    # Every image is in exactly one part, with its own label.
    originals = {tuple(img.flatten()): int(lab) for img, lab in zip(images.transpose(0, 3, 1, 2), labels)}
    seen = [tuple((x * 255).round().to(torch.uint8).flatten().tolist()) for x in torch.cat([train_x, test_x])]
    assert sorted(seen) == sorted(originals)
    assert all(originals[s] == int(y) for s, y in zip(seen, torch.cat([train_y, test_y])))
    # The calibration pool is the start of the train part; the same seed gives the same data.
    assert torch.equal(source.calibration()[0], train_x[:8])
    again = open_data(str(tmp_path / "d.npz"), DataSettings(calib_images=8))
    assert torch.equal(again.evaluation(5)[0], test_x[:5])
    other = open_data(str(tmp_path / "d.npz"), DataSettings(seed=1, calib_images=8))
    assert not torch.equal(other.evaluation()[0], test_x)


def test_npz_with_train_and_test_parts_keeps_them_apart(tmp_path):
    (a, la), (b, lb) = _arrays(30, 0), _arrays(12, 1)
    np.savez(tmp_path / "d.npz", train_images=a, train_labels=la, test_images=b, test_labels=lb)
    source = open_data(str(tmp_path / "d.npz"))
    assert len(source.training()[0]) == 30 and len(source.evaluation()[0]) == 12
    assert len(source.calibration()[0]) == 30  # a pool larger than the train part is all of it
    test_set = {tuple(x.flatten()) for x in b.transpose(0, 3, 1, 2)}
    assert all(tuple((x * 255).round().to(torch.uint8).flatten().tolist()) in test_set for x in source.evaluation()[0])


def test_float_pt_file_is_taken_as_it_is_and_mean_std_normalise(tmp_path):
    x = torch.rand(20, 2, 4, 4)
    torch.save({"images": x, "labels": torch.zeros(20, dtype=torch.long)}, tmp_path / "d.pt")
    raw = open_data(str(tmp_path / "d.pt")).training()[0]
    assert {tuple(r.flatten().tolist()) for r in raw} <= {tuple(r.flatten().tolist()) for r in x}
    normed = open_data(str(tmp_path / "d.pt"), DataSettings(mean=(0.5, 0.25), std=(0.5, 0.25))).training()[0]
    assert torch.allclose(normed[:, 0], (raw[:, 0] - 0.5) / 0.5) and torch.allclose(
        normed[:, 1], (raw[:, 1] - 0.25) / 0.25
    )
    with pytest.raises(EvoproxyError, match=r"DataSettings\.mean must be one value or 2, one per channel"):
        open_data(str(tmp_path / "d.pt"), DataSettings(mean=(0.1, 0.2, 0.3))).training()


def _png(path, colour, size=(5, 5), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)


def test_image_folder_gives_one_class_per_sorted_subfolder(tmp_path):
    for i in range(6):
        _png(tmp_path / "imgs" / "cat" / f"{i}.png", (200, 10, 10))
        _png(tmp_path / "imgs" / "dog" / f"{i}.png", (10, 10, 200))
    source = open_data(str(tmp_path / "imgs"), DataSettings(calib_images=4))
    x, y = (
        torch.cat([source.training()[0], source.evaluation()[0]]),
        torch.cat([source.training()[1], source.evaluation()[1]]),
    )
    assert x.shape == (12, 3, 5, 5) and sorted(y.tolist()) == [0] * 6 + [1] * 6
    red = x[:, 0].mean((1, 2)) > x[:, 2].mean((1, 2))
    assert torch.equal(red, y == 0)  # 'cat' (class 0) images are the red ones


def test_image_folder_train_test_subfolders_grey_images_and_resizing(tmp_path):
    for part, n in (("train", 4), ("val", 2)):
        for c in ("a", "b"):
            for i in range(n):
                _png(tmp_path / "d" / part / c / f"{i}.png", 100 + i, size=(8 + i, 8), mode="L")
    with pytest.raises(EvoproxyError, match=r"DataSettings\.image_size must be given, to resize them all"):
        open_data(str(tmp_path / "d")).training()
    source = open_data(str(tmp_path / "d"), DataSettings(image_size=6))
    assert source.training()[0].shape == (8, 1, 6, 6) and source.evaluation()[0].shape == (4, 1, 6, 6)


def test_function_source_gives_tensors_a_dataset_or_a_dict(tmp_path, monkeypatch):
    module = types.ModuleType("my_data_mod")
    x, y = torch.rand(10, 1, 3, 3), torch.arange(10) % 2
    module.pair = lambda: (x, y)
    module.dataset = lambda: torch.utils.data.TensorDataset(x, y)
    module.splits = lambda: {"train": (x[:6], y[:6]), "test": torch.utils.data.TensorDataset(x[6:], y[6:])}
    module.bad = lambda: 42
    monkeypatch.setitem(sys.modules, "my_data_mod", module)
    a, b = open_data("my_data_mod:pair"), open_data("my_data_mod:dataset")
    assert torch.equal(a.training()[0], b.training()[0]) and torch.equal(a.evaluation()[1], b.evaluation()[1])
    c = open_data("my_data_mod:splits")
    assert len(c.training()[0]) == 6 and len(c.evaluation()[0]) == 4
    with pytest.raises(EvoproxyError, match="gave a int"):
        open_data("my_data_mod:bad").training()


def test_torchvision_dataset_is_read_without_download(tmp_path, monkeypatch):
    calls = []

    class FakeSet:
        def __init__(self, root, train, download, transform):
            calls.append((root, train, download))
            self.n, self.transform = (8 if train else 4), transform

        def __len__(self):
            return self.n

        def __getitem__(self, i):
            return self.transform(Image.new("L", (4, 4), 10 * i)), i % 2

    datasets = types.ModuleType("torchvision.datasets")
    datasets.FakeSet = FakeSet
    tv = types.ModuleType("torchvision")
    tv.datasets = datasets
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", datasets)
    with pytest.raises(EvoproxyError, match=r"DataSettings\.root must be given, the folder"):
        open_data("torchvision:FakeSet").training()
    source = open_data("torchvision:FakeSet", DataSettings(root=str(tmp_path)))
    assert source.training()[0].shape == (8, 1, 4, 4) and len(source.evaluation()[0]) == 4
    assert calls == [(str(tmp_path), True, False), (str(tmp_path), False, False)]


def test_fmnist_source_is_the_shipped_calibration_subset_and_test_split():
    source = open_data()
    images, labels = calibration_set()
    assert torch.equal(source.calibration(16)[0], normalize(images[:16])) and torch.equal(
        source.calibration(16)[1], labels[:16]
    )
    assert source.evaluation(100)[0].shape == (100, 1, 28, 28) and source.is_default
    with pytest.raises(EvoproxyError, match=r"DataSource\.evaluation\.n must be a whole number between 1 and 10000"):
        source.evaluation(10_001)


@pytest.mark.parametrize(
    "content, message",
    [
        ({"images": np.zeros((4, 2, 2), np.uint8)}, "lacks labels"),
        ({"images": np.zeros((4, 2, 2), np.uint8), "labels": np.array([0, 1, -1, 0])}, "class indices from 0"),
        ({"images": np.zeros((4, 2, 2), np.uint8), "labels": np.array([0, 1])}, r"labels must be shaped \(4,\)"),
        ({"images": np.zeros((4, 2, 2), np.uint8), "labels": np.array([0.5, 1, 1, 0])}, "integer class indices"),
        ({"train_images": np.zeros((4, 2, 2), np.uint8), "train_labels": np.zeros(4, int)}, "lacks test_images"),
        ({"images": np.zeros((1, 2, 2), np.uint8), "labels": np.zeros(1, int)}, "at least 2 are needed"),
    ],
)
def test_bad_arrays_are_one_line_errors(tmp_path, content, message):
    np.savez(tmp_path / "bad.npz", **content)
    with pytest.raises(EvoproxyError, match=message) as info:
        open_data(str(tmp_path / "bad.npz")).training()
    assert "\n" not in str(info.value)


def test_bad_specs_and_files_are_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    cases = [
        (str(tmp_path / "empty"), "holds no images"),
        (str(tmp_path / "missing.npz"), "does not exist"),
        (str(tmp_path / "junk.npz"), "cannot read"),
        ("nonsense", r"open_data\.spec must be fmnist, kjv, a folder"),
        ("torchvision:FakeSet", "needs torchvision"),
    ]
    for spec, message in cases:
        with pytest.raises(EvoproxyError, match=message):
            open_data(spec).training()
    with pytest.raises(EvoproxyError, match="apply to your own data"):
        open_data("fmnist", DataSettings(image_size=32))


def test_reopen_refuses_data_other_than_the_recorded(tmp_path):
    images, labels = _arrays()
    np.savez(tmp_path / "d.npz", images=images, labels=labels)
    desc = open_data(str(tmp_path / "d.npz")).describe()
    assert torch.equal(
        DataSource.reopen(desc, "bench b").calibration()[0], open_data(str(tmp_path / "d.npz")).calibration()[0]
    )
    np.savez(tmp_path / "d.npz", images=images[::-1].copy(), labels=labels[::-1].copy())
    with pytest.raises(EvoproxyError, match="bench b was made on other data"):
        DataSource.reopen(desc, "bench b")
    with pytest.raises(EvoproxyError, match="made on the shipped Fashion-MNIST"):
        DataSource.reopen(None, "bench b", str(tmp_path / "d.npz"))


@pytest.mark.parametrize(
    "bad",
    [{"calib_images": 0}, {"image_size": 5000}, {"mean": (float("nan"),)}, {"std": (0.5, 0.0)}, {"seed": 1.5}],
)
def test_data_settings_out_of_range_name_the_parameter(bad):
    with pytest.raises(ParameterError) as info:
        DataSettings(**bad)
    [(param, value)] = bad.items()
    assert (info.value.owner, info.value.param, info.value.value) == ("DataSettings", param, value)


def test_a_batch_beyond_the_calibration_pool_names_the_method_and_its_count():
    with pytest.raises(
        ParameterError, match=r"n must be a whole number between 1 and 512 \(the calibration images of fmnist"
    ) as info:
        open_data().calibration(513)
    assert (info.value.owner, info.value.param) == ("DataSource.calibration", "n")
