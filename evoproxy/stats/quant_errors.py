"""Q, the squared weight quantization error (Q_b(W) − W)² of a layer at each bit-width of QBITS,
computed from the layer's weight when a proxy reads it rather than stored with the statistics: it
is a deterministic function of W and the weight format, and stored it would be 7 float64 copies of
every weight (4.8 GB of ViT-B's 86 M). What was read stays in one memo of at most MEMO_BYTES over
all layers and models, least recently read out first, so a small model's Q is computed once.
Reading a large model's Q takes long (ViT-B/16's 86 M weights at three bit-widths, 40 s on a core),
and the reads come from within a proxy, so `reporting` gives the caller progress lines as they go."""

from __future__ import annotations

import itertools
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

import torch

from ..pace import paced
from ..primitives import LazyPerBitInput
from ..quant import WeightFormat, weight_quantization_error

QBITS = (2, 3, 4, 5, 6, 7, 8)  # the weight bit-widths at which Q is read
# All of ResNet-18's Q (7 × 11.7 M × 8 bytes = 0.66 GB) fits, so an evolution on it computes Q once;
# a larger model's is computed again as it is read.
MEMO_BYTES = 1 << 30

_memo: OrderedDict[tuple[int, int], torch.Tensor] = OrderedDict()  # (owner's token, bits) → Q
_memo_bytes = 0
_lock = threading.Lock()
_tokens = itertools.count()  # keys by a token, never id(): a dead owner's id may be reused
_computing: ContextVar[Callable[[int], None] | None] = ContextVar("_computing", default=None)  # of `reporting`


class QuantizationErrors(Mapping, LazyPerBitInput):
    """Q of one layer: bit-width → (Q_b(W) − W)², float64 of the weight's shape, in the weight
    format `fmt` (the benches' quantizer), for the bit-widths `bits`; computed when read, so
    primitives.load_inputs keeps it as it is (LazyPerBitInput)."""

    def __init__(self, weight: torch.Tensor, fmt: WeightFormat = WeightFormat(), bits=QBITS):
        self.weight, self.fmt, self.bits = weight, fmt, tuple(bits)
        self._token = next(_tokens)
        weakref.finalize(self, _forget, self._token)

    def __getitem__(self, bits: int) -> torch.Tensor:
        key = (self._token, bits)
        with _lock:
            if (q := _memo.get(key)) is not None:
                _memo.move_to_end(key)
                return q
        if bits not in self.bits:
            raise KeyError(bits)
        if (tick := _computing.get()) is not None:
            tick(self._token)
        # One thread, as compute_stats: the clipping search's sums then add in one order on every machine
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            q = weight_quantization_error(self.weight, bits, self.fmt)
        finally:
            torch.set_num_threads(threads)
        _remember(key, q)
        return q

    def __contains__(self, bits) -> bool:  # without computing Q (Mapping's would read it)
        return bits in self.bits

    def __iter__(self) -> Iterator[int]:
        return iter(self.bits)

    def __len__(self) -> int:
        return len(self.bits)

    def __reduce__(self):  # a copy gets its own token (and memo entries)
        return type(self), (self.weight, self.fmt, self.bits)

    def __repr__(self) -> str:
        return f"QuantizationErrors(weight {tuple(self.weight.shape)}, {self.fmt}, bits {self.bits})"


@contextmanager
def reporting(layers: int, log: Callable[[str], None] | None) -> Iterator[None]:
    """Within it (in this thread), `log` gets "quantization errors: layer i/`layers`" lines (pace.paced:
    one every PROGRESS_SECONDS, none for a short read) as the Q of a further layer is first computed;
    `layers` is how many may be read. Q read from the memo costs nothing and counts nothing."""
    ticks, seen = paced(itertools.repeat(None), layers, "quantization errors: layer", log), set()

    def tick(token: int) -> None:
        if token not in seen:
            seen.add(token)
            next(ticks)

    reset = _computing.set(tick)
    try:
        yield
    finally:
        _computing.reset(reset)


def _remember(key: tuple[int, int], q: torch.Tensor) -> None:
    global _memo_bytes
    size = _nbytes(q)
    with _lock:
        if key in _memo or size > MEMO_BYTES:  # read meanwhile by another thread, or never fits
            return
        while _memo and _memo_bytes + size > MEMO_BYTES:
            _memo_bytes -= _nbytes(_memo.popitem(last=False)[1])
        _memo[key] = q
        _memo_bytes += size


def _forget(token: int) -> None:
    """Drop the memo entries of a garbage-collected QuantizationErrors."""
    global _memo_bytes
    with _lock:
        for key in [k for k in _memo if k[0] == token]:
            _memo_bytes -= _nbytes(_memo.pop(key))


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()
