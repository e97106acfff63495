"""The canonical layer registry: the ordered quantizable layers of a model. Every bit
configuration, statistic and allocation is keyed by it, so there is exactly one such list."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from fnmatch import fnmatchcase
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..errors import EvoproxyError, EvoproxyWarning, ParameterError, message_line
from .functional import route_functional

QUANTIZABLE = (nn.Conv1d, nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class LayerInfo:
    """One quantizable layer. `index` is its position in a bit configuration; `macs` are the
    multiply-accumulates of one forward pass of one input sample of the calibration size."""

    index: int
    name: str
    kind: str  # "conv", "depthwise", "grouped" or "linear"
    weight_shape: tuple[int, ...]
    params: int  # weight elements plus bias elements
    macs: int

    def to_dict(self) -> dict:
        return asdict(self)


def _kind(module: nn.Module) -> str:
    if isinstance(module, nn.Linear):
        return "linear"
    if module.groups == 1:
        return "conv"
    return "depthwise" if module.groups == module.in_channels == module.out_channels else "grouped"


def quantizable_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every Conv1d, Conv2d and Linear, in `named_modules` order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QUANTIZABLE)]


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode for the block (BatchNorm on its running statistics, no dropout), its
    training mode restored after, whatever happens inside."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def run_with_outputs(model: nn.Module, x: torch.Tensor, modules: dict[str, nn.Module], keep, what: str):
    """`model(x)`, calling `keep(name, output)` for each module of `modules` as it runs.
    A forward pass that torch refuses becomes an EvoproxyError that starts with `what`."""
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: keep(n, out)) for n, m in modules.items()]
    try:
        return model(x)
    except RuntimeError as exc:
        raise EvoproxyError(f"{what}: {message_line(exc)}") from None
    finally:
        for h in hooks:
            h.remove()


def refused_inputs(model: nn.Module, input_shape: tuple[int, ...]) -> str:
    """What a model that refuses inputs of `input_shape` (one sample's) is told."""
    return (
        f"{type(model).__name__} does not accept inputs of shape {tuple(input_shape)} (the data's); "
        "check the data and its image size"
    )


def normalized_outputs(model: nn.Module, x: torch.Tensor, modules: dict[str, nn.Module]) -> set[str]:
    """The names of `modules` whose output a BatchNorm takes as its input, as one forward pass of
    `x` shows (the BatchNorms that PTQ re-estimates after quantizing them)."""
    outputs: dict[str, torch.Tensor] = {}
    found: set[str] = set()

    def norm_input(module, inputs) -> None:
        found.update(n for n, out in outputs.items() if inputs and inputs[0] is out)

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    hooks = [m.register_forward_pre_hook(norm_input) for m in norms]
    try:
        with evaluating(model), torch.no_grad():
            run_with_outputs(model, x, modules, outputs.__setitem__, "the model does not run on its data")
    finally:
        for h in hooks:
            h.remove()
    return found


class OutputSelector:
    """A forward hook that keeps one part of a model's tuple or dict output (its logits): what
    `load_model`'s `output` sets up. A class, not a closure, so that a model carrying it can be pickled."""

    def __init__(self, key: int | str):
        self.key = key

    def __call__(self, module: nn.Module, inputs, output):
        try:
            return output[self.key]
        except (KeyError, IndexError, TypeError):
            if isinstance(output, dict):
                keys = ", ".join(map(str, output))
            elif isinstance(output, (tuple, list)):
                keys = f"0 to {len(output) - 1}"
            else:
                keys = "none: it is not a tuple or dict"
            raise ParameterError(
                "load_model",
                "output",
                f"an index or key of the model's {type(output).__name__} output (keys: {keys})",
                self.key,
            ) from None


def select_output(model: nn.Module, key: str | None) -> nn.Module:
    """`model`, returning only `key` of its output (an index of a tuple, a key of a dict); None: as is."""
    if key is not None:
        model.register_forward_hook(OutputSelector(int(key) if key.lstrip("-").isdigit() else key))
    return model


def selected(model: nn.Module, output):
    """`output` of a pass that ran `model.forward` without its hooks (as torch.fx does), with
    the model's OutputSelector applied."""
    for hook in model._forward_hooks.values():
        if isinstance(hook, OutputSelector):
            output = hook(model, None, output)
    return output


def check_device(device: str) -> str:
    """`device` if torch can use it here, else a ParameterError."""
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as exc:  # an unknown name, or CUDA absent from this build
        reason = message_line(exc)
        raise ParameterError(
            "check_device", "device", f"a device torch can use here, such as cpu ({reason})", device
        ) from None
    return device


def _excluded(names: list[str], patterns: tuple[str, ...]) -> set[str]:
    """The names that match a pattern of `exclude` (a layer name, or a shell pattern such as
    'head.*'); a pattern that matches no layer is an error, since it is most likely a typo."""
    out = set()
    for pattern in patterns:
        hits = {n for n in names if fnmatchcase(n, pattern)}
        if not hits:
            raise ParameterError(
                "layer_registry",
                "exclude",
                "layer names or shell patterns that each match a quantizable layer (`evoproxy stats` lists them)",
                pattern,
            )
        out |= hits
    return out


def layer_registry(
    model: nn.Module,
    input_shape: tuple[int, ...],
    exclude: tuple[str, ...] = (),
    input_dtype: torch.dtype | None = None,
) -> list[LayerInfo]:
    """The ordered quantizable layers of `model` for inputs of `input_shape` (one sample, no
    batch dimension) and `input_dtype` (None: the model's parameters'; int64 for token ids) that its
    forward pass calls, less those matching `exclude`; layers it does not call are left out with a
    warning. A layer whose weight a parent applies through F.linear/F.conv* counts as called: `model`
    is changed to route those calls through the layer (`route_functional`), which computes the same.
    MACs are counted from the output shapes seen in one forward pass."""
    modules = quantizable_modules(model)
    if not modules:
        raise EvoproxyError(f"{type(model).__name__} has no Conv1d, Conv2d or Linear layer: nothing to quantize")
    dropped = _excluded([n for n, _ in modules], exclude)
    modules = [(n, m) for n, m in modules if n not in dropped]
    if not modules:
        raise ParameterError("layer_registry", "exclude", "patterns that leave a layer to quantize", exclude)
    out_numel: dict[str, int] = {}
    with evaluating(model), torch.no_grad():
        param = next(model.parameters())
        x = torch.zeros((1, *input_shape), dtype=input_dtype or param.dtype, device=param.device)
        # The pass also routes the layers that a parent applies through F.linear/F.conv* (`route_functional`).
        elsewhere = route_functional(
            model,
            [m for _, m in modules],
            lambda: run_with_outputs(
                model,
                x,
                dict(modules),
                lambda n, out: out_numel.__setitem__(n, out.numel()),  # of one sample, whichever axis the batch is
                refused_inputs(model, input_shape),
            ),
        )
    unused = [
        f"{name} (its weight goes to {elsewhere[name]})" if name in elsewhere else name
        for name, _ in modules
        if name not in out_numel
    ]
    if unused:  # an auxiliary head, or a projection that its parent applies in a way routing cannot follow
        warnings.warn(
            f"{len(unused)} layer(s) not called in the forward pass stay at full precision and out of "
            f"the layer registry: {', '.join(unused)}",
            EvoproxyWarning,
            stacklevel=2,
        )
    attention = [name for name, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    if attention:  # one that split_attention leaves: its q, k, v projection is a bare parameter, not a layer
        warnings.warn(
            f"the q/k/v projections of nn.MultiheadAttention ({', '.join(attention)}) stay at full "
            "precision: load_model splits them into nn.Linear layers only without kdim/vdim, bias_k/bias_v, "
            "add_zero_attn or hooks, and outside torch's Transformer layers",
            EvoproxyWarning,
            stacklevel=2,
        )
    used = [(name, m) for name, m in modules if name in out_numel]
    if not used:
        raise EvoproxyError(
            f"{type(model).__name__} calls none of its Conv1d, Conv2d or Linear layers in the forward pass"
        )
    layers = []
    for index, (name, m) in enumerate(used):
        # Each output element costs (weight elements per output channel) multiply-accumulates.
        per_output = m.weight.numel() // m.weight.shape[0]
        params = m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
        layers.append(LayerInfo(index, name, _kind(m), tuple(m.weight.shape), params, out_numel[name] * per_output))
    return layers
