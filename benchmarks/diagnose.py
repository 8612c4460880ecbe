"""diagnose on a 10-output CNN at n = 100 (nK = 1000 output rows), default options.

Target: under 15 s on this machine (0.1's pipeline took 107-132 s with the same settings:
it built the eta*(B) curve, the rank-one bound and the Part III bounds by default, and
eigendecomposed the Gram matrix four times). The CNN (``SmallCNN``, channels (8, 16),
10 outputs) is trained for a few hundred SGD steps on 100 digits with cross-entropy, then
diagnosed twice: with the cross-entropy it was trained with (integer labels), and with the
half squared error against one-hot targets. Each run reports its stage timings; the
Gram matrix is eigendecomposed once per run. Writes benchmarks/results/diagnose.json.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch
from _common import write_result
from torch import nn

from companion.nets.data import load
from companion.nets.diagnosis import diagnose
from companion.nets.losses import HalfSquaredError
from companion.nets.models import make_model, num_parameters
from companion.nets.training import train

TARGET_SECONDS = 15.0


def main() -> int:
    torch.manual_seed(0)
    data = load("digits", n_per_class=10, seed=0)  # all 10 classes, one-hot targets
    X, onehot = data.X_train, data.y_train
    labels = onehot.argmax(dim=1)
    model = make_model("cnn", in_shape=(1, 8, 8), channels=(8, 16), out_dim=10, seed=0)
    train(model, (X, labels), lr=0.1, batch_size=20, steps=300, loss=nn.CrossEntropyLoss(),
          progress=False)  # fmt: skip
    model.eval()
    runs = {}
    for name, loss, targets in (
        ("cross-entropy", nn.CrossEntropyLoss(), labels),
        ("half squared error, one-hot", HalfSquaredError(), onehot),
    ):
        start = time.perf_counter()
        report = diagnose(model, (X, targets), lr=0.1, batch_size=20, loss=loss)
        seconds = time.perf_counter() - start
        runs[name] = {
            "seconds": seconds,
            "stages": report.timings,
            "ms_threshold": report.ms_threshold,
            "sharpness": report.sharpness,
            "hessian_sharpness": report.hessian_sharpness,
        }
        print(f"{name}: {seconds:.1f} s (target < {TARGET_SECONDS:g} s), eta* = "
              f"{report.ms_threshold:.4g}, stages "
              + ", ".join(f"{k} {v:.1f}" for k, v in report.timings.items()))  # fmt: skip
    worst = max(run["seconds"] for run in runs.values())
    met = worst < TARGET_SECONDS
    print(f"slowest diagnose: {worst:.1f} s against the target {TARGET_SECONDS:g} s: "
          f"{'met' if met else 'MISSED'}")  # fmt: skip
    path = write_result(
        "diagnose",
        {
            "n": data.n,
            "num_outputs": 10,
            "num_parameters": num_parameters(model),
            "runs": runs,
            "target_seconds": TARGET_SECONDS,
            "met": met,
            "reference_0_1_seconds": [107, 132],
        },
    )
    print(f"wrote {path}")
    assert np.isfinite(worst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
