"""The model stage. Takes a registry name, or a user's `package.module:function` and weights;
gives the nn.Module, its layer registry (the quantizable layers that key every bit
configuration, statistic and allocation), the calibration and evaluation images, and training."""
from .data import asset_path, calibration_batch, calibration_set, evaluation_data, fmnist_dir, load_fmnist, normalize
from .layers import QUANTIZABLE, LayerInfo, layer_registry, quantizable_modules, run_with_outputs
from .nets import MobileNetV2Small, ResNet20
from .registry import ALIASES, MODELS, ModelSpec, checkpoint_path, load_model, weights_hash
from .train import accuracy, make_calibration_subset, train

__all__ = ["ALIASES", "MODELS", "QUANTIZABLE", "LayerInfo", "MobileNetV2Small", "ModelSpec", "ResNet20", "accuracy",
           "asset_path", "calibration_batch", "calibration_set", "checkpoint_path", "evaluation_data", "fmnist_dir",
           "layer_registry", "load_fmnist", "load_model", "make_calibration_subset", "normalize",
           "quantizable_modules", "run_with_outputs", "train", "weights_hash"]
