"""The model stage. Takes a registry name, or a user's `package.module:function` and weights;
gives the nn.Module, its layer registry (the quantizable layers that key every bit
configuration, statistic and allocation), the calibration and evaluation images, and training."""

from .data import asset_path, calibration_set, fmnist_dir, load_fmnist, normalize
from .data_settings import DataSettings
from .layers import (
    QUANTIZABLE,
    LayerInfo,
    check_device,
    layer_registry,
    quantizable_modules,
    run_with_outputs,
    select_output,
    selected,
)
from .nets import MobileNetV2Small, ResNet20
from .sources import DEFAULT_SPEC, DataSource, calibration_batch, open_data
from .registry import ALIASES, MODELS, ModelSpec, checkpoint_path, load_model, weights_hash
from .train import EVAL_BATCH, accuracy, count_correct, make_calibration_subset, train

__all__ = [
    "ALIASES",
    "DEFAULT_SPEC",
    "EVAL_BATCH",
    "MODELS",
    "QUANTIZABLE",
    "DataSettings",
    "DataSource",
    "LayerInfo",
    "MobileNetV2Small",
    "ModelSpec",
    "ResNet20",
    "accuracy",
    "asset_path",
    "calibration_batch",
    "calibration_set",
    "check_device",
    "checkpoint_path",
    "count_correct",
    "fmnist_dir",
    "layer_registry",
    "load_fmnist",
    "load_model",
    "make_calibration_subset",
    "normalize",
    "open_data",
    "quantizable_modules",
    "run_with_outputs",
    "select_output",
    "selected",
    "train",
    "weights_hash",
]
