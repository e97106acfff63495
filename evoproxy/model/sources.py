"""Data sources: where a model's calibration, evaluation and training images come from (the
`--data` option of every command that touches data).

  fmnist                   the Fashion-MNIST shipped in the package (the default)
  DIR                      a folder in ImageFolder layout (one sub-folder of images per class), or
                           one with train/ and test/ (or val/) sub-folders each in that layout
  FILE.npz | FILE.pt       arrays `images` (N, C, H, W), (N, H, W, C) (told apart by C ≤ 4 < H) or
                           (N, H, W) uint8, or any (N, ...) float array of non-image inputs, and `labels`
                           (N,); or train_images/train_labels with test_images/test_labels
  package.module:function  returns (images, labels) tensors, a torch Dataset, or a dict of
                           such with keys "train" and "test"
  torchvision:NAME         torchvision.datasets.NAME(root=--data-root, train=..., download=False)

Three explicit, seeded splits: a source with a train and a test part uses them as they are; a
single set is shuffled (seeded) and cut into train (first 80 %) and test (last 20 %). The
calibration pool (BatchNorm re-estimation, activation ranges; its first --batch-size images
feed the statistics) is the first `calib_images` of the shuffled train part, the evaluation
set the first --eval-size of the shuffled test part, and training uses the whole train part.
Images stored as uint8 are scaled to [0, 1]; `mean`/`std` (per channel) normalise them after.
The input shape of the model comes from the data.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import EvoproxyError
from ..hashing import tensors_hash
from ..reference import import_callable
from .data import calibration_set, load_fmnist, normalize

DEFAULT_SPEC = "fmnist"
DEFAULT_CALIB_IMAGES = 512  # the size of the shipped Fashion-MNIST calibration subset
TEST_FRACTION = 0.2  # the test part of a source that is a single set
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}

Pair = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class DataSettings:
    """How a source's images are prepared and split; recorded with every bench made from it."""

    seed: int = 0  # of the shuffles that split and order the data
    calib_images: int = DEFAULT_CALIB_IMAGES
    image_size: int | None = None  # folders: resize every image to this square size
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    root: str | None = None  # torchvision: the dataset's folder

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict) -> DataSettings:
        try:
            return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
        except TypeError:
            raise EvoproxyError(f"unknown data options {sorted(d)}: this file was written by another version") from None


@dataclass
class DataSource:
    """A data source opened by `open_data`: its three splits, loaded lazily and kept once loaded."""

    spec: str
    options: DataSettings
    _calib: Callable[[], Pair]
    _test: Callable[[], Pair]
    _train: Callable[[], Pair]
    _loaded: dict = field(default_factory=dict)

    def _get(self, which: str) -> Pair:
        if which not in self._loaded:
            self._loaded[which] = {"calib": self._calib, "test": self._test, "train": self._train}[which]()
        return self._loaded[which]

    def calibration(self, n: int | None = None) -> Pair:
        """The first `n` images of the calibration pool (all of it if `n` is None) and their labels."""
        images, labels = self._get("calib")
        if n is None:
            return images, labels
        if not 1 <= n <= len(images):
            raise EvoproxyError(
                f"--batch-size must be between 1 and {len(images)} (the calibration images of "
                f"{self.spec}; raise --calib-images for more)"
            )
        return images[:n], labels[:n]

    def evaluation(self, n: int | None = None) -> Pair:
        """The first `n` images of the (shuffled) test part and their labels (all of them if `n` is None)."""
        images, labels = self._get("test")
        if n is None:
            return images, labels
        if not 1 <= n <= len(images):
            raise EvoproxyError(f"--eval-size must be between 1 and {len(images)} (the test images of {self.spec})")
        return images[:n], labels[:n]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample's shape (no batch dimension): what the model is run on."""
        return tuple(self.calibration(1)[0].shape[1:])

    def training(self) -> Pair:
        """The whole train part."""
        return self._get("train")

    def ptq_data(self, eval_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What quantized models are measured with: the calibration pool's images, and the first
        `eval_size` test images with their labels."""
        return (self.calibration()[0], *self.evaluation(eval_size))

    @property
    def is_default(self) -> bool:
        """Whether this is the shipped Fashion-MNIST as the shipped benches use it."""
        return self.spec == DEFAULT_SPEC and self.options == DataSettings()

    def describe(self) -> dict:
        """What a bench records of its data: the source, its options, and a hash of the
        calibration images, so that the bench can refuse other data later (`reopen`)."""
        images, labels = self.calibration()
        return {
            "spec": self.spec,
            "options": self.options.to_dict(),
            "calib_hash": tensors_hash([("images", images), ("labels", labels)]),
        }

    @classmethod
    def reopen(cls, desc: dict | None, where: str, spec: str | None = None) -> DataSource:
        """The source a bench recorded with `describe` (None: the shipped Fashion-MNIST), or
        `spec` with the recorded options in its place; an error unless its calibration images
        are the recorded ones."""
        if desc is None:
            if spec not in (None, DEFAULT_SPEC):
                raise EvoproxyError(f"{where} was made on the shipped Fashion-MNIST: leave out --data")
            return open_data()
        source = open_data(spec or desc["spec"], DataSettings.from_dict(desc["options"]))
        if source.describe()["calib_hash"] != desc["calib_hash"]:
            raise EvoproxyError(
                f"{where} was made on other data than {source.spec} gives now: pass the data it was made with (--data)"
            )
        return source


def _canonical(spec: str) -> str:
    """A path spec made absolute, so that a bench made from it can be reopened from elsewhere."""
    path = Path(spec)
    return str(path.resolve()) if path.exists() else spec


def _as_float(images: torch.Tensor, options: DataSettings, where: str) -> torch.Tensor:
    """uint8 images to [0, 1] floats, then the options' per-channel normalisation."""
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    elif not images.is_floating_point():
        raise EvoproxyError(f"{where}: images must be uint8 or float, got {images.dtype}")
    images = images.float()
    if options.mean is not None or options.std is not None:
        if images.dim() != 4:
            raise EvoproxyError(f"{where}: --mean/--std need (N, C, H, W) images, got shape {tuple(images.shape)}")
        c = images.shape[1]
        mean = torch.tensor(options.mean or (0.0,), dtype=torch.float32)
        std = torch.tensor(options.std or (1.0,), dtype=torch.float32)
        for name, t in (("--mean", mean), ("--std", std)):
            if len(t) not in (1, c):
                raise EvoproxyError(f"{where}: {name} has {len(t)} values for {c} channels")
        if (std <= 0).any():
            raise EvoproxyError("--std values must be positive")
        images = (images - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    return images


def _check_pair(images, labels, where: str) -> Pair:
    """Tensors of a split, in the layout the models take: channels first, int64 labels."""
    images, labels = torch.as_tensor(images), torch.as_tensor(labels)
    if images.dim() < 2 or len(images) == 0:
        raise EvoproxyError(
            f"{where}: images must be a non-empty array shaped (N, ...), got shape {tuple(images.shape)}"
        )
    if labels.dim() != 1 or len(labels) != len(images):
        raise EvoproxyError(
            f"{where}: labels must be shaped ({len(images)},) to match the images, got {tuple(labels.shape)}"
        )
    if labels.dtype == torch.bool or (labels.is_floating_point() and not torch.equal(labels, labels.round())):
        raise EvoproxyError(f"{where}: labels must be integer class indices")
    labels = labels.long()
    if int(labels.min()) < 0:
        raise EvoproxyError(f"{where}: labels must be class indices from 0, found {int(labels.min())}")
    if images.dtype == torch.uint8 and images.dim() == 3:  # (N, H, W) grey images
        images = images.unsqueeze(1)
    elif images.dim() == 4 and images.shape[-1] in (1, 3, 4) and images.shape[1] > 4:
        images = images.permute(0, 3, 1, 2)  # (N, H, W, C) as most image tools store it: C ≤ 4 < H
    return images.contiguous(), labels


def _shuffled(pair: Pair, seed: int) -> Pair:
    order = torch.randperm(len(pair[0]), generator=torch.Generator().manual_seed(seed))
    return pair[0][order], pair[1][order]


def _from_parts(spec: str, options: DataSettings, parts: Callable[[], tuple[Pair, Pair | None]]) -> DataSource:
    """A source from a loader of (train, test) parts (test None for a single set): the
    splitting, shuffling and normalisation of the module docstring."""
    cache: dict = {}

    def split() -> tuple[Pair, Pair]:
        if not cache:
            train, test = parts()
            train = _check_pair(*train, spec)
            if test is None:
                n = len(train[0])
                if n < 2:
                    raise EvoproxyError(f"{spec} holds {n} image(s); at least 2 are needed (train and test)")
                images, labels = _shuffled(train, options.seed)
                cut = n - max(1, round(TEST_FRACTION * n))
                train, test = (images[:cut], labels[:cut]), (images[cut:], labels[cut:])
            else:
                test = _shuffled(_check_pair(*test, spec), options.seed)
            train = _shuffled(train, options.seed + 1)
            cache["train"] = (_as_float(train[0], options, spec), train[1])
            cache["test"] = (_as_float(test[0], options, spec), test[1])
        return cache["train"], cache["test"]

    def calib() -> Pair:
        images, labels = split()[0]
        n = min(options.calib_images, len(images))
        return images[:n], labels[:n]

    return DataSource(spec, options, calib, lambda: split()[1], lambda: split()[0])


def _fmnist(options: DataSettings, data_dir: str | os.PathLike | None) -> DataSource:
    def calib() -> Pair:
        images, labels = calibration_set()
        n = min(options.calib_images, len(images))
        return normalize(images[:n]), labels[:n]

    def split(which: str) -> Callable[[], Pair]:
        def load() -> Pair:
            images, labels = load_fmnist(which, data_dir)
            return normalize(images), labels

        return load

    # The shipped benches are measured on the test split in its published order, so it is not shuffled.
    return DataSource(DEFAULT_SPEC, options, calib, split("test"), split("train"))


def _read_arrays(path: Path) -> tuple[Pair, Pair | None]:
    """(train, test) of an .npz or .pt file; test is None for a single `images`/`labels` set."""
    try:
        if path.suffix == ".npz":
            import numpy as np

            with np.load(path, allow_pickle=False) as blob:
                arrays = {k: torch.from_numpy(blob[k]) for k in blob.files}
        else:
            arrays = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # numpy and torch raise many types for a damaged file
        raise EvoproxyError(
            f"cannot read {path} as {path.suffix} arrays ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'damaged file'})"
        ) from None
    if not isinstance(arrays, dict):
        raise EvoproxyError(f"{path} holds a {type(arrays).__name__}, not arrays named images and labels")
    if "train_images" in arrays or "test_images" in arrays:
        need = ("train_images", "train_labels", "test_images", "test_labels")
        missing = [k for k in need if k not in arrays]
        if missing:
            raise EvoproxyError(f"{path} lacks {', '.join(missing)}: a split file needs {', '.join(need)}")
        return (arrays["train_images"], arrays["train_labels"]), (arrays["test_images"], arrays["test_labels"])
    missing = [k for k in ("images", "labels") if k not in arrays]
    if missing:
        raise EvoproxyError(
            f"{path} lacks {' and '.join(missing)} (it holds {', '.join(arrays) or 'nothing'}): "
            "save arrays named images (N, C, H, W) and labels (N,)"
        )
    return (arrays["images"], arrays["labels"]), None


def _read_image_folder(folder: Path, image_size: int | None) -> Pair:
    """Images of an ImageFolder layout (class = sorted sub-folder index) as uint8 (N, C, H, W)."""
    from PIL import Image, UnidentifiedImageError

    classes = sorted(d for d in folder.iterdir() if d.is_dir())
    files = [
        (f, label)
        for label, d in enumerate(classes)
        for f in sorted(d.rglob("*"))
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        raise EvoproxyError(
            f"{folder} holds no images in class sub-folders (ImageFolder layout: {folder}/<class>/<image>.png)"
        )
    mode, size, images = None, None, []
    for f, _ in files:
        try:
            with Image.open(f) as img:
                mode = mode or ("L" if img.mode in ("L", "1", "I;16", "I", "F") else "RGB")
                img = img.convert(mode)
                if image_size:
                    img = img.resize((image_size, image_size), Image.BILINEAR)
                size = size or img.size
                if img.size != size:
                    raise EvoproxyError(
                        f"{f} is {img.size[0]}×{img.size[1]} but the first image is "
                        f"{size[0]}×{size[1]}: pass --image-size to resize them all"
                    )
                images.append(
                    torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).reshape(size[1], size[0], -1)
                )
        except (UnidentifiedImageError, OSError) as exc:
            raise EvoproxyError(f"cannot read image {f} ({type(exc).__name__})") from None
    return torch.stack(images).permute(0, 3, 1, 2).contiguous(), torch.tensor([label for _, label in files])


def _image_folder(folder: Path, image_size: int | None) -> tuple[Pair, Pair | None]:
    subs = {d.name.lower(): d for d in folder.iterdir() if d.is_dir()}
    test = subs.get("test") or subs.get("val")
    if "train" in subs and test is not None:
        return _read_image_folder(subs["train"], image_size), _read_image_folder(test, image_size)
    return _read_image_folder(folder, image_size), None


def _dataset_pair(obj, where: str) -> Pair:
    """(images, labels) from a pair of tensors/arrays or a map-style Dataset of (image, label)."""
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        return obj[0], obj[1]
    if hasattr(obj, "__getitem__") and hasattr(obj, "__len__"):
        try:
            items = [obj[i] for i in range(len(obj))]
            images = torch.stack([torch.as_tensor(x) for x, _ in items])
            labels = torch.tensor([int(y) for _, y in items])
        except Exception as exc:  # a user's Dataset can raise anything
            raise EvoproxyError(
                f"{where}: reading its items as (image tensor, label) failed "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            ) from None
        return images, labels
    raise EvoproxyError(
        f"{where} gave a {type(obj).__name__}: return (images, labels), a Dataset, or a dict of "
        "them with keys train and test"
    )


def _from_function(ref: str) -> tuple[Pair, Pair | None]:
    obj = import_callable(ref, "data")()
    if isinstance(obj, dict):
        if set(obj) != {"train", "test"}:
            raise EvoproxyError(f"{ref} returned a dict with keys {sorted(obj)}: use exactly train and test")
        return _dataset_pair(obj["train"], ref), _dataset_pair(obj["test"], ref)
    return _dataset_pair(obj, ref), None


def _torchvision(name: str, options: DataSettings) -> tuple[Pair, Pair | None]:
    try:
        import torchvision.datasets as tvd
    except ImportError:
        raise EvoproxyError("torchvision:NAME needs torchvision: pip install torchvision") from None
    cls = getattr(tvd, name, None)
    if cls is None:
        raise EvoproxyError(f"torchvision.datasets has no {name!r}")
    if not options.root:
        raise EvoproxyError(
            f"torchvision:{name} needs --data-root, the folder that holds the dataset (nothing is downloaded)"
        )
    tensor = _ToTensor()
    try:
        parts = [cls(root=options.root, train=train, download=False, transform=tensor) for train in (True, False)]
    except Exception as exc:  # missing files are a RuntimeError, a wrong signature a TypeError
        raise EvoproxyError(
            f"torchvision:{name} could not be opened from {options.root}: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None
    return _dataset_pair(parts[0], f"torchvision:{name}"), _dataset_pair(parts[1], f"torchvision:{name}")


class _ToTensor:
    """PIL image to a uint8 (C, H, W) tensor, without needing torchvision's transforms."""

    def __call__(self, img):
        t = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).reshape(img.size[1], img.size[0], -1)
        return t.permute(2, 0, 1).contiguous()


def open_data(
    spec: str = DEFAULT_SPEC, options: DataSettings = DataSettings(), data_dir: str | os.PathLike | None = None
) -> DataSource:
    """The DataSource of `spec` (see the module docstring). Nothing is read until a split is asked for."""
    if options.calib_images < 1:
        raise EvoproxyError("--calib-images must be at least 1")
    if options.image_size is not None and not 1 <= options.image_size <= 4096:
        raise EvoproxyError("--image-size must be between 1 and 4096 pixels")
    if spec == DEFAULT_SPEC:
        if options.mean is not None or options.std is not None or options.image_size is not None:
            raise EvoproxyError(
                "--mean, --std and --image-size apply to your own data; fmnist is prepared as the shipped models expect"
            )
        return _fmnist(options, data_dir)
    path = Path(spec)
    if path.is_dir():
        return _from_parts(_canonical(spec), options, lambda: _image_folder(path, options.image_size))
    if path.suffix in (".npz", ".pt"):
        if not path.is_file():
            raise EvoproxyError(f"data file {spec} does not exist")
        return _from_parts(_canonical(spec), options, lambda: _read_arrays(path))
    if spec.startswith("torchvision:"):
        name = spec.split(":", 1)[1]
        return _from_parts(spec, options, lambda: _torchvision(name, options))
    if ":" in spec:
        return _from_parts(spec, options, lambda: _from_function(spec))
    raise EvoproxyError(
        f"--data {spec!r} is neither fmnist, a folder, an .npz/.pt file, package.module:function nor torchvision:NAME"
    )


def calibration_batch(batch_size: int = 64) -> Pair:
    """The first `batch_size` shipped Fashion-MNIST calibration images, normalized, with their labels."""
    return open_data().calibration(batch_size)
