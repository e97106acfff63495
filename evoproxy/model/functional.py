"""Layers whose weight a parent module applies through a function: torchvision's Swin attention passes
`self.qkv.weight` and `self.qkv.bias` to a function that calls F.linear, so the nn.Linear `qkv` never
runs and no forward hook (statistics, quantizers) sees it. `route_functional` finds such calls in one
probing forward pass, as a TorchFunctionMode that sees F.linear, F.conv1d or F.conv2d given a layer's
weight outside that layer's own forward, and gives each parent a forward (RoutedForward) that sends
those calls through the layer itself, which computes the same: to every stage it is then a layer."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import fx, nn
from torch.nn import functional as F
from torch.nn.modules.utils import _ntuple
from torch.nn.utils import parametrize
from torch.overrides import TorchFunctionMode

_LAYER_OF = {F.linear: nn.Linear, F.conv1d: nn.Conv1d, F.conv2d: nn.Conv2d}
_LAYERS = tuple(_LAYER_OF.values())  # the layer types: one as an owner gets IntegerForward, not a RoutedForward
_CONV_DEFAULTS = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1}


def _given(args: tuple, kwargs: dict) -> dict:
    """The arguments of a call of F.linear or F.conv1d/2d by name."""
    return dict(zip(("input", "weight", "bias", *_CONV_DEFAULTS), args)) | kwargs


def _computes(layer: nn.Module, func, given: dict) -> bool:
    """Whether `func` with the arguments `given`, their weight `layer`'s, computes what `layer` computes
    on their input: the function its forward calls, its own bias and, for a convolution, its geometry."""
    if not isinstance(layer, _LAYER_OF.get(func, ())):
        return False
    if given.get("bias") is not layer.bias:  # Swin V2 zeroes a part of a copy of its qkv bias
        return False
    if isinstance(layer, nn.Linear):
        return True
    pair = _ntuple(len(layer.kernel_size))
    call = [given.get(k, default) for k, default in _CONV_DEFAULTS.items()]
    call[:3] = [v if isinstance(v, str) else pair(v) for v in call[:3]]
    return layer.padding_mode == "zeros" and call == [layer.stride, layer.padding, layer.dilation, layer.groups]


class _Router(TorchFunctionMode):
    """Sends each F.linear/F.conv* call that computes what one of `layers` computes through that layer.
    It knows their weights as tensors, kept so that no other tensor takes their id: a parametrized one
    (QAT's quantizer) is a new tensor at each read, known as its parametrization makes it."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.weights: dict[int, tuple[torch.Tensor, nn.Module]] = {}
        self.parametrized = {}  # parametrization → its layer
        self.hooks = []
        for layer in layers:
            if parametrize.is_parametrized(layer, "weight"):
                made = layer.parametrizations.weight
                self.parametrized[made] = layer
                self.hooks.append(made.register_forward_hook(lambda m, args, weight: self._know(weight, m)))
            else:
                self.weights[id(layer.weight)] = layer.weight, layer

    def _know(self, weight: torch.Tensor, parametrization: nn.Module) -> None:
        self.weights[id(weight)] = weight, self.parametrized[parametrization]

    def layer_of(self, value) -> nn.Module | None:
        """The layer whose weight `value` is, if any."""
        if isinstance(value, fx.Proxy) and value.node.op == "call_module":
            # torch.fx records a parametrization as a leaf module, without running its hooks
            return self.parametrized.get(value.tracer.root.get_submodule(value.node.target))
        return self.weights.get(id(value), (None, None))[1]

    def __exit__(self, *exc):
        for h in self.hooks:
            h.remove()
        return super().__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        given = _given(args, kwargs or {})
        layer = self.layer_of(given.get("weight")) if func in _LAYER_OF else None
        if layer is not None and _computes(layer, func, given):
            return layer(given["input"])  # this mode is off inside: the layer's own call is not routed again
        return func(*args, **(kwargs or {}))


class RoutedForward:
    """The forward of `owner`, with its functional calls of the weights of `layers` routed through them.
    A class, not a closure, so that a model carrying it can be copied and pickled."""

    def __init__(self, owner: nn.Module, layers: list[nn.Module]):
        self.owner, self.layers = owner, layers

    def __call__(self, *args, **kwargs):
        with _Router(self.layers):
            return type(self.owner).forward(self.owner, *args, **kwargs)


class _Probe(_Router):
    """Watches a forward pass of `model`: which of `layers` run as modules (`called`), which a parent
    applies through F.linear/F.conv* as they would compute (`routed`, by parent; routed at once, so that
    hooks see them in this pass too) and where the weights of others go (`elsewhere`, by layer name).
    `running` is the stack of modules whose forward runs, which the caller's hooks keep."""

    def __init__(self, model: nn.Module, layers: list[nn.Module]):
        super().__init__(layers)
        self.names = {module: name for name, module in model.named_modules()}
        self.running: list[nn.Module] = []
        self.called: set[nn.Module] = set()
        self.routed: dict[nn.Module, list[nn.Module]] = {}
        self.elsewhere: dict[str, str] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if not self.running:  # a hook of the model's own, before or after its forward
            return func(*args, **(kwargs or {}))
        given = _given(args, kwargs or {})
        flat = [v for a in (*args, *(kwargs or {}).values()) for v in (a if isinstance(a, (list, tuple)) else (a,))]
        for layer in filter(None, map(self.layer_of, flat)):
            owner = self.running[-1]
            if layer is owner:  # its own forward
                self.called.add(layer)
            elif (
                self.layer_of(given.get("weight")) is layer
                and _computes(layer, func, given)
                and not isinstance(owner, _LAYERS)
                and "forward" not in vars(owner)
            ):
                if layer not in self.routed.setdefault(owner, []):
                    self.routed[owner].append(layer)
                return layer(given["input"])
            else:
                where = self.names[owner] or f"the {type(owner).__name__}"
                self.elsewhere.setdefault(self.names[layer], f"{getattr(func, '__name__', func)} in {where}")
        return func(*args, **(kwargs or {}))


def route_functional(model: nn.Module, layers: list[nn.Module], forward: Callable[[], object]) -> dict[str, str]:
    """Run `forward()`, a forward pass of `model`, watched as `_Probe` does; then give each parent module
    that applies the weight of one of `layers` through F.linear/F.conv* (with the layer's own bias and
    geometry) a RoutedForward for them, unless the layer also runs as a module. Returns, for each layer
    that neither runs nor is routed but whose weight the pass used, which function used it and where."""
    probe = _Probe(model, layers)
    modules = list(model.modules())
    hooks = [m.register_forward_pre_hook(lambda m, args: probe.running.append(m)) for m in modules]
    # `del`, not pop(): a forward hook that returns something replaces the output
    hooks += [m.register_forward_hook(lambda *_: probe.running.__delitem__(-1), always_call=True) for m in modules]
    try:
        with probe:
            forward()
    finally:
        for h in hooks:
            h.remove()
    for owner, layers in probe.routed.items():
        layers = [layer for layer in layers if layer not in probe.called]  # its module calls are hooked already
        if layers:
            owner.forward = RoutedForward(owner, layers)
    used = {probe.names[layer] for layer in probe.called.union(*probe.routed.values())}
    return {name: where for name, where in probe.elsewhere.items() if name not in used}
