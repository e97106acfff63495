"""The competing allocators (the papers' methods beside the proxies). Each takes a model, its
data's train part and an allocation problem (bit choices, fixed layers, budget), and gives a bit
configuration within the budget in the file format `evoproxy allocate` writes, so `evoproxy
quantize` and QAT evaluate every method alike. SEAM and SMPQ run on EdMIPS's supernet and share
its projection onto the budget; AdaQAT learns fractional bit-widths during QAT and meets the budget
by the same ILP (the nearest configuration within it).

    problem = build_problem(layers, np.zeros(len(layers)), size_mb=0.1)
    result = search_edmips(model, problem, source.training(), calib_images, EdmipsSettings(epochs=2))
    json.dumps(result.record(model="resnet20-fmnist"))
"""

from .adaqat import AdaqatEpoch, AdaqatResult, AdaqatSettings, BitSelect, FractionalBits, adaqat_network, search_adaqat
from .edmips import (
    BitMixer,
    CrossEntropyObjective,
    EdmipsEpoch,
    EdmipsResult,
    EdmipsSettings,
    edmips_supernet,
    expected_cost,
    expected_size_mb,
    option_probabilities,
    search_edmips,
)
from .seam import LargeMarginObjective, SeamSettings, large_margin_loss, search_seam
from .smpq import ShapleyAlphaRule, SmpqSettings, search_smpq, shapley_permutations

__all__ = [
    "AdaqatEpoch",
    "AdaqatResult",
    "AdaqatSettings",
    "BitMixer",
    "BitSelect",
    "CrossEntropyObjective",
    "EdmipsEpoch",
    "EdmipsResult",
    "EdmipsSettings",
    "FractionalBits",
    "LargeMarginObjective",
    "SeamSettings",
    "ShapleyAlphaRule",
    "SmpqSettings",
    "adaqat_network",
    "edmips_supernet",
    "expected_cost",
    "expected_size_mb",
    "large_margin_loss",
    "option_probabilities",
    "search_adaqat",
    "search_edmips",
    "search_seam",
    "search_smpq",
    "shapley_permutations",
]
