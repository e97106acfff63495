"""The data-free SynFlow gradient V_l = ∂R/∂|W_l|, R = 1ᵀ(Π_l |θ_l|)1 (Tanaka et al., 2020).

R is the sum of the outputs of the *linearised* network: every weight replaced by its absolute
value, biases, BatchNorm shifts and other constants added to a signal (a position embedding)
dropped, a constant concatenated to one (a class token) as zeros, BatchNorm (eval mode) reduced
to its per-channel scale |γ|/sqrt(var+ε) and LayerNorm, whose statistics depend on the input, to its scale |γ|,
activation functions replaced by the identity (on the non-negative signals of this network,
ReLU is the identity anyway), input all ones, float64.

On deep networks with BatchNorm this product overflows even in float64. So the network is
traced with torch.fx and every intermediate signal is carried as a pair (t, s) meaning t·e^s:
after each layer t is divided by its (detached) maximum and s absorbs the log. Additions and
concatenations first bring both operands to a common s. The represented values are exact, so
the gradient of sum(t_out) is exactly e^{-s_out}·∂R/∂|W| for every layer at once; we return that
gradient and s_out (`log_scale`), so V·e^{log_scale} is the true SynFlow gradient.
"""

from __future__ import annotations

import copy
import operator

import torch
import torch.fx
from torch import nn
from torch.nn import functional as F

from ..errors import EvoproxyError, exception_line, message_line
from ..model import selected

# Element-wise activations that the linearised network treats as the identity.
_IDENTITY_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.Hardtanh,
    nn.SiLU,
    nn.GELU,
    nn.Hardswish,
    nn.ELU,
    nn.Identity,
    nn.Dropout,
    nn.Sigmoid,
    nn.Hardsigmoid,
    nn.Tanh,
)
_IDENTITY_FUNCTIONS = {
    torch.relu,
    F.relu,
    F.relu6,
    F.silu,
    F.gelu,
    F.hardswish,
    F.dropout,
    torch.sigmoid,
    torch.tanh,
    F.hardtanh,
    F.leaky_relu,
    torch.nn.functional.hardsigmoid,
}
# Functions of other libraries that are the identity at inference, by name (not imported here):
# torchvision's stochastic depth (EfficientNet, ConvNeXt, Swin) drops residual branches only in training.
_IDENTITY_NAMES = {"stochastic_depth"}
# Functions and methods that are linear and positively homogeneous in their one signal argument.
_LINEAR_FUNCTIONS = {
    torch.flatten,
    F.adaptive_avg_pool2d,
    F.avg_pool2d,
    F.max_pool2d,
    F.adaptive_max_pool2d,
    torch.mean,
    torch.sum,
}
_LINEAR_METHODS = {
    "view",
    "reshape",
    "flatten",
    "mean",
    "sum",
    "permute",
    "transpose",
    "contiguous",
    "squeeze",
    "unsqueeze",
    "expand_as",
}
_PROPERTIES = {"shape", "ndim", "dtype", "device"}  # attributes read as they are (x.shape in a reshape)
_POOLS = (
    nn.AvgPool1d,
    nn.AdaptiveAvgPool1d,
    nn.MaxPool1d,
    nn.AdaptiveMaxPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.MaxPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Flatten,
)


class _Scaled:
    """A signal t·e^s of the linearised network."""

    __slots__ = ("t", "s")

    def __init__(self, t: torch.Tensor, s: float):
        peak = t.detach().abs().max().item()
        if peak > 0:
            t, s = t / peak, s + float(torch.log(torch.tensor(peak, dtype=torch.float64)))
        self.t, self.s = t, s


def _common(values: list[_Scaled]) -> tuple[list[torch.Tensor], float]:
    s = max(v.s for v in values)
    return [v.t * torch.exp(torch.tensor(v.s - s, dtype=torch.float64)) for v in values], s


class _LinearisedInterpreter(torch.fx.Interpreter):
    """Runs the traced model on _Scaled signals with the linearisation described above."""

    def call_module(self, target, args, kwargs):
        m = self.fetch_attr(target)
        x = args[0]
        if not isinstance(x, _Scaled):
            return super().call_module(target, args, kwargs)
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            conv = F.conv1d if isinstance(m, nn.Conv1d) else F.conv2d
            return _Scaled(conv(x.t, m.weight, None, m.stride, m.padding, m.dilation, m.groups), x.s)
        if isinstance(m, nn.Linear):
            return _Scaled(F.linear(x.t, m.weight), x.s)
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            scale = (m.weight if m.weight is not None else 1.0) / torch.sqrt(m.running_var + m.eps)
            shape = (1, -1) + (1,) * (x.t.dim() - 2)
            return _Scaled(x.t * scale.view(shape), x.s)
        if isinstance(m, nn.LayerNorm):
            return x if m.weight is None else _Scaled(x.t * m.weight, x.s)
        if isinstance(m, _IDENTITY_MODULES):
            return x
        if isinstance(m, _POOLS):
            return _Scaled(m(x.t), x.s)
        if isinstance(m, nn.Sequential) and len(m) == 0:
            return x
        raise EvoproxyError(f"SynFlow: module {target} ({type(m).__name__}) has no linearisation")

    def call_function(self, target, args, kwargs):
        # torch.cat takes its signals in a list
        flat = [b for a in args for b in (a if isinstance(a, (list, tuple)) else (a,))]
        signals = [a for a in flat if isinstance(a, _Scaled)]
        if not signals:
            return super().call_function(target, args, kwargs)
        if target in _IDENTITY_FUNCTIONS or getattr(target, "__name__", None) in _IDENTITY_NAMES:
            return args[0]
        if target is getattr and args[1] in _PROPERTIES:
            return getattr(args[0].t, args[1])
        if target in (operator.add, operator.iadd, torch.add):
            if len(signals) == 1:  # a constant added to a signal: dropped, as biases are
                return signals[0]
            ts, s = _common(signals)
            return _Scaled(ts[0] + ts[1], s)
        if target is torch.cat:  # a constant among the parts (a class token) enters as zeros
            parts = [a if isinstance(a, _Scaled) else _Scaled(torch.zeros_like(a), 0.0) for a in args[0]]
            ts, s = _common(parts)
            return _Scaled(torch.cat(ts, *args[1:], **kwargs), s)
        if target in (operator.mul, torch.mul):
            if len(signals) == 2:
                return _Scaled(args[0].t * args[1].t, args[0].s + args[1].s)
            other = args[1] if isinstance(args[0], _Scaled) else args[0]
            return _Scaled(signals[0].t * abs(other), signals[0].s)
        if target in _LINEAR_FUNCTIONS:
            return _Scaled(target(args[0].t, *args[1:], **kwargs), args[0].s)
        raise EvoproxyError(f"SynFlow: function {getattr(target, '__name__', target)} has no linearisation")

    def call_method(self, target, args, kwargs):
        x = args[0]
        if isinstance(x, _Scaled):
            if target in _LINEAR_METHODS:
                return _Scaled(getattr(x.t, target)(*args[1:], **kwargs), x.s)
            if target == "size" or target == "dim":
                return getattr(x.t, target)(*args[1:], **kwargs)
            raise EvoproxyError(f"SynFlow: method .{target}() has no linearisation")
        return super().call_method(target, args, kwargs)


def synflow_gradients(
    model: nn.Module, input_shape: tuple[int, ...], layer_names: list[str]
) -> tuple[list[torch.Tensor], float]:
    """SynFlow gradients of the named layers' weights, float64, each divided by e^log_scale,
    and log_scale. The model is not touched: the work happens on a float64 copy on the CPU (SynFlow
    needs no data, and one pass is cheap)."""
    work = copy.deepcopy(model).cpu().double().eval()
    with torch.no_grad():
        for p in work.parameters():
            p.abs_()
    try:
        graph = torch.fx.symbolic_trace(work)
    except Exception as exc:  # fx raises many types for untraceable Python control flow
        raise EvoproxyError(f"SynFlow needs a torch.fx-traceable model; tracing failed: {message_line(exc)}") from None
    modules = dict(graph.named_modules())
    weights = [modules[n].weight for n in layer_names]
    for w in weights:
        w.requires_grad_(True)
    try:
        out = selected(
            work, _LinearisedInterpreter(graph).run(_Scaled(torch.ones((1, *input_shape), dtype=torch.float64), 0.0))
        )
    except EvoproxyError as exc:  # its first line: torch.fx appends the graph node it failed at
        raise EvoproxyError(message_line(exc)) from None
    except Exception as exc:  # an operation the linearisation does not foresee: V undefined, not a crash
        raise EvoproxyError(f"SynFlow cannot linearise the model ({exception_line(exc)})") from None
    grads = torch.autograd.grad(out.t.sum(), weights, allow_unused=True)
    grads = [torch.zeros_like(w) if g is None else g for g, w in zip(grads, weights)]
    return [g.detach() for g in grads], out.s
