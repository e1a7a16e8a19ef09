"""The measurements behind calibration's method and the operating-point defaults (run by hand, ~3 min):

    PYTHONPATH=. python bench/calibration.py [share of frauds kept, default 0.08: about 0.26% fraud]

Four networks pretrained like `perennial pretrain` on one simulated history, differing only by seed
(versions as good as each other), each calibrated on the validation split (the later 20%), judged on
the six following days: Platt against isotonic calibration; then, between pairs of versions at the
threshold where the first alerts on 0.5% of events, the alert volume change and negative flip rate.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from sklearn.isotonic import IsotonicRegression

from learners.calibration import expected_calibration_error, fit_platt, log_loss
from learners.model import TabularNet, state_numpy
from learners.operating import alert_rate, negative_flip_rate, relative_change, threshold_for_alert_rate
from learners.pretrain import fit
from learners.quality import average_precision
from learners.schema import FeatureSchema
from learners.scoring import ScoringModel
from streams.simulator import FEATURES, Simulator


def thinned(tx, keep: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    kept = (tx.label == 0) | (rng.random(len(tx.label)) < keep)
    return tx.features[kept], tx.label[kept]


def main(keep: float) -> None:
    sim, rng = Simulator(seed=21, customers=1500, terminals=600), np.random.default_rng(5)
    x, y = thinned(sim.generate(0, 30), keep, rng)
    tx, ty = thinned(sim.generate(30, 36), keep, rng)
    cut = int(len(y) * 0.8)
    schema = FeatureSchema.fit(FEATURES, x[:cut])
    print(f"validation: {len(y) - cut} events, {int(y[cut:].sum())} frauds; later days: {len(ty)} events, {int(ty.sum())} frauds")
    served = []
    for seed in range(4):
        torch.manual_seed(seed)
        net = TabularNet(len(FEATURES), hidden=64)
        fit(net, schema.transform(x[:cut]), y[:cut], 4, seed)
        network = ScoringModel(f"seed{seed}", schema, state_numpy(net.state_dict()))
        val, later = network.score(x[cut:]), network.score(tx)
        platt = fit_platt(val, y[cut:])
        isotonic = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(val, y[cut:])
        for name, s in (("raw", later), ("platt", platt.apply(later)), ("isotonic", isotonic.predict(later))):
            print(f"seed {seed} {name:8s} ECE {expected_calibration_error(ty, s):.5f} log-loss {log_loss(ty, s):.5f} "
                  f"AP {average_precision(ty, s):.4f} distinct scores {len(np.unique(s))}")
        served.append(ScoringModel(network.version, schema, network.weights, calibration=platt))
    for a, b in ((0, 1), (1, 2), (2, 3), (0, 3)):
        sa, sb = served[a].score(tx), served[b].score(tx)
        t = threshold_for_alert_rate(sa, 0.005)
        ra, rb = alert_rate(sa, t), alert_rate(sb, t)
        print(f"seed {a} -> {b} at {t:.3f}: alerts {ra.alerts} -> {rb.alerts} ({relative_change(ra, rb):+.0%}), "
              f"{negative_flip_rate(ty, sa, sb, t)}")


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 0.08)
