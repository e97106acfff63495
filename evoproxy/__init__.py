"""evoproxy: evolve training-free proxies for mixed-precision quantization, then use them to
choose per-layer bit-widths and quantize a model.

The stages, in the order of the data flow, each importing only from those before it:
model → quant → stats → proxy → bench → evolve → allocation → allocators, with cli on top. The names below
are the public API, importable from here (`from evoproxy import Genome`); each is loaded on
first use, so that `import evoproxy` and `evoproxy --help` stay fast.
"""

from importlib import import_module

from .version import __version__

_API = {
    "model": [
        "METRICS",
        "MODELS",
        "DataSettings",
        "LayerInfo",
        "calibration_batch",
        "layer_registry",
        "load_model",
        "open_data",
        "split_attention",
    ],
    "quant": [
        "PtqEvaluator",
        "QatSettings",
        "QuantSettings",
        "WeightFormat",
        "adaround_model",
        "average_bits",
        "export_onnx",
        "lsq_model",
        "model_bops",
        "model_size_mb",
        "quantize_model",
        "train_qat",
    ],
    "stats": ["ModelStats", "StatsSettings", "compute_stats", "load_or_compute_stats"],
    "proxy": [
        "FunctionProxy",
        "Genome",
        "Proxy",
        "Simplification",
        "available_proxies",
        "get_proxy",
        "load_space",
        "simplify",
    ],
    "bench": ["Bench", "bench_stats", "load_bench", "rank_proxy"],
    "evolve": ["Evolution", "EvolutionSettings", "search_fitness"],
    "allocation": ["Allocation", "allocate", "build_problem", "proxy_problem"],
    "allocators": [
        "ALLOCATORS",
        "AdaqatSettings",
        "EdmipsSettings",
        "SearchData",
        "SearchResult",
        "SeamSettings",
        "SmpqSettings",
        "search_adaqat",
        "search_edmips",
        "search_seam",
        "search_smpq",
    ],
    "errors": ["EvoproxyError"],
}
_HOME = {name: stage for stage, names in _API.items() for name in names}

__all__ = ["__version__", *_HOME]


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'evoproxy' has no attribute {name!r}")
    value = getattr(import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})
