"""Re-measure the first configurations of shipped benches on this machine, against the
accuracies stored in them (which may have been measured on a GPU).

    python benchmarks/bench_recheck.py fmnist-vgg-w234 fmnist-mixer-w234 [--configs 4]
"""

from __future__ import annotations

import argparse

import torch

from evoproxy.bench import bench_model, load_bench
from evoproxy.quant import PtqEvaluator, QuantSettings

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("benches", nargs="+")
parser.add_argument("--configs", type=int, default=4, help="configurations re-measured per bench (default 4)")
args = parser.parse_args()
torch.set_num_threads(2)
for ref in args.benches:
    bench = load_bench(ref)
    header = bench.header
    model, layers, source = bench_model(bench)
    settings = QuantSettings(header["act_bits"], header["quantizer"]["bn_recalibration"])
    evaluator = PtqEvaluator.on_data(model, layers, header["eval"]["first"], settings, source)
    diffs = [abs(evaluator.measure(list(e.bits)) - e.accuracy) for e in bench.entries[: args.configs]]
    print(
        f"{ref}: full precision {evaluator.fp_value():.2f} % here, {header['fp_accuracy']:.2f} % stored; "
        f"largest difference over {len(diffs)} configurations {max(diffs):.2f} points",
        flush=True,
    )
