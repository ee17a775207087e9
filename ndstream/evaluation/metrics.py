"""Detection metrics, computed by scikit-learn."""

from __future__ import annotations

import numpy as np

__all__ = ["FPR_AT", "detection_metrics"]

FPR_AT = 0.05  # the false-positive rate at which the true-positive rate is reported


def detection_metrics(benign: np.ndarray, attacked: np.ndarray) -> tuple[float, float]:
    """AUROC and the TPR at 5 % FPR of scores where attacked inputs should score higher.

    Parameters
    ----------
    benign, attacked
        Scores of the negatives and the positives.

    Returns
    -------
    tuple of float
        ``(auroc, tpr)``; NaN where either side is empty.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    if len(benign) == 0 or len(attacked) == 0:
        return float("nan"), float("nan")
    y, s = _labelled(benign, attacked)
    fpr, tpr, _ = roc_curve(y, s)
    return float(roc_auc_score(y, s)), float(tpr[fpr <= FPR_AT].max())


def _labelled(benign: np.ndarray, attacked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.r_[np.zeros(len(benign)), np.ones(len(attacked))]
    # A score that is NaN (no values to compare with) ranks as least suspicious, not dropped.
    s = np.nan_to_num(np.r_[benign, attacked].astype(np.float64), nan=-np.inf)
    s = np.where(np.isneginf(s), np.finfo(np.float64).min, s)
    s = np.where(np.isposinf(s), np.finfo(np.float64).max, s)
    return y, s
