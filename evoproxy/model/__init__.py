"""The model stage. Takes a registry name, or a user's `package.module:function` and weights;
gives the nn.Module, its layer registry (the quantizable layers that key every bit
configuration, statistic and allocation), the calibration and evaluation images, and training."""

from .attention import split_attention
from .data import asset_path, calibration_set, fmnist_dir, load_fmnist, normalize
from .data_settings import DataSettings
from .distill import DistillSettings, distill_images
from .layers import (
    QUANTIZABLE,
    LayerInfo,
    check_device,
    evaluating,
    layer_registry,
    normalized_outputs,
    quantizable_modules,
    run_with_outputs,
    select_output,
    selected,
)
from .lm import TinyLM
from .metrics import (
    EVAL_BATCH,
    METRICS,
    Metric,
    accuracy,
    count_correct,
    metric_of,
    next_token_loss,
    paced_batches,
    perplexity,
)
from .nets import MobileNetV2Small, ResNet20
from .sources import DEFAULT_SPEC, DISTILLED, DataSource, DistilledSource, calibration_batch, open_data
from .registry import (
    ALIASES,
    MODELS,
    ModelSpec,
    behaviour_hash,
    checkpoint_path,
    default_data,
    hf_state_dict,
    load_model,
    weights_hash,
)
from .train import make_calibration_subset, train, train_language_model

__all__ = [
    "ALIASES",
    "DEFAULT_SPEC",
    "DISTILLED",
    "EVAL_BATCH",
    "METRICS",
    "MODELS",
    "QUANTIZABLE",
    "DataSettings",
    "DataSource",
    "DistillSettings",
    "DistilledSource",
    "LayerInfo",
    "Metric",
    "MobileNetV2Small",
    "ModelSpec",
    "ResNet20",
    "TinyLM",
    "accuracy",
    "asset_path",
    "behaviour_hash",
    "calibration_batch",
    "calibration_set",
    "check_device",
    "checkpoint_path",
    "count_correct",
    "default_data",
    "distill_images",
    "evaluating",
    "fmnist_dir",
    "hf_state_dict",
    "layer_registry",
    "load_fmnist",
    "load_model",
    "make_calibration_subset",
    "metric_of",
    "next_token_loss",
    "normalize",
    "normalized_outputs",
    "open_data",
    "paced_batches",
    "perplexity",
    "quantizable_modules",
    "run_with_outputs",
    "select_output",
    "selected",
    "split_attention",
    "train",
    "train_language_model",
    "weights_hash",
]
