"""The threshold that admits a given share of impostor pairs (numpy only, no pareidolia).

Shared by ``tools/calibrate_thresholds.py`` (the zoo's table) and
``benchmarks/external_judge.py`` (whose scoring step runs in a venv without torch): the impostor
score quantile at 1 − FAR where the pairs allow it (at least 5 above it), else a normal fit to
the impostor scores (mean + z·std), at least their maximum.
"""

from __future__ import annotations

import statistics

import numpy as np

Z = {"0.1": 1.2816, "0.01": 2.3263, "0.001": 3.0902}


def threshold_for(scores: np.ndarray, far: float, metric: str) -> tuple[float, str]:
    """Threshold admitting ``far`` of impostor ``scores``, and how it was obtained."""
    n = len(scores)
    sign = 1.0 if metric == "cosine" else -1.0  # work on "higher = more similar"
    s = sign * scores
    fit = statistics.fmean(s) + Z[str(far)] * statistics.pstdev(s)
    if n * far >= 5:
        q = float(np.quantile(s, 1.0 - far))
        value, how = q, f"calibrated: impostor quantile at 1 − {far} over {n} pairs"
    else:
        q = float(s.max())
        value, how = (
            max(q, fit),
            f"calibrated: normal fit to {n} impostor pairs (mean + {Z[str(far)]}·std), at least their maximum",
        )
    return sign * value, how
