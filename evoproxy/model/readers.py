"""Readers of each kind of data source (a folder of images, an .npz or .pt file, a
`package.module:function`, a torchvision dataset): each gives its (train, test) parts as they are
stored, test None for a single set; splits.py checks, splits and normalises them."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import EvoproxyError, ParameterError
from ..reference import import_callable

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}

Pair = tuple[torch.Tensor, torch.Tensor]


def read_arrays(path: Path) -> tuple[Pair, Pair | None]:
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
                    raise ParameterError(
                        "DataSettings",
                        "image_size",
                        f"given, to resize them all to one size ({f} is {img.size[0]}×{img.size[1]} but the "
                        f"first image is {size[0]}×{size[1]})",
                        image_size,
                    )
                images.append(
                    torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).reshape(size[1], size[0], -1)
                )
        except (UnidentifiedImageError, OSError) as exc:
            raise EvoproxyError(f"cannot read image {f} ({type(exc).__name__})") from None
    return torch.stack(images).permute(0, 3, 1, 2).contiguous(), torch.tensor([label for _, label in files])


def read_image_folders(folder: Path, image_size: int | None) -> tuple[Pair, Pair | None]:
    """(train, test) of a folder with train/ and test/ (or val/) in ImageFolder layout, else
    (the folder, None)."""
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


def read_function(ref: str) -> tuple[Pair, Pair | None]:
    """(train, test) of what `package.module:function` returns; test None for a single set."""
    obj = import_callable(ref, "data")()
    if isinstance(obj, dict):
        if set(obj) != {"train", "test"}:
            raise EvoproxyError(f"{ref} returned a dict with keys {sorted(obj)}: use exactly train and test")
        return _dataset_pair(obj["train"], ref), _dataset_pair(obj["test"], ref)
    return _dataset_pair(obj, ref), None


def read_torchvision(name: str, root: str | None) -> tuple[Pair, Pair | None]:
    """(train, test) of torchvision.datasets.NAME found in `root` (DataSettings' root; nothing
    is downloaded)."""
    try:
        import torchvision.datasets as tvd
    except ImportError:
        raise EvoproxyError("torchvision:NAME needs torchvision: pip install torchvision") from None
    cls = getattr(tvd, name, None)
    if cls is None:
        raise EvoproxyError(f"torchvision.datasets has no {name!r}")
    if not root:
        raise ParameterError(
            "DataSettings",
            "root",
            f"given, the folder that holds the dataset of torchvision:{name} (nothing is downloaded)",
            root,
        )
    tensor = _ToTensor()
    try:
        parts = [cls(root=root, train=train, download=False, transform=tensor) for train in (True, False)]
    except Exception as exc:  # missing files are a RuntimeError, a wrong signature a TypeError
        raise EvoproxyError(
            f"torchvision:{name} could not be opened from {root}: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None
    return _dataset_pair(parts[0], f"torchvision:{name}"), _dataset_pair(parts[1], f"torchvision:{name}")


class _ToTensor:
    """PIL image to a uint8 (C, H, W) tensor, without needing torchvision's transforms."""

    def __call__(self, img):
        t = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).reshape(img.size[1], img.size[0], -1)
        return t.permute(2, 0, 1).contiguous()
