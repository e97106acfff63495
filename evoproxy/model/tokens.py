"""Token data for language models: the text shipped in the package (text.py), a plain text file
(its UTF-8 bytes as tokens, vocabulary 256), or an .npz holding `tokens`: a 1-D stream, or windows
(N, T) used as they are (train_tokens / test_tokens for given parts).

A stream is cut into blocks; every TEST_EVERY-th block is the test part (so both parts run through
the whole text) and each part is cut into windows of `seq_len` + 1 tokens: the first `seq_len` are
the model's input, the last `seq_len` the next-token targets. A (N, T) array gives T − 1 of each.
Both parts are shuffled with the data seed, as images are; the calibration pool is the first
windows of the train part. Token ids are checked to be whole numbers from 0 (DataSource.check_classes
compares them with the model's vocabulary)."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import EvoproxyError, exception_line
from .checks import MAX_LABEL, MAX_VALUES, Pair
from .data_settings import DataSettings
from .readers import check_npz_headers
from .text import corpus_bytes

BLOCK, TEST_EVERY = 4096, 20  # a stream's blocks of tokens; every 20th is the test part (5 %)
SHIPPED_TEXT = "kjv"  # the data spec of the text shipped in the package
TEXT_SUFFIXES = (".txt", ".text", ".md")


def has_tokens(path: Path) -> bool:
    """Whether an .npz file holds token arrays (tokens, or train_tokens and test_tokens)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False
    return bool(names & {"tokens.npy", "train_tokens.npy", "test_tokens.npy"})


def _checked(tokens, where: str) -> torch.Tensor:
    """Token ids as int64: whole numbers from 0 to MAX_LABEL, a 1-D stream or (N, T) windows."""
    try:
        if getattr(tokens, "dtype", None) is not None and getattr(tokens.dtype, "kind", "") == "u":
            # Tokenizers save ids as uint16 or uint32, which torch cannot take the minimum of.
            if tokens.size and int(tokens.max()) > MAX_LABEL:
                raise EvoproxyError(f"{where}: token ids must be from 0 to {MAX_LABEL}, found {int(tokens.max())}")
            tokens = tokens.astype("int64")
        tokens = torch.as_tensor(tokens)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise EvoproxyError(f"{where}: tokens must be an array of whole numbers ({exception_line(exc)})") from None
    if tokens.dim() not in (1, 2) or tokens.numel() == 0:
        raise EvoproxyError(f"{where}: tokens must be a 1-D stream or (N, T) windows, got shape {tuple(tokens.shape)}")
    if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
        raise EvoproxyError(f"{where}: tokens must be whole-number ids (an integer array), got {tokens.dtype}")
    low, high = tokens.min().item(), tokens.max().item()
    if low < 0 or high > MAX_LABEL:
        raise EvoproxyError(f"{where}: token ids must be from 0 to {MAX_LABEL}, found {low} to {high}")
    return tokens.long()


def windows(tokens: torch.Tensor, seq_len: int) -> Pair:
    """Inputs and next-token targets, each (N, seq_len) int64, from a 1-D stream cut into windows
    of seq_len + 1 tokens that do not overlap (a last shorter piece is dropped)."""
    n = (len(tokens) - 1) // seq_len if len(tokens) > seq_len else 0
    cut = tokens[: n * seq_len + 1].long()
    return cut[:-1].view(n, seq_len), cut[1:].view(n, seq_len)


def _stream_parts(tokens: torch.Tensor, seq_len: int, where: str) -> tuple[Pair, Pair]:
    """(train, test) windows of a 1-D stream, cut as the module docstring says."""
    need = TEST_EVERY * (seq_len + 1)
    if len(tokens) < need:
        raise EvoproxyError(
            f"{where} holds {len(tokens)} tokens; at least {need} are needed for windows of --seq-len {seq_len} "
            f"in train and test parts: give more text or a shorter --seq-len"
        )
    block = max(seq_len + 1, min(BLOCK, len(tokens) // TEST_EVERY))
    blocks = tokens[: len(tokens) // block * block].view(-1, block)
    test = torch.arange(len(blocks)) % TEST_EVERY == TEST_EVERY - 1
    return windows(blocks[~test].flatten(), seq_len), windows(blocks[test].flatten(), seq_len)


def _windowed(tokens: torch.Tensor, where: str) -> Pair:
    if tokens.shape[1] < 2:
        raise EvoproxyError(f"{where}: token windows need at least 2 tokens each, got shape {tuple(tokens.shape)}")
    return tokens[:, :-1], tokens[:, 1:]


def _parts(tokens: torch.Tensor, seq_len: int, where: str) -> tuple[Pair, Pair]:
    if tokens.dim() == 1:
        return _stream_parts(tokens, seq_len, where)
    n = len(tokens)
    if n < 2:
        raise EvoproxyError(f"{where} holds {n} window(s); at least 2 are needed (train and test)")
    cut = n - max(1, n // TEST_EVERY)
    pair = _windowed(tokens, where)
    train, test = (pair[0][:cut], pair[1][:cut]), (pair[0][cut:], pair[1][cut:])
    return train, test


def read_text(path: Path, seq_len: int) -> tuple[Pair, Pair]:
    """(train, test) windows of a text file's UTF-8 bytes."""
    try:
        size = path.stat().st_size
        if size > MAX_VALUES:
            raise EvoproxyError(f"{path} holds {size:,} bytes, more than the {MAX_VALUES:,} a data source may hold")
        raw = path.read_bytes()
    except OSError as exc:
        raise EvoproxyError(f"cannot read text file {path} ({exception_line(exc)})") from None
    return _stream_parts(torch.frombuffer(bytearray(raw), dtype=torch.uint8).long(), seq_len, str(path))


def read_token_arrays(path: Path, seq_len: int) -> tuple[Pair, Pair]:
    """(train, test) windows of an .npz of `tokens`, or of `train_tokens` and `test_tokens`."""
    import numpy as np

    try:
        check_npz_headers(path)
        with np.load(path, allow_pickle=False) as blob:
            arrays = {k: blob[k] for k in blob.files}
    except EvoproxyError:
        raise
    except Exception as exc:  # numpy and zipfile raise many types for a damaged file
        raise EvoproxyError(f"cannot read {path} as .npz token arrays ({exception_line(exc)})") from None
    if "tokens" in arrays:
        return _parts(_checked(arrays["tokens"], f"{path} tokens"), seq_len, str(path))
    if not {"train_tokens", "test_tokens"} <= arrays.keys():
        raise EvoproxyError(f"{path}: give `tokens`, or `train_tokens` with `test_tokens`")
    parts = []
    for key in ("train_tokens", "test_tokens"):
        tokens = _checked(arrays[key], f"{path} {key}")
        parts.append(windows(tokens, seq_len) if tokens.dim() == 1 else _windowed(tokens, f"{path} {key}"))
    return parts[0], parts[1]


def shipped_text(seq_len: int) -> tuple[Pair, Pair]:
    """(train, test) windows of the text shipped in the package."""
    return _stream_parts(corpus_bytes().long(), seq_len, SHIPPED_TEXT)


def token_splits(options: DataSettings, parts: Callable[[], tuple[Pair, Pair]]) -> tuple[Callable, Callable, Callable]:
    """The loaders of the calibration, test and train splits of token windows read by `parts`:
    each part shuffled with the data seed, the calibration pool the first train windows."""
    cache: dict = {}

    def split() -> tuple[Pair, Pair]:
        if not cache:
            train, test = parts()
            for name, (inputs, _) in (("train", train), ("test", test)):
                if len(inputs) == 0:
                    raise EvoproxyError(f"the {name} part holds no window of --seq-len {options.seq_len}")
            shuffle = lambda pair, seed: (lambda o: (pair[0][o], pair[1][o]))(  # noqa: E731
                torch.randperm(len(pair[0]), generator=torch.Generator().manual_seed(seed))
            )
            cache["train"], cache["test"] = shuffle(train, options.seed + 1), shuffle(test, options.seed)
        return cache["train"], cache["test"]

    def calib() -> Pair:
        inputs, targets = split()[0]
        return inputs[: options.calib_images], targets[: options.calib_images]

    return calib, lambda: split()[1], lambda: split()[0]
