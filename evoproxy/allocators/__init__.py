"""The competing allocators (the papers' methods beside the proxies), one registry of them,
`ALLOCATORS`. Each takes a model, an allocation problem (bit choices, fixed layers, budget) and
its data (training, validation and calibration images), and gives a `SearchResult`: a bit
configuration within the budget, whose `record` is the file that `evoproxy allocate` writes, so
`evoproxy quantize` and QAT evaluate every method alike. SEAM and SMPQ run on EdMIPS's supernet and
share its projection onto the budget; AdaQAT learns fractional bit-widths during QAT and meets the
budget by the same ILP (the nearest configuration within it).

    method = ALLOCATORS["seam"]
    problem = build_problem(layers, np.zeros(len(layers)), size_mb=0.1, fixed={0: (8, 8), 21: (8, 8)})
    data = method.search_data(source.training(), calib_images, seed=0)  # SEAM's 4 %, as the CLI draws it
    result = method.search(model, problem, data, method.settings(epochs=2), print)
    json.dumps(result.record(model="resnet20-fmnist"))

Adding a method takes one new module and one line in registry.py:
1. In evoproxy/allocators/mine.py, a settings class that derives from `TrainingSettings` (or from
   another method's settings) and holds all its knobs, each a `setting(default, help)`, with their
   constraints in `CONSTRAINTS` (evoproxy.params: by parameter name, never by flag);
2. there too, `search_mine(model, problem, data, settings, log) -> SearchResult`, whose
   `allocation` meets the budgets (project `found` onto them as EdMIPS and AdaQAT do), and
   `ALLOCATOR = Allocator("Mine", MineSettings, search_mine, "how it works, in a sentence")` with
   its policy: the share of the training images it searches on, the validation images it reads,
   its activation bit choices;
3. in registry.py, `"mine": mine.ALLOCATOR`.
`evoproxy allocate --method mine` (and `evoproxy mpq`) then takes it, with one flag per setting
(`--` and the name with dashes; evoproxy.cli.args.FLAGS names any other), and prints its table.
Shared building blocks live in their own modules beside the methods, for a new method to reuse:
supernet.py (EdMIPS's supernet and its expected cost, which SEAM and SMPQ search on too) and
fractional_bits.py (AdaQAT's fractional bit-widths and the network that quantizes at them).
"""

from .adaqat import AdaqatEpoch, AdaqatSettings, search_adaqat
from .edmips import CrossEntropyObjective, EdmipsEpoch, EdmipsSettings, search_edmips
from .fractional_bits import BitSelect, FractionalBits, adaqat_network
from .interface import Allocator, SearchData, SearchResult, TrainingSettings, search_split, setting
from .registry import ALLOCATORS
from .seam import LargeMarginObjective, SeamSettings, large_margin_loss, search_seam
from .smpq import ShapleyAlphaRule, SmpqSettings, search_smpq, shapley_permutations
from .supernet import BitMixer, edmips_supernet, expected_cost, expected_size_mb, option_probabilities

__all__ = [
    "ALLOCATORS",
    "AdaqatEpoch",
    "AdaqatSettings",
    "Allocator",
    "BitMixer",
    "BitSelect",
    "CrossEntropyObjective",
    "EdmipsEpoch",
    "EdmipsSettings",
    "FractionalBits",
    "LargeMarginObjective",
    "SearchData",
    "SearchResult",
    "SeamSettings",
    "ShapleyAlphaRule",
    "SmpqSettings",
    "TrainingSettings",
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
    "search_split",
    "setting",
    "shapley_permutations",
]
