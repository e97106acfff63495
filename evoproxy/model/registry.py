"""The registry of named models (the shipped nets with their checkpoints), and loading a user's
model given as `package.module:function` plus a state_dict file, or as `hf:PATH`, a Hugging Face
`transformers` causal language model saved in a local folder (nothing is downloaded)."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from ..errors import EvoproxyError, EvoproxyWarning, exception_line
from ..hashing import tensors_hash
from ..reference import import_callable
from .attention import fused_state_dict, split_attention
from .data import asset_path
from .layers import evaluating, refused_inputs, run_with_outputs, select_output
from .lm import TinyLM
from .nets import (
    ConvNeXtSmall,
    MLPMixerSmall,
    MobileNetV2Small,
    PlainVGG,
    ResNet20,
    ShuffleNetSmall,
    SqueezeNetSmall,
    WideHeadCNN,
)
from .recipes import RECIPES


@dataclass(frozen=True)
class ModelSpec:
    """A named model: how to build it, which shipped checkpoint to load, what input it takes, its
    architecture (shared by every checkpoint of it, so that a leave-one-architecture-out fold holds
    them all out), the recipe that trained it (a name of RECIPES), and the bench set of its main
    bench: "zoo" (the set `evoproxy evolve --preset zoo` searches on) or "wide" (issue 27's wider
    zoo: other recipes and layer kinds, named apart so that the zoo preset keeps its result)."""

    name: str
    build: Callable[[], nn.Module]
    checkpoint: str
    input_shape: tuple[int, ...]
    description: str
    architecture: str
    data: str = "fmnist"  # the data spec it was trained on, which its benches are measured on
    recipe: str = "zoo"
    bench_set: str = "zoo"


def _by(recipe: str) -> str:
    return f"trained on Fashion-MNIST by the {recipe!r} recipe ({RECIPES[recipe].summary}; `evoproxy train`)"


MODELS: dict[str, ModelSpec] = {
    "resnet20-fmnist": ModelSpec(
        "resnet20-fmnist",
        ResNet20,
        "resnet20_fmnist.pt",
        (1, 28, 28),
        "ResNet-20 trained on Fashion-MNIST (`evoproxy train`)",
        "resnet20",
    ),
    "mobilenetv2-fmnist": ModelSpec(
        "mobilenetv2-fmnist",
        MobileNetV2Small,
        "mobilenetv2_fmnist.pt",
        (1, 28, 28),
        "MobileNetV2-style net trained on Fashion-MNIST (`evoproxy train`)",
        "mobilenetv2",
    ),
    "vgg-fmnist": ModelSpec(
        "vgg-fmnist",
        PlainVGG,
        "vgg_fmnist.pt",
        (1, 28, 28),
        "plain VGG-style net, no shortcuts, trained on Fashion-MNIST (`evoproxy train`)",
        "vgg",
    ),
    "shufflenet-fmnist": ModelSpec(
        "shufflenet-fmnist",
        ShuffleNetSmall,
        "shufflenet_fmnist.pt",
        (1, 28, 28),
        "ShuffleNet-style net, grouped 1×1 convolutions and channel shuffle, "
        "trained on Fashion-MNIST (`evoproxy train`)",
        "shufflenet",
    ),
    "squeezenet-fmnist": ModelSpec(
        "squeezenet-fmnist",
        SqueezeNetSmall,
        "squeezenet_fmnist.pt",
        (1, 28, 28),
        "SqueezeNet-style net of fire modules trained on Fashion-MNIST (`evoproxy train`)",
        "squeezenet",
    ),
    "mixer-fmnist": ModelSpec(
        "mixer-fmnist",
        MLPMixerSmall,
        "mixer_fmnist.pt",
        (1, 28, 28),
        "MLP-Mixer (mostly Linear layers) trained on Fashion-MNIST (`evoproxy train`)",
        "mixer",
    ),
    "widehead-fmnist": ModelSpec(
        "widehead-fmnist",
        WideHeadCNN,
        "widehead_fmnist.pt",
        (1, 28, 28),
        "CNN (convolutions with BatchNorm) ending in a wide Linear(1024 → 256) without BatchNorm, " + _by("zoo"),
        "widehead",
        bench_set="wide",
    ),
    "convnext-fmnist": ModelSpec(
        "convnext-fmnist",
        ConvNeXtSmall,
        "convnext_fmnist.pt",
        (1, 28, 28),
        "ConvNeXt-style net (depthwise 7×7, LayerNorm, GELU, no BatchNorm), " + _by("zoo"),
        "convnext",
        bench_set="wide",
    ),
    "tinylm-kjv": ModelSpec(
        "tinylm-kjv",
        TinyLM,
        "tinylm_kjv.pt",
        (256,),
        "byte-level decoder-only transformer (4 blocks, 3.4 M parameters) trained on the shipped King James "
        "Version text (`evoproxy train`)",
        "tinylm",
        data="kjv",
    ),
}
# Each architecture of the zoo, trained by the `adamw` recipe too: the wider zoo's other recipe.
MODELS.update(
    {
        f"{spec.name}-adamw": replace(
            spec,
            name=f"{spec.name}-adamw",
            checkpoint=spec.checkpoint.replace(".pt", "_adamw.pt"),
            description=f"{spec.name}'s architecture " + _by("adamw"),
            recipe="adamw",
            bench_set="wide",
        )
        for spec in list(MODELS.values())
        if spec.bench_set == "zoo" and spec.data == "fmnist"
    }
)
ALIASES = {"default": "resnet20-fmnist"}


HF_PREFIX = "hf:"


def default_data(ref: str) -> str:
    """The data spec a model is measured on unless told otherwise: a registry model's own data; for a
    `hf:` model the shipped text as bytes (ids 10 to 122, within any vocabulary of 123 or more): a smoke
    test only, since its tokenizer is not the model's: pass the model's own tokens, `--data FILE.npz`;
    else the shipped Fashion-MNIST."""
    if ref.startswith(HF_PREFIX):
        return "kjv"
    spec = MODELS.get(ALIASES.get(ref, ref))
    return spec.data if spec else "fmnist"


def weights_hash(model: nn.Module) -> str:
    """SHA-256 over the model's state_dict (names, dtypes, shapes and bytes), in hex."""
    return tensors_hash(model.state_dict().items())


def behaviour_hash(model: nn.Module, x: torch.Tensor) -> str:
    """SHA-256 (hex) of the model's output on `x` (one sample is enough) in eval mode, on one
    thread: what its weights alone cannot tell, i.e. the code of its forward (two models with one
    state_dict may compute different things). Keys the caches of what is computed from a model,
    beside its weights_hash. Inputs that the model refuses are an EvoproxyError."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one order of summation, so one output, whatever the core count
    try:
        with evaluating(model), torch.no_grad():
            out = run_with_outputs(model, x, {}, None, refused_inputs(model, x.shape[1:]))
    finally:
        torch.set_num_threads(threads)
    # an output that is not a tensor is refused later, by what reads it; keyed by its type meanwhile
    return tensors_hash([("output", out)]) if isinstance(out, torch.Tensor) else type(out).__qualname__


def checkpoint_path(spec: ModelSpec) -> Path:
    """Where the shipped checkpoint of a registry model lies inside the installed package."""
    return asset_path(spec.checkpoint)


def _load_state_dict(model: nn.Module, path: str | Path) -> None:
    path = Path(path)
    if not path.is_file():
        raise EvoproxyError(f"weights file {path} does not exist: give a saved state_dict file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a corrupt or non-tensor file
        raise EvoproxyError(
            f"cannot read weights file {path} as a state_dict ({type(exc).__name__}); "
            "save one with torch.save(model.state_dict(), path)"
        ) from None
    if not isinstance(state, dict):
        raise EvoproxyError(f"weights file {path} holds a {type(state).__name__}, not a state_dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise EvoproxyError(f"weights file {path} does not fit the model: {first}") from None


@contextmanager
def _worded(what: str) -> Iterator[None]:
    """Runs a `transformers` call, whose exceptions (of many types) become one-line EvoproxyErrors
    that start with `what`; its progress bars stay off, since they would break one-line messages."""
    from transformers.utils import logging

    progress = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    except Exception as exc:
        raise EvoproxyError(f"{what} ({exception_line(exc)})") from None
    finally:
        if progress:
            logging.enable_progress_bar()


def _load_hf(path_text: str) -> tuple[nn.Module, str]:
    """The `transformers` causal language model saved (`save_pretrained`) in the folder `path_text`, in
    float32 with its logits selected, and its canonical name. Eager attention: the statistics take second
    derivatives through attention, which the fused (SDPA) kernels lack on the CPU; no key/value cache, which
    a forward pass would otherwise return and hold."""
    ref = HF_PREFIX + path_text
    try:
        import transformers
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING
    except ImportError:
        raise EvoproxyError(f"{ref} needs the transformers library: pip install 'evoproxy[hf]'") from None
    path = Path(path_text).expanduser().resolve()
    if not path.is_dir():
        raise EvoproxyError(
            f"{ref}: {path} is not a folder: give a local folder saved with save_pretrained (nothing is downloaded)"
        )
    if not (path / "config.json").is_file():
        raise EvoproxyError(f"{ref}: {path} holds no config.json: give a folder saved with save_pretrained")
    version = f"transformers {transformers.__version__}"
    with _worded(f"{ref}: cannot read its config.json with {version}"):
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise EvoproxyError(
            f"{ref}: its config ({type(config).__name__}) is not that of a causal language model (AutoModelForCausalLM)"
        )
    if getattr(config, "quantization_config", None) is not None:  # such as `quantize --packed` writes
        raise EvoproxyError(
            f"{ref}: the model is already quantized (its config.json has a quantization_config): "
            "give the float model it came from"
        )
    config.use_cache = False
    with _worded(f"{ref}: cannot load the model with {version}"):
        model = transformers.AutoModelForCausalLM.from_pretrained(
            path, config=config, local_files_only=True, attn_implementation="eager"
        )
    _conv1d_as_linear(model)
    return select_output(model.float(), "logits"), HF_PREFIX + str(path)


# Marks an nn.Linear that replaced a transformers Conv1D, whose checkpoint stores the weight transposed.
FROM_CONV1D = "evoproxy_from_conv1d"


def _conv1d_as_linear(model: nn.Module) -> None:
    """Replace every `transformers` Conv1D (GPT-2 and its kin: y = x·W + b, W stored as (in, out)) by the
    nn.Linear that computes the same, so that every stage sees one kind of projection with its weight as
    (out, in) and group-wise scales along the input; `hf_state_dict` transposes them back."""
    for name, module in list(model.named_modules()):
        if type(module).__name__ == "Conv1D" and type(module).__module__.startswith("transformers"):
            linear = nn.Linear(module.nx, module.nf, device="meta")  # no initialisation: both are replaced
            linear.weight = nn.Parameter(module.weight.detach().t().contiguous())
            linear.bias = module.bias
            setattr(linear, FROM_CONV1D, True)
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, linear)


def hf_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict of a `hf:` model in its own checkpoint's layout (Conv1D weights as (in, out),
    nn.MultiheadAttention's q, k and v as in_proj), for `save_pretrained(state_dict=...)`."""
    state = model.state_dict()
    for name, module in model.named_modules():
        if getattr(module, FROM_CONV1D, False):
            state[f"{name}.weight"] = module.weight.detach().t().contiguous()
    return fused_state_dict(model, state)


def load_model(ref: str, weights: str | Path | None = None, output: str | None = None) -> tuple[nn.Module, str]:
    """The model named `ref`, in eval mode, and its canonical name, its nn.MultiheadAttention modules
    split into nn.Linear projections (`split_attention`) once its weights are loaded.

    `ref` is a registry name (see MODELS, ALIASES), `package.module:function`, a function
    that returns an nn.Module, or `hf:PATH`, a local folder of a `transformers` causal language
    model (which holds its weights, and whose logits are selected). `weights` (a state_dict file)
    overrides the shipped checkpoint of a registry model and is what a user's model is loaded with,
    if given. `output` selects the logits of a model that returns a tuple (an index) or a dict (a key)."""
    name = ALIASES.get(ref, ref)
    if ref.startswith(HF_PREFIX):
        if weights is not None:
            raise EvoproxyError(f"{ref} takes no weights file: the folder holds its weights")
        if output not in (None, "logits"):
            raise EvoproxyError(f"{ref} takes no output other than logits, which are selected")
        model, name = _load_hf(ref[len(HF_PREFIX) :])
        return split_attention(model).eval(), name
    if name in MODELS:
        spec = MODELS[name]
        model = spec.build()
        _load_state_dict(model, weights or checkpoint_path(spec))
    elif ":" in ref:
        model = import_callable(ref, "model")()
        if not isinstance(model, nn.Module):
            raise EvoproxyError(f"{ref} returned a {type(model).__name__}, not a torch.nn.Module")
        if weights is not None:
            _load_state_dict(model, weights)
        else:
            warnings.warn(
                f"{ref} runs with the weights its function gives it (random, unless it loads trained "
                "ones): pass weights, a saved state_dict file",
                EvoproxyWarning,
                stacklevel=2,
            )
    else:
        known = ", ".join(sorted([*MODELS, *ALIASES]))
        raise EvoproxyError(f"unknown model {ref!r}: use one of {known}, or package.module:function")
    return select_output(split_attention(model), output).eval(), name
