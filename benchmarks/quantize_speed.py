"""Seconds per QAT epoch (median of several runs) for the default model on a fixed subset of the
shipped Fashion-MNIST, and what that makes an epoch over the 60 000 training images; then seconds
per AdaRound block (one run, default settings) on the shipped calibration images.

    python benchmarks/quantize_speed.py [--images 2048] [--repeats 3] [--threads 2] [--device cpu]
                                        [--adaround-iters 1000]

The subset is the first --images of the shipped test split (the training split does not ship;
speed does not depend on which images are used). Bits: 8 for the first and last layer, 4 for
the others, 8-bit activations; SGD, batch 128. Each run starts from the PTQ-initialised model
and trains one epoch; only training is timed (not the per-epoch evaluation). AdaRound reconstructs
every block (the stem convolution, nine residual blocks, the classifier) with the same bits; each
block's time includes collecting its inputs and targets on the calibration images.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from evoproxy.model import check_device, layer_registry, load_model, open_data
from evoproxy.quant import AdaRoundSettings, QatSettings, QuantSettings, adaround_model, lsq_model, train_qat

TRAIN_SPLIT = 60_000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2048, help="training images per epoch (default 2048)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--adaround-iters",
        type=int,
        default=AdaRoundSettings.iters,
        help=f"AdaRound iterations per block (default {AdaRoundSettings.iters})",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = check_device(args.device)

    model, name = load_model("default")
    model = model.to(device)
    layers = layer_registry(model, (1, 28, 28))
    bits = [8] + [4] * (len(layers) - 2) + [8]
    source = open_data()
    images, labels = source.evaluation(args.images)
    evaluation = tuple(t.to(device) for t in source.evaluation(256))
    calib = source.calibration()[0].to(device)
    settings = QatSettings(epochs=1, batch_size=128)
    times = []
    for _ in range(args.repeats):
        qmodel = lsq_model(model, layers, bits, 8, calib)
        times.append(train_qat(qmodel, model, (images, labels), evaluation, settings, log=lambda m: None)[0].train_s)
    median = statistics.median(times)
    print(
        f"{name}, W8/4…4/8 A8, batch {settings.batch_size}, {args.images} images, {args.threads} thread(s) on "
        f"{device}: {median:.2f} s per epoch (median of {args.repeats}; runs {', '.join(f'{t:.2f}' for t in times)}), "
        f"{1000 * median / args.images:.2f} ms per image, about {median * TRAIN_SPLIT / args.images / 60:.1f} min "
        f"per epoch of the {TRAIN_SPLIT} training images"
    )
    ada = AdaRoundSettings(iters=args.adaround_iters)
    _, records = adaround_model(model, layers, bits, calib, ada, QuantSettings(8), log=lambda m: None)
    seconds = [r.seconds for r in records]
    print(
        f"{name}, W8/4…4/8 A8, AdaRound {ada.iters} iterations per block, batch {ada.batch_size}, {len(calib)} "
        f"calibration images, {args.threads} thread(s) on {device}: {sum(seconds):.1f} s for {len(records)} blocks "
        f"(median {statistics.median(seconds):.2f} s per block; "
        f"{', '.join(f'{r.name} {r.seconds:.1f}' for r in records)})"
    )


if __name__ == "__main__":
    main()
