"""The competing allocators (the papers' methods beside the proxies). Each takes a model, its
data's train part and an allocation problem (bit choices, fixed layers, budget), and gives a bit
configuration within the budget in the file format `evoproxy allocate` writes, so `evoproxy
quantize` and QAT evaluate every method alike.

    problem = build_problem(layers, np.zeros(len(layers)), size_mb=0.1)
    result = search_edmips(model, problem, source.training(), calib_images, EdmipsSettings(epochs=2))
    json.dumps(result.record(model="resnet20-fmnist"))
"""
from .edmips import (EdmipsEpoch, EdmipsResult, EdmipsSettings, MixedPrecisionWeight, edmips_supernet,
                     expected_size_mb, search_edmips)

__all__ = ["EdmipsEpoch", "EdmipsResult", "EdmipsSettings", "MixedPrecisionWeight", "edmips_supernet",
           "expected_size_mb", "search_edmips"]
