"""How a data source's images or tokens are prepared and split (DataSettings), checked by parameter name
and recorded with every bench made from the source."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import EvoproxyError
from ..params import Interval, OneOf, Satisfies, check_parameters

DEFAULT_CALIB_IMAGES = 512  # the size of the shipped Fashion-MNIST calibration subset
MAX_IMAGE_SIZE = 4096  # pixels a side that images may be resized to: a typo should not allocate gigabytes
MIN_STD = 1e-6  # below it, images in [0, 1] would be scaled beyond what float32 statistics survive
MAX_SEQ_LEN = 2**16  # tokens a window: longer ones would not fit any model this tool quantizes
MAX_SEED = 2**32 - 2  # the shuffles seed torch with seed and seed + 1; numpy's seeds stop at 2**32 - 1


@dataclass(frozen=True)
class DataSettings:
    """How a source's images are prepared and split; recorded with every bench made from it."""

    seed: int = 0  # of the shuffles that split and order the data
    calib_images: int = DEFAULT_CALIB_IMAGES
    image_size: int | None = None  # folders: resize every image to this square size
    mean: tuple[float, ...] | None = None  # per channel (or one for all), subtracted from images in [0, 1]
    std: tuple[float, ...] | None = None  # per channel (or one for all), what images are then divided by
    root: str | None = None  # torchvision: the dataset's folder
    seq_len: int = 256  # token streams: the tokens of each window the model reads

    CONSTRAINTS = {
        "seed": Interval(0, MAX_SEED, integer=True),
        "calib_images": Interval(1, None, integer=True),
        "seq_len": Interval(1, MAX_SEQ_LEN, integer=True),
        "image_size": [Interval(1, MAX_IMAGE_SIZE, integer=True), OneOf((None,))],
        "mean": [Satisfies(lambda t: len(t) > 0 and all(map(math.isfinite, t)), "finite numbers"), OneOf((None,))],
        "std": [
            Satisfies(
                lambda t: len(t) > 0 and all(map(Interval(MIN_STD, math.inf, closed="left"), t)),
                f"finite numbers of at least {MIN_STD:g}",
            ),
            OneOf((None,)),
        ],
    }

    def __post_init__(self):
        check_parameters(self)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict) -> DataSettings:
        try:
            return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
        except TypeError:
            raise EvoproxyError(f"unknown data options {sorted(d)}: this file was written by another version") from None
