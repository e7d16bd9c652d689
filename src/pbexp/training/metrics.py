"""Metrics over a whole split (never averaged over batches)."""

from __future__ import annotations

import math

import numpy as np


def perplexity(total_nll: float, total_tokens: int) -> float:
    """exp of the mean per-token negative log-likelihood (natural log); inf when that overflows."""
    mean = total_nll / total_tokens
    return math.exp(mean) if mean < 700 else math.inf


def classification_metrics(y_true, y_pred, classes: list[str]) -> dict:
    """Accuracy, macro precision/recall/F1, the same per class, and the confusion matrix."""
    # imported here: scikit-learn costs ~1.6 s at start-up, and language-model runs never need it
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = list(range(len(classes)))
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=None, zero_division=0)
    out = {
        "acc": float(accuracy_score(y_true, y_pred)),
        "precision": float(p.mean()),
        "recall": float(r.mean()),
        "f1": float(f.mean()),
    }
    for i, name in enumerate(classes):
        out[f"precision_{name}"], out[f"recall_{name}"], out[f"f1_{name}"] = float(p[i]), float(r[i]), float(f[i])
    out["confusion"] = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    return out
