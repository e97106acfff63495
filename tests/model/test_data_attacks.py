"""Data sources as an attacker gives them (issue 29), through the command line: every bad input
is exit code 2 and one error line before any model sees the data, never a traceback, a hang or a
silent accept; small valid data runs with the commands' defaults."""

import json
import os
import signal
import struct
import zipfile
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import evoproxy.model.checks
import evoproxy.model.readers
from evoproxy.cli import main

MODEL = ["--model", "synthetic_stats:tiny_fmnist_net"]  # 1 channel in, 10 classes out, any image size
FAST = ["--batch-size", "4", "--hutchinson-samples", "2", "--power-iters", "2"]


def _npz(path, images=None, labels=None):
    rng = np.random.default_rng(0)
    images = rng.random((20, 1, 6, 6), dtype=np.float32) if images is None else images
    np.savez(path, images=images, labels=rng.integers(0, 3, len(images)) if labels is None else labels)
    return str(path)


def _with(value, index=(3, 0, 0, 0), dtype=np.float32):
    images = np.random.default_rng(0).random((20, 1, 6, 6)).astype(dtype)
    images[index] = value
    return images


def _huge_header_npz(path):
    """images.npy declares (10**6, 1, 1000, 1000) float32 (4 TB) but holds a few bytes."""
    with zipfile.ZipFile(path, "w") as zf:
        with zf.open("images.npy", "w") as f:
            np.lib.format.write_array_header_2_0(
                f, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 1, 1000, 1000)}
            )
            f.write(b"\0" * 64)
        with zf.open("labels.npy", "w") as f:
            np.lib.format.write_array(f, np.zeros(10**6, np.int64)[:4])
    return str(path)


def _expanded_pt(path):
    """A .pt of one stored value viewed as 10**12 (a stride-0 view is saved as it is)."""
    torch.save({"images": torch.zeros(1).expand(10**6, 10**6), "labels": torch.zeros(10**6, dtype=torch.long)}, path)
    return str(path)


def _png_header(path, width, height):
    """A PNG whose header declares width × height grey pixels, with almost no data: what a
    decompression bomb looks like before it is decoded."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.parent.mkdir(parents=True, exist_ok=True)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)))


def _folder(root, per_class=(10, 6), size=(8, 8)):
    """train/ and test/ ImageFolders of two classes of grey images: per_class train and test images each."""
    for part, n in zip(("train", "test"), per_class):
        for c in ("a", "b"):
            (root / part / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("L", size, 20 * i + (100 if c == "b" else 0)).save(root / part / c / f"{i}.png")
    return str(root)


def _module(tmp_path, monkeypatch, name, source):
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


# Each case: (name, a function of (tmp_path, monkeypatch) giving the flags after `stats`, a text of the error).
STATS_CASES = [
    ("one NaN image", lambda t, m: ["--data", _npz(t / "d.npz", _with(np.nan))], "image 3 holds nan"),
    ("one infinite image", lambda t, m: ["--data", _npz(t / "d.npz", _with(-np.inf))], "image 3 holds -inf"),
    ("float64 beyond float32", lambda t, m: ["--data", _npz(t / "d.npz", _with(1e300, dtype=np.float64))], "inf"),
    ("values too large", lambda t, m: ["--data", _npz(t / "d.npz", _with(1e9))], "magnitude at most"),
    ("mean nan", lambda t, m: ["--data", _npz(t / "d.npz"), "--mean", "nan"], "--mean must be finite"),
    ("mean inf", lambda t, m: ["--data", _npz(t / "d.npz"), "--mean", "0,inf"], "--mean must be finite"),
    ("std near 0", lambda t, m: ["--data", _npz(t / "d.npz"), "--std", "1e-30"], "--std must be finite numbers"),
    ("std 0", lambda t, m: ["--data", _npz(t / "d.npz"), "--std", "0"], "--std must be finite numbers"),
    ("std inf", lambda t, m: ["--data", _npz(t / "d.npz"), "--std", "inf"], "--std must be finite numbers"),
    ("std nan", lambda t, m: ["--data", _npz(t / "d.npz"), "--std", "nan"], "--std must be finite numbers"),
    ("seed 2**64", lambda t, m: ["--data", _npz(t / "d.npz"), "--data-seed", str(2**64)], "--data-seed must be"),
    ("seed 2**32 - 1", lambda t, m: ["--data", _npz(t / "d.npz"), "--data-seed", str(2**32 - 1)], "--data-seed"),
    ("seed -1", lambda t, m: ["--data", _npz(t / "d.npz"), "--data-seed", "-1"], "--data-seed must be"),
    ("npz header of 4 TB", lambda t, m: ["--data", _huge_header_npz(t / "d.npz")], "more than the"),
    ("pt view of 10**12 values", lambda t, m: ["--data", _expanded_pt(t / "d.pt")], "more than the"),
    ("complex images", lambda t, m: ["--data", _npz(t / "d.npz", _with(0).astype(np.complex64))], "must be numbers"),
    ("string labels", lambda t, m: ["--data", _npz(t / "d.npz", labels=np.array(["x"] * 20))], "must be numbers"),
    ("NaN label", lambda t, m: ["--data", _npz(t / "d.npz", labels=np.full(20, np.nan))], "integer class indices"),
    ("label 1e30", lambda t, m: ["--data", _npz(t / "d.npz", labels=np.full(20, 1e30))], "class indices from 0"),
    (
        "labels beyond the model's classes",
        lambda t, m: ["--data", _npz(t / "d.npz", labels=np.arange(20))],
        "do not fit labels",
    ),
    ("empty images", lambda t, m: ["--data", _npz(t / "d.npz", np.zeros((20, 0), np.float32))], "non-empty"),
    ("image size huge", lambda t, m: ["--data", _folder(t / "f"), "--image-size", str(10**6)], "--image-size must"),
    (
        "400-megapixel PNG",
        lambda t, m: ["--data", (_folder(t / "f"), _png_header(t / "f" / "train" / "a" / "z.png", 20000, 20000))[0]],
        "decompression-bomb limit",
    ),
    (
        "100-megapixel PNG",  # where PIL only warns
        lambda t, m: ["--data", (_folder(t / "f"), _png_header(t / "f" / "test" / "b" / "z.png", 10000, 10000))[0]],
        "decompression-bomb limit",
    ),
    (
        "broken link in a class folder",
        lambda t, m: ["--data", (_folder(t / "f"), os.symlink(t / "gone", t / "f" / "test" / "a" / "z.png"))[0]],
        "is not a regular file",
    ),
    (
        "data function that needs an argument",
        lambda t, m: ["--data", _module(t, m, "needs_arg", "def load(n):\n    return n\n") + ":load"],
        "needs arguments (n)",
    ),
    (
        "data function that raises",
        lambda t, m: ["--data", _module(t, m, "raises", "def load():\n    raise KeyError('k')\n") + ":load"],
        "failed (KeyError",
    ),
]


@pytest.mark.parametrize("name, flags, message", STATS_CASES, ids=[c[0] for c in STATS_CASES])
def test_bad_data_is_one_line_error_before_any_model_sees_it(
    name, flags, message, tmp_path, monkeypatch, one_line_error
):
    monkeypatch.chdir(tmp_path)
    assert main(["stats", *MODEL, *FAST, *flags(tmp_path, monkeypatch)]) == 2
    one_line_error(message)


def test_a_zip_member_declaring_a_huge_size_is_refused_unread(tmp_path, monkeypatch, one_line_error):
    """The bound lowered, so that a small file stands for one that declares gigabytes."""
    monkeypatch.setattr(evoproxy.model.readers, "MAX_MEMBER_BYTES", 1000)
    assert main(["stats", *MODEL, *FAST, "--data", _npz(tmp_path / "d.npz")]) == 2
    one_line_error("member images.npy declares 3,", "more than a data source may hold")


def test_a_fifo_in_a_class_folder_is_refused_without_opening_it(tmp_path, one_line_error):
    _folder(tmp_path / "f")
    os.mkfifo(tmp_path / "f" / "train" / "b" / "pipe.png")

    def hung(*_):
        raise AssertionError("reading the folder blocked on the FIFO")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(30)  # a guard that turns a hang into a failure, not a timing assertion
    try:
        assert main(["stats", *MODEL, *FAST, "--data", str(tmp_path / "f")]) == 2
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    one_line_error("pipe.png is not a regular file")


def test_training_labels_beyond_the_model_are_refused_before_qat(tmp_path, one_line_error):
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "d.npz",
        train_images=rng.random((16, 1, 6, 6), dtype=np.float32),
        train_labels=np.full(16, 12),  # only the train part reaches beyond the 10 outputs
        test_images=rng.random((8, 1, 6, 6), dtype=np.float32),
        test_labels=np.zeros(8, int),
    )
    (tmp_path / "bits.json").write_text(json.dumps({"bits": [4, 4, 4]}))
    argv = ["quantize", *MODEL, "--data", str(tmp_path / "d.npz"), "--bits-file", str(tmp_path / "bits.json")]
    assert main([*argv, "--method", "qat", "--epochs", "1"]) == 2
    one_line_error("do not fit labels up to 12")


def test_small_image_folder_runs_with_the_default_eval_size(tmp_path, capsys):
    """12 test images: quantize, bench build and pareto measure on all of them unless told otherwise."""
    data = ["--data", _folder(tmp_path / "f")]
    (tmp_path / "bits.json").write_text(json.dumps({"bits": [4, 4, 4]}))
    assert main(["quantize", *MODEL, *data, "--bits-file", str(tmp_path / "bits.json")]) == 0
    assert "test accuracy on 12 images" in capsys.readouterr().out
    out = tmp_path / "b.jsonl"
    assert main(["bench", "build", *MODEL, *data, "--configs", "2", "--fixed", "none", "--out", str(out)]) == 0
    assert json.loads(out.read_text().splitlines()[0])["eval"]["first"] == 12
    assert main(["bench", "build", *MODEL, *data, "--configs", "2", "--eval-size", "13", "--out", str(out)]) == 2
    assert "--eval-size must be a whole number between 1 and 12" in capsys.readouterr().err
    pareto = ["pareto", "--proxies", "fisher", *MODEL, *FAST, *data, "--sizes", "0.001", "--evaluate", "ptq", "--json"]
    assert main(pareto) == 0 and json.loads(capsys.readouterr().out)["eval_size"] == 12


def test_values_at_the_bounds_are_accepted_and_prepared(tmp_path):
    from evoproxy.model import DataSettings, open_data
    from evoproxy.model.checks import MAX_MAGNITUDE
    from evoproxy.model.data_settings import MAX_SEED, MIN_STD

    images = _with(MAX_MAGNITUDE, index=(0, 0, 0, 0))
    source = open_data(_npz(tmp_path / "d.npz", images), DataSettings(seed=MAX_SEED, std=(1.0,)))
    assert float(torch.cat([source.training()[0], source.evaluation()[0]]).max()) == MAX_MAGNITUDE
    grey = open_data(_npz(tmp_path / "g.npz", (images * 0).astype(np.uint8)), DataSettings(std=(MIN_STD,)))
    assert float(grey.training()[0].abs().max()) == 0.0


@pytest.mark.parametrize("flags", [["--image-size", "64"], []], ids=["resized folder", "function dataset"])
def test_data_beyond_the_value_bound_is_refused_as_it_is_read(flags, tmp_path, monkeypatch, one_line_error):
    """The bound lowered to 50 000 values: 40 images resized to 64×64 (163 840), or a Dataset of 20
    such images, stand for data of gigabytes."""
    monkeypatch.setattr(evoproxy.model.checks, "MAX_VALUES", 50_000)
    source = "class Big:\n    def __len__(self):\n        return 20\n\n    def __getitem__(self, i):\n"
    source += "        import torch\n        return torch.zeros(1, 64, 64), 0\n\n\ndef load():\n    return Big()\n"
    data = _folder(tmp_path / "f") if flags else _module(tmp_path, monkeypatch, "big_set", source) + ":load"
    assert main(["stats", *MODEL, *FAST, "--data", data, *flags]) == 2
    one_line_error("values, more than the 50,000 a data source may hold")
