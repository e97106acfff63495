"""Flags that several commands share, and how they are read: the model, the data, the
statistics settings and lists of proxies (bits and budgets: bits.py; output files: files.py)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import EvoproxyError, ParameterError
from .bits import add_weight_format_args, weight_format_args

if TYPE_CHECKING:  # imported lazily at run time, so that `evoproxy --help` starts fast
    from ..stats import StatsSettings


# The flags of parameters whose flag is not `--` and the name with dashes, by (class or function, parameter).
FLAGS = {
    ("AdaqatSettings", "lam"): "--bitops-lambda",
    ("CSPSettings", "timeout_s"): "--candidate-timeout",
    ("DataSettings", "seed"): "--data-seed",
    ("DataSettings", "root"): "--data-root",
    ("DataSource.calibration", "n"): "--batch-size",
    ("DataSource.evaluation", "n"): "--eval-size",
    ("DataSource.reopen", "spec"): "--data",
    ("open_data", "spec"): "--data",
    ("build_bench", "bit_choices"): "--bits",
    ("build_bench", "n_configs"): "--configs",
    ("leaderboard", "k"): "--top",
}


def flag_of(owner: str, param: str) -> str:
    """The command-line flag of `owner`'s parameter `param`."""
    return FLAGS.get((owner, param), "--" + param.replace("_", "-"))


def flag_for(error: ParameterError) -> str:
    """The command-line flag of the parameter that `error` names."""
    return flag_of(error.owner, error.param)


class CommandParser(argparse.ArgumentParser):
    """A command's parser whose flags may be added when it is first used (`defer`): building the
    whole command line then loads no stage, so that `evoproxy --help` starts fast, while a command
    such as `allocate` takes its flags from a registry of the stage that it runs."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._deferred: list[Callable[[argparse.ArgumentParser], None]] = []

    def defer(self, add: Callable[[argparse.ArgumentParser], None]) -> None:
        """Have `add(self)` add flags before this parser first parses or formats its help."""
        self._deferred.append(add)

    def _add_deferred(self) -> None:
        while self._deferred:
            self._deferred.pop(0)(self)

    def parse_known_args(self, args=None, namespace=None):
        self._add_deferred()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._add_deferred()
        return super().format_help()


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="default",
        help="registry name (default, resnet20-fmnist, tinylm-kjv), package.module:function returning an "
        "nn.Module, or hf:PATH, a local transformers causal-LM folder",
    )
    p.add_argument("--weights", help="state_dict file to load into the model (overrides a registry model's checkpoint)")
    p.add_argument("--output", help="for a model that returns a tuple or dict: the index or key of its logits")
    p.add_argument(
        "--exclude",
        help="layers kept at full precision and out of the layer registry: comma-separated "
        "names or shell patterns (e.g. 'head.*,attn.*')",
    )
    p.add_argument("--device", default="cpu", help="torch device to compute on (cpu, cuda; default cpu)")


def add_data_args(p: argparse.ArgumentParser) -> None:
    """Where images come from (see evoproxy.model.sources): what `data_source` reads."""
    p.add_argument(
        "--data",
        help="fmnist (the shipped Fashion-MNIST), an ImageFolder folder, an .npz/.pt file of images and labels, "
        "package.module:function, torchvision:NAME; token data for a language model: kjv (the shipped text), "
        "a .txt file (its bytes) or an .npz of tokens (default: the model's own data, else fmnist); without data: "
        "distilled[:N], N images (default 256) distilled from the model's BatchNorm statistics",
    )
    p.add_argument(
        "--eval-data",
        help="with --data distilled[:N]: the real data whose test part measures accuracy and gives the input shape "
        "(default: the model's own data, else fmnist)",
    )
    p.add_argument(
        "--seq-len", type=int, default=256, help="token data: tokens of each window the model reads (default 256)"
    )
    p.add_argument(
        "--calib-images",
        type=int,
        default=512,
        help="calibration images drawn from the data's train part (default 512)",
    )
    p.add_argument("--data-seed", type=int, default=0, help="seed of the data's shuffles and train/test cut")
    p.add_argument("--image-size", type=int, help="folders: resize every image to this square size")
    p.add_argument("--mean", help="per-channel mean subtracted from images in [0, 1] (e.g. 0.485,0.456,0.406)")
    p.add_argument("--std", help="per-channel standard deviation images are divided by (e.g. 0.229,0.224,0.225)")
    p.add_argument("--data-root", help="torchvision:NAME: the folder that holds the dataset (nothing is downloaded)")


def _floats(text: str | None, flag: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise EvoproxyError(f"{flag} takes comma-separated numbers such as 0.5,0.5,0.5; got {text!r}") from None


def data_source(args):
    """The DataSource of the flags `add_data_args` adds. Distilled images are distilled from the model of
    the model flags (once: cached with the statistics) and evaluated on --eval-data."""
    from ..model import DISTILLED, DataSettings, default_data, load_model, open_data

    options = DataSettings(
        args.data_seed,
        args.calib_images,
        args.image_size,
        _floats(args.mean, "--mean"),
        _floats(args.std, "--std"),
        args.data_root,
        args.seq_len,
    )
    ref = getattr(args, "model", "default")
    args.data = args.data or default_data(ref)  # messages name the data read
    if args.data.partition(":")[0] != DISTILLED:
        if args.eval_data is not None:
            raise EvoproxyError("--eval-data applies to --data distilled[:N] only: leave it out, or give it as --data")
        return open_data(args.data, options)
    from ..files import cache_dir

    args.eval_data = args.eval_data or default_data(ref)
    model, _ = load_model(ref, getattr(args, "weights", None), getattr(args, "output", None))
    return open_data(
        args.data,
        options,
        model=model,
        evaluate_on=open_data(args.eval_data, options),
        cache=cache_dir(getattr(args, "cache_dir", None)),
        log=lambda msg: print(f"[distill] {msg}", file=sys.stderr, flush=True),
    )


def evaluated_on(args) -> str:
    """The data accuracy is measured on, as messages name it: --data, or --eval-data beside distilled images."""
    return f"{args.eval_data} (calibrated on {args.data})" if getattr(args, "eval_data", None) else args.data


def load_user_model(args, source):
    """The model of --model/--weights/--output/--exclude, its canonical name and its layer
    registry for the inputs of `source`."""
    from ..model import layer_registry, load_model

    model, name = load_model(args.model, args.weights, args.output)
    data_defaults(args, source, model)
    layers = layer_registry(model, source.input_shape, exclude_patterns(args.exclude), source.input_dtype)
    source.check_classes(model)
    return model, name, layers


def exclude_patterns(text: str | None) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip()) if text else ()


def data_defaults(args, source, model) -> None:
    """Fill the flags whose default depends on the data. For a language model (token data): the output
    head at full precision (--exclude), weights only (--act-bits 32: activations stay in float) and no
    layer at fixed bits (--fixed none), as the quantization tools for language models do, and
    TEXT_EVAL_SIZE test windows; for a classifier: every layer, 8-bit activations, the first and last
    layers at --fixed-bits, and up to EVAL_SIZE test images."""
    from ..model import quantizable_modules

    text = source.is_text
    if args.exclude is None and text:
        args.exclude = quantizable_modules(model)[-1][0]
    if getattr(args, "act_bits", "") is None:
        args.act_bits = 32 if text else 8
    if getattr(args, "fixed", "") is None:
        args.fixed = "none" if text else "first,last"
    if getattr(args, "eval_size", "") is None and text:
        args.eval_size = min(TEXT_EVAL_SIZE, len(source.evaluation()[0]))


STATS_BATCH, TEXT_STATS_BATCH = 64, 8  # stats.STATS_BATCH, stats.TEXT_STATS_BATCH: the help must not import the stage
EVAL_SIZE = 2000  # test images measured on where --eval-size is not given (all of them where there are fewer)
TEXT_EVAL_SIZE = 32  # test windows of a language model (8192 tokens of 256): a forward pass costs far more per sample


def add_stats_args(p: argparse.ArgumentParser, training: bool = False) -> None:
    """Calibration batch, statistics settings and cache: what `stats_settings` and `model_stats` read.
    With `training` (a command that also trains: `allocate --method edmips`...) --batch-size and
    --seed serve both, and --batch-size is None unless given (the caller picks the default)."""
    add_data_args(p)
    if training:
        p.add_argument(
            "--batch-size",
            type=int,
            help=f"proxies: calibration images the statistics are computed on (default {STATS_BATCH}, or "
            f"{TEXT_STATS_BATCH} token windows; all of a smaller calibration pool); "
            "search methods: training batch size (default 128)",
        )
    else:
        p.add_argument(
            "--batch-size",
            type=int,
            help=f"calibration images the statistics are computed on (default {STATS_BATCH}, or "
            f"{TEXT_STATS_BATCH} token windows; all of a smaller calibration pool)",
        )
    p.add_argument("--hutchinson-samples", type=int, default=64, help="most Hutchinson samples (default 64)")
    p.add_argument("--hutchinson-tol", type=float, default=1e-3, help="relative trace change that stops sampling")
    p.add_argument(
        "--power-iters", type=int, default=20, help="most Lanczos steps per layer for the top eigenvalue (default 20)"
    )
    p.add_argument("--power-tol", type=float, default=1e-3, help="relative eigenvalue change that stops iterating")
    p.add_argument(
        "--hessian-seconds",
        type=float,
        help="wall-clock bound of the Hessian: half for Hutchinson samples, half for the top eigenvalues, at least one "
        "of each (default: none; the result then depends on the machine's speed)",
    )
    add_perturb_around_arg(p)
    p.add_argument(
        "--act-max-elems",
        type=int,
        default=65536,
        help="cap on stored activation elements per layer (spatial subsampling; default 65536)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the statistics' random probes"
        + (" (proxies) or of the training subset and shuffles (search methods)" if training else "")
        + " (default 0)",
    )
    p.add_argument("--cache-dir", help="statistics cache (default $EVOPROXY_CACHE_DIR or ~/.cache/evoproxy)")
    add_weight_format_args(p)


def add_perturb_around_arg(p) -> None:
    """--perturb-around, of every command that measures the output perturbations."""
    p.add_argument(
        "--perturb-around",
        type=int,
        metavar="BITS",
        help="measure each layer's output perturbations (kl, output-mse, sqnr; MSE, KL in a search) with every other "
        "layer at BITS bits, as at a budget near BITS bits a weight (default: every other layer in float, as the "
        "tools measure them; a proxy evolved with it is measured as its run was)",
    )


def stats_settings(args) -> StatsSettings:
    """The StatsSettings of the flags `add_stats_args` adds."""
    from ..stats import StatsSettings

    return StatsSettings(
        args.hutchinson_samples,
        args.hutchinson_tol,
        args.power_iters,
        args.power_tol,
        args.act_max_elems,
        args.seed,
        exclude_patterns(args.exclude),
        args.output,
        **weight_format_args(args),
        hessian_seconds=args.hessian_seconds,
        perturb_around=args.perturb_around,
    )


def model_stats(
    args, settings: StatsSettings | None = None, source=None, use_cache: bool = True, quiet: bool = False, proxies=None
) -> tuple:
    """The model of the model flags, its canonical name, its statistics on the first --batch-size
    calibration images of the data flags (or of `source`) with `settings` or else those of the
    stats flags, and whether they came from the cache (else they are computed, with progress on
    stderr). Given the `proxies` they are for, the Hessian and the output perturbations are computed
    only if one reads them."""
    from dataclasses import replace

    from ..model import load_model
    from ..proxy import needs_hessian, needs_perturbations, perturbations_around
    from ..stats import default_batch, load_or_compute_stats

    source = source or data_source(args)
    model, name = load_model(args.model, args.weights, args.output)
    data_defaults(args, source, model)
    if source.is_text:  # token ids beyond the vocabulary would fail inside the embedding, before any wording
        source.check_classes(model)
    if args.batch_size is None:
        args.batch_size = default_batch(source)
    images, labels = source.calibration(args.batch_size)
    settings = settings or stats_settings(args)
    if proxies is not None:
        settings = replace(
            settings,
            hessian=any(needs_hessian(p) for p in proxies),
            perturbations=any(needs_perturbations(p) for p in proxies),
            perturb_around=perturbations_around(proxies, settings.perturb_around),
        )
    log = (lambda msg: None) if quiet else (lambda msg: print(f"[stats] {msg}", file=sys.stderr))
    stats, hit = load_or_compute_stats(
        model, images, labels, name, settings, args.cache_dir, use_cache, log, args.device
    )
    source.check_classes(model)  # after the statistics, which word a model that does not run on the data
    return model, name, stats, hit


def resolve_proxies(spec: str) -> list:
    from ..proxy import available_proxies, get_proxy

    names = available_proxies() if spec == "all" else [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise EvoproxyError("--proxies is empty: give all, names separated by commas, or a proxy .json file")
    return [get_proxy(n) for n in names]
