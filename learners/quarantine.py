"""Is a quarantined round a genuine burst or poison? Ask whether its labels can be learned.

The label-rate guard quarantines a round whose fraud rate is implausible. A card-testing attack and
a flood of fake fraud labels both raise the rate; what tells them apart is that a real pattern can be
learned: a model fine-tuned on half of the round predicts the frauds of the other half, while random
fake-fraud labels cannot be predicted from the features. So the round is cross-fitted: the served
version's weights are fine-tuned on each half and score the other half, and these out-of-fold scores
are compared, paired, with the served version's own scores on the same events. If they are better
with the gates' confidence (by at least ``min_gain`` AP), the round is released into training (and
its held-out share into the held-out set), and the release is logged with its figures; otherwise it
stays kept until an operator releases it. Releasing is not serving: a candidate trained on a
released round still has to pass the gates, and its probation, on the events that follow.

Examples
--------
>>> import numpy as np, torch
>>> from learners.model import TabularNet, state_numpy
>>> from learners.scoring import ScoringModel
>>> from learners.schema import FeatureSchema
>>> rng = np.random.default_rng(0); _ = torch.manual_seed(0)
>>> x = rng.normal(size=(3000, 4)).astype(np.float32)
>>> schema = FeatureSchema.fit(("a", "b", "c", "d"), x)
>>> served = ScoringModel("v1", schema, state_numpy(TabularNet(4, hidden=16).state_dict()))
>>> burst = ((x[:, 0] > 1.2) & (x[:, 1] > 0.5)).astype(np.int64)   # a pattern: learnable
>>> learnable(served, x, burst, confidence=0.9).released
True
>>> noise = (rng.random(3000) < burst.mean()).astype(np.int64)      # random labels at the same rate
>>> learnable(served, x, noise, confidence=0.9).released
False
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from learners.network import trainable
from learners.pretrain import fit
from learners.scoring import ScoringModel
from learners.stats import paired_ap_difference


@dataclass(frozen=True)
class Learnability:
    released: bool
    figures: dict[str, Any]


STEPS = 40000
"""Events a fold's fine-tuning passes over (so many epochs of a small round, few of a large one)."""


def learnable(served: ScoringModel, x: np.ndarray, y: np.ndarray, *, confidence: float, min_gain: float = 0.05,
              seed: int = 0) -> Learnability:
    """Cross-fit the round on two halves and compare the out-of-fold scores with the served version's."""
    frauds = int(y.sum())
    if frauds < 4 or frauds == len(y):
        return Learnability(False, {"frauds": frauds, "events": len(y), "reason": "too few frauds to tell"})
    rng = np.random.default_rng(seed)
    half = rng.random(len(y)) < 0.5
    z = served.schema.transform(x)
    out_of_fold = np.zeros(len(y))
    epochs = int(np.clip(STEPS / len(y), 2, 20))
    for fold in (half, ~half):
        net = trainable(served)
        fit(net, z[~fold], y[~fold], epochs, seed, batch_size=64)
        net.eval()
        with torch.inference_mode():
            out_of_fold[fold] = torch.softmax(net(torch.from_numpy(z[fold])), 1)[:, 1].numpy()
    c = paired_ap_difference(y, out_of_fold, served.score(x), confidence=confidence, seed=seed)
    figures = {"frauds": frauds, "events": len(y), "cross_fitted_ap": c.a, "served_ap": c.b, "difference": c.diff,
               "low": c.low, "high": c.high, "p_gain": c.p_above(min_gain), "min_gain": min_gain}
    return Learnability(c.p_above(min_gain) >= confidence, figures)
