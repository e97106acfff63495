"""Data sources: where a model's calibration, evaluation and training images come from (what
`open_data`'s `spec` names).

  fmnist                   the Fashion-MNIST shipped in the package (the default)
  DIR                      a folder in ImageFolder layout (one sub-folder of images per class), or
                           one with train/ and test/ (or val/) sub-folders each in that layout
  FILE.npz | FILE.pt       arrays `images` (N, C, H, W), (N, H, W, C) (told apart by C ≤ 4 < H) or
                           (N, H, W) uint8, or any (N, ...) float array of non-image inputs, and `labels`
                           (N,); or train_images/train_labels with test_images/test_labels
  package.module:function  returns (images, labels) tensors, a torch Dataset, or a dict of
                           such with keys "train" and "test"
  torchvision:NAME         torchvision.datasets.NAME(root=root, train=..., download=False)
  kjv                      the text shipped for the language model (tokens.py)
  FILE.txt | FILE.npz      token data: a text file's bytes, or an .npz holding `tokens` (tokens.py)
  distilled[:N]            N images distilled from a model's BatchNorm statistics (distill.py) to
                           calibrate on; other, real data's test part to evaluate on (DistilledSource)

Three explicit, seeded splits: a source with a train and a test part uses them as they are; a
single set is shuffled (seeded) and cut into train (first 80 %) and test (last 20 %). The
calibration pool (BatchNorm re-estimation, activation ranges; its first images feed the
statistics) is the first `calib_images` of the shuffled train part, the evaluation set the first
images of the shuffled test part, and training uses the whole train part.
Images stored as uint8 are scaled to [0, 1]; `mean`/`std` (per channel) normalise them after.
Every source but the shipped one is checked before any model sees it (checks.py): array sizes from
file headers before reading, finite values, labels that are class indices. The input shape of the
model comes from the data.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import EvoproxyError, ParameterError
from ..hashing import tensors_hash
from ..params import Interval
from .data import FMNIST_CLASSES, calibration_set, load_fmnist, normalize
from .data_settings import DataSettings
from .distill import MAX_IMAGES, DistillSettings, check_distillable, distill_images, distilled_labels
from .layers import evaluating
from .readers import Pair, read_arrays, read_function, read_image_folders, read_torchvision
from .metrics import Metric, count_correct, metric_of
from .splits import split_parts
from .tokens import SHIPPED_TEXT, TEXT_SUFFIXES, has_tokens, read_text, read_token_arrays, shipped_text, token_splits

DEFAULT_SPEC = "fmnist"
DISTILLED = "distilled"
DEFAULT_DISTILLED = 256  # on the shipped ResNet-20, PTQ calibrated on 256 real images is as good as on 512


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

    def _first(self, which: str, n: int | None, method: str, what: str) -> Pair:
        """The first `n` images of split `which` and their labels (all of them if `n` is None); `n`
        out of range is an error of `method`'s `n`, which counts `what`."""
        images, labels = self._get(which)
        if n is None:
            return images, labels
        count = Interval(1, len(images), integer=True)
        if not count(n):
            raise ParameterError(f"DataSource.{method}", "n", f"{count} (the {what} of {self.spec})", n)
        return images[:n], labels[:n]

    def calibration(self, n: int | None = None) -> Pair:
        """The first `n` images of the calibration pool (all of it if `n` is None) and their labels."""
        return self._first("calib", n, "calibration", "calibration images")

    def evaluation(self, n: int | None = None, most: int | None = None) -> Pair:
        """The first `n` images of the (shuffled) test part and their labels; if `n` is None, all of
        them, or the first `most` where there are more (a command's default that small data must not fail)."""
        if n is None and most is not None:
            n = min(most, len(self._get("test")[0]))
        return self._first("test", n, "evaluation", "test images")

    def _example(self) -> Pair:
        """One input and its label: what the input shape and type and the metric are read from."""
        return self.calibration(1)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample's shape (no batch dimension): what the model is run on."""
        return tuple(self._example()[0].shape[1:])

    @property
    def input_dtype(self) -> torch.dtype:
        """What the model is run on: float images, or int64 token ids."""
        return self._example()[0].dtype

    def training(self) -> Pair:
        """The whole train part."""
        return self._get("train")

    def ptq_data(
        self, eval_size: int | None = None, most: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What quantized models are measured with: the calibration pool's images, and the first
        `eval_size` test images with their labels (None: all, up to `most`; see `evaluation`)."""
        return (self.calibration()[0], *self.evaluation(eval_size, most))

    @property
    def metric(self) -> Metric:
        """What a model is measured in on this data: perplexity for token windows, else top-1 accuracy."""
        return metric_of(self._example()[1])

    @property
    def is_text(self) -> bool:
        """Whether this is token data (next-token targets) for a language model."""
        return self.metric.name == "perplexity"

    @property
    def classes(self) -> int:
        """How many classes the labels index (token data: ids its tokens use): one more than the
        largest label (or token id) of the train and test parts."""
        if self.spec == DEFAULT_SPEC:  # the shipped labels; the train split may not be installed
            return FMNIST_CLASSES
        parts = [self._get(which) for which in ("train", "test")]
        return 1 + max(int(t.max()) for pair in parts for t in (pair if self.is_text else pair[1:]))

    def check_classes(self, model: nn.Module) -> None:
        """Refuse this data where its labels (token ids) reach beyond the classes (vocabulary) of
        `model` (whose layer registry has been taken, so it runs on these inputs), seen in the scores
        it gives one calibration input: training on such labels would fail only after the slow work."""
        param = next(model.parameters(), None)
        images, labels = self.calibration(1)
        if self.is_text:  # ids beyond the vocabulary would fail inside the embedding: probe with zeros
            images, labels = torch.zeros_like(images), torch.zeros_like(labels)
        with evaluating(model), torch.no_grad():  # one image: BatchNorm must not take its batch statistics
            out = model(images if param is None else images.to(param.device))
        if not isinstance(out, torch.Tensor):  # the statistics word what the model returns
            return
        if not self.is_text:
            count_correct(out, labels.to(out.device), self.classes - 1)
        elif out.dim() != 3 or out.shape[:2] != images.shape:
            raise EvoproxyError(
                f"the model gives outputs of shape {tuple(out.shape)} for tokens of shape {tuple(images.shape)}: "
                "a language model with (batch, T, vocabulary) logits is needed"
            )
        elif self.classes > out.shape[-1]:
            raise EvoproxyError(
                f"{self.spec} holds token ids up to {self.classes - 1}, beyond the model's vocabulary of "
                f"{out.shape[-1]}: tokenize the data with the model's tokenizer"
            )

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
    def reopen(cls, desc: dict | None, where: str, spec: str | None = None, model=None, cache=None) -> DataSource:
        """The source a bench recorded with `describe` (None: the shipped Fashion-MNIST), or
        `spec` with the recorded options in its place; an error unless its calibration images
        are the recorded ones. Distilled images are distilled again from `model` (cache folder `cache`)."""
        if desc is None:
            if spec not in (None, DEFAULT_SPEC):
                raise ParameterError(
                    "DataSource.reopen", "spec", f"left out: {where} was made on the shipped Fashion-MNIST", spec
                )
            return open_data()
        more = {}
        if "evaluate_on" in desc:  # distilled images: distilled again from the model, as they were
            more = {"model": model, "evaluate_on": cls.reopen(desc["evaluate_on"], where), "cache": cache}
            more["distill"] = DistillSettings.from_dict(desc["distill"])
        source = open_data(spec or desc["spec"], DataSettings.from_dict(desc["options"]), **more)
        if source.describe()["calib_hash"] != desc["calib_hash"]:
            raise ParameterError(
                "DataSource.reopen",
                "spec",
                f"the recorded data: {where} was made on other data than {source.spec} gives now",
                spec,
            )
        return source


@dataclass
class DistilledSource(DataSource):
    """`distilled[:N]`: images distilled from a model's BatchNorm statistics (distill.py) are the
    calibration pool, labelled with the model's own predictions; the test part of `evaluate_on`, real
    data, measures accuracy, and gives the input shape; there is no train part (training is refused)."""

    evaluate_on: DataSource | None = None
    distill: DistillSettings = DistillSettings()

    def _example(self) -> Pair:
        return self.evaluate_on.calibration(1)  # not the distilled images: reading the shape distils nothing

    @property
    def classes(self) -> int:
        return self.evaluate_on.classes

    def check_classes(self, model: nn.Module) -> None:
        self.evaluate_on.check_classes(model)  # the distilled labels are the model's own outputs

    def describe(self) -> dict:
        return {**super().describe(), "distill": asdict(self.distill), "evaluate_on": self.evaluate_on.describe()}


def _distilled(
    spec: str, options: DataSettings, model: nn.Module | None, evaluate_on: DataSource | None, settings, cache, log
) -> DistilledSource:
    count = spec.partition(":")[2]
    if count and not (count.isdigit() and 1 <= int(count) <= MAX_IMAGES):
        raise ParameterError("open_data", "spec", f"distilled or distilled:N with N from 1 to {MAX_IMAGES}", spec)
    if model is None or evaluate_on is None:
        raise EvoproxyError("distilled images need a model to distil them from, and real data to evaluate_on")
    if evaluate_on.is_text:
        raise EvoproxyError(
            f"distilled images are for image models, not a language model ({evaluate_on.spec} holds tokens): "
            "calibrate on real text"
        )
    check_distillable(model)
    n = int(count or DEFAULT_DISTILLED)

    def calib() -> Pair:
        images = distill_images(model, evaluate_on.input_shape, n, options.seed, settings, cache, log)
        return images, distilled_labels(model, images)

    def train() -> Pair:
        raise ParameterError("open_data", "spec", "real data with a train part (distilled images only calibrate)", spec)

    name = f"{DISTILLED}:{n}"
    return DistilledSource(
        name, options, calib, evaluate_on.evaluation, train, evaluate_on=evaluate_on, distill=settings
    )


def _canonical(spec: str) -> str:
    """A path spec made absolute, so that a bench made from it can be reopened from elsewhere."""
    path = Path(spec)
    return str(path.resolve()) if path.exists() else spec


def _from_parts(spec: str, options: DataSettings, parts: Callable[[], tuple[Pair, Pair | None]]) -> DataSource:
    """A source from a reader of its (train, test) parts (test None for a single set), split as
    the module docstring says (splits.py)."""
    return DataSource(spec, options, *split_parts(spec, options, parts))


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


def open_data(
    spec: str = DEFAULT_SPEC,
    options: DataSettings = DataSettings(),
    data_dir: str | os.PathLike | None = None,
    *,
    model: nn.Module | None = None,
    evaluate_on: DataSource | None = None,
    distill: DistillSettings | None = None,
    cache: str | os.PathLike | None = None,
    log: Callable[[str], None] = lambda msg: None,
) -> DataSource:
    """The DataSource of `spec` (see the module docstring). Nothing is read until a split is asked for.
    `distilled[:N]` takes the `model` to distil from (on its device), `evaluate_on`, the real data
    whose test part measures accuracy, and `distill_images`'s `distill` settings (None: the defaults),
    `cache` folder and `log`; its seed is `options.seed`."""
    if spec == DISTILLED or spec.startswith(DISTILLED + ":"):
        return _distilled(spec, options, model, evaluate_on, distill or DistillSettings(), cache, log)
    if evaluate_on is not None:
        raise ParameterError("open_data", "evaluate_on", f"left out: {spec} has test images of its own", "given")
    if spec == DEFAULT_SPEC:
        if options.mean is not None or options.std is not None or options.image_size is not None:
            raise EvoproxyError(
                "mean, std and image_size apply to your own data; fmnist is prepared as the shipped models expect"
            )
        return _fmnist(options, data_dir)
    if spec == SHIPPED_TEXT:
        return DataSource(spec, options, *token_splits(options, lambda: shipped_text(options.seq_len)))
    path = Path(spec)
    if path.suffix in TEXT_SUFFIXES and path.is_file():
        return DataSource(_canonical(spec), options, *token_splits(options, lambda: read_text(path, options.seq_len)))
    if path.suffix == ".npz" and path.is_file() and has_tokens(path):
        return DataSource(
            _canonical(spec), options, *token_splits(options, lambda: read_token_arrays(path, options.seq_len))
        )
    if path.is_dir():
        return _from_parts(_canonical(spec), options, lambda: read_image_folders(path, options.image_size))
    if path.suffix in (".npz", ".pt"):
        if not path.is_file():
            raise EvoproxyError(f"data file {spec} does not exist")
        return _from_parts(_canonical(spec), options, lambda: read_arrays(path))
    if spec.startswith("torchvision:"):
        name = spec.split(":", 1)[1]
        return _from_parts(spec, options, lambda: read_torchvision(name, options.root))
    if ":" in spec:
        return _from_parts(spec, options, lambda: read_function(spec))
    raise ParameterError(
        "open_data",
        "spec",
        "fmnist, kjv, a folder, an .npz/.pt file, a .txt file, package.module:function, torchvision:NAME or "
        "distilled[:N]",
        spec,
    )


def calibration_batch(batch_size: int = 64) -> Pair:
    """The first `batch_size` shipped Fashion-MNIST calibration images, normalized, with their labels."""
    return open_data().calibration(batch_size)
