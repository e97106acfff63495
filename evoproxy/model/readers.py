"""Readers of each kind of data source (a folder of images, an .npz or .pt file, a
`package.module:function`, a torchvision dataset): each gives its (train, test) parts as they are
stored, test None for a single set; splits.py checks, splits and normalises them."""

from __future__ import annotations

import inspect
import warnings
import zipfile
from pathlib import Path

import torch

from ..errors import EvoproxyError, ParameterError, exception_line
from ..reference import import_callable
from .checks import MAX_VALUES, Pair, check_header

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
# A zip member's declared size beyond the largest array (8 bytes a value) and its header is refused unread.
MAX_MEMBER_BYTES = 8 * MAX_VALUES + 2**16


def check_npz_headers(path: Path) -> None:
    """Refuse, before numpy allocates anything, an .npz member whose declared size or whose .npy
    header (shape and dtype) is beyond the bounds of checks.py."""
    import numpy as np

    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            where = f"{path} member {info.filename}"
            if info.file_size > MAX_MEMBER_BYTES:
                raise EvoproxyError(f"{where} declares {info.file_size:,} bytes, more than a data source may hold")
            with zf.open(info) as f:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = read(f)
            check_header(shape, dtype, where)


def read_arrays(path: Path) -> tuple[Pair, Pair | None]:
    """(train, test) of an .npz or .pt file; test is None for a single `images`/`labels` set. Array
    sizes are checked from the file's headers (.npz) or a memory map (.pt) before the data is read."""
    try:
        if path.suffix == ".npz":
            import numpy as np

            check_npz_headers(path)
            with np.load(path, allow_pickle=False) as blob:
                arrays = {k: torch.from_numpy(blob[k]) for k in blob.files}
        else:
            # Mapped, not read, so that shapes are checked first; a legacy (not zip) file cannot be
            # mapped but holds its data uncompressed, no more than its own size.
            arrays = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
            for key, value in arrays.items() if isinstance(arrays, dict) else ():
                if isinstance(value, torch.Tensor):
                    check_header(tuple(value.shape), value.dtype, f"{path} tensor {key}")
    except EvoproxyError:
        raise
    except Exception as exc:  # numpy, zipfile and torch raise many types for a damaged file
        raise EvoproxyError(f"cannot read {path} as {path.suffix} arrays ({exception_line(exc)})") from None
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


def _image_files(folder: Path) -> list[tuple[Path, int]]:
    """The image files of an ImageFolder layout and their class (the sorted sub-folder's index); a
    file with an image's suffix that is not a regular file (a FIFO, a device) is refused unopened."""
    classes = sorted(d for d in folder.iterdir() if d.is_dir())
    files = [
        (f, label)
        for label, d in enumerate(classes)
        for f in sorted(d.rglob("*"))
        if f.suffix.lower() in IMAGE_SUFFIXES and not f.is_dir()
    ]
    special = next((f for f, _ in files if not f.is_file()), None)
    if special is not None:
        raise EvoproxyError(f"{special} is not a regular file (a FIFO, a device or a broken link): remove it")
    if not files:
        raise EvoproxyError(
            f"{folder} holds no images in class sub-folders (ImageFolder layout: {folder}/<class>/<image>.png)"
        )
    return files


def _read_image_folder(folder: Path, image_size: int | None) -> Pair:
    """Images of an ImageFolder layout as uint8 (N, C, H, W); each image's size is checked from its
    header against PIL's decompression-bomb limit before it is decoded, the total against MAX_VALUES."""
    from PIL import Image, UnidentifiedImageError

    files = _image_files(folder)
    mode, size, images, values = None, None, [], 0
    for f, _ in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)  # refused, where PIL only warns
                img = Image.open(f)
            with img:
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
                values += len(img.getbands()) * size[0] * size[1]
                check_header((values,), torch.uint8, f"{folder} up to {f}")
                images.append(
                    torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).reshape(size[1], size[0], -1)
                )
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise EvoproxyError(
                f"{f} has more than the {Image.MAX_IMAGE_PIXELS:,} pixels an image may have (PIL's decompression-bomb "
                "limit): use smaller images"
            ) from None
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
            images, labels, values = [], [], 0
            for i in range(len(obj)):
                x, y = obj[i]
                images.append(torch.as_tensor(x))
                labels.append(int(y))
                values += images[-1].numel()
                check_header((values,), images[-1].dtype, f"{where} up to item {i}")
            images, labels = torch.stack(images), torch.tensor(labels)
        except EvoproxyError:
            raise
        except Exception as exc:  # a user's Dataset can raise anything
            raise EvoproxyError(
                f"{where}: reading its items as (image tensor, label) failed ({exception_line(exc)})"
            ) from None
        return images, labels
    raise EvoproxyError(
        f"{where} gave a {type(obj).__name__}: return (images, labels), a Dataset, or a dict of "
        "them with keys train and test"
    )


def read_function(ref: str) -> tuple[Pair, Pair | None]:
    """(train, test) of what `package.module:function` returns; test None for a single set."""
    function = import_callable(ref, "data")
    try:
        inspect.signature(function).bind()
    except TypeError:
        raise EvoproxyError(
            f"{ref} needs arguments {inspect.signature(function)}: a data function is called with none"
        ) from None
    except ValueError:  # no signature to read (a builtin): calling it tells
        pass
    try:
        obj = function()
    except Exception as exc:  # the user's code can raise anything
        raise EvoproxyError(f"{ref} failed ({exception_line(exc)})") from None
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
        raise EvoproxyError(f"torchvision:{name} could not be opened from {root} ({exception_line(exc)})") from None
    return _dataset_pair(parts[0], f"torchvision:{name}"), _dataset_pair(parts[1], f"torchvision:{name}")


class _ToTensor:
    """PIL image to a uint8 (C, H, W) tensor, without needing torchvision's transforms."""

    def __call__(self, img):
        t = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).reshape(img.size[1], img.size[0], -1)
        return t.permute(2, 0, 1).contiguous()
