"""Click-through metrics (AUC, accuracy, F1) as sums that nodes can add up.

Federated evaluation aggregates sums and counts, never averages (DESIGN section 4). A node
reports :func:`ctr_sums` of its users' labelled rows: the confusion counts at threshold 0.5
and histograms of the predicted probabilities of positives and negatives; the server adds the
dictionaries key by key (:func:`add_sums`) and :func:`ctr_means` turns the total into AUC,
accuracy and F1 over *all* rows. (MKR and KGCN average per-batch AUC and F1 instead; over all
rows is the exact quantity those batch means approximate.)

AUC from histograms: a positive above a negative counts 1, one in the same bin 1/2, so the
error against the exact AUC is at most the share of positive-negative pairs that fall in a
common bin (small with the default 2,048 bins).
"""

from __future__ import annotations

import numpy as np

AUC_POS = "auc-pos/"
AUC_NEG = "auc-neg/"
CONFUSION = ("tp", "fp", "fn", "tn")


def sigmoid(scores: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function (float64)."""
    s = np.asarray(scores, dtype=np.float64)
    e = np.exp(-np.abs(s))
    return np.where(s >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


#: Probability bins of the AUC histograms. Every bin is always sent (Flower aggregates only
#: replies that carry the same metric keys), so the count bounds the message size.
BINS = 2048


def ctr_sums(scores: np.ndarray, labels: np.ndarray, bins: int = BINS) -> dict[str, float]:
    """Summable click-through statistics of labelled rows.

    Parameters
    ----------
    scores : numpy.ndarray
        Logits, one per row (the probability is their sigmoid).
    labels : numpy.ndarray
        0/1 labels aligned with ``scores``.
    bins : int
        Equal-width probability bins of the AUC histograms (the same on every node).

    Returns
    -------
    dict of str to float
        ``tp``, ``fp``, ``fn``, ``tn`` (predicted positive when the probability is >= 0.5),
        ``count`` (rows), and ``auc-pos/<k>`` / ``auc-neg/<k>``: positives / negatives whose
        probability falls in bin ``k = min(floor(p * bins), bins - 1)``, every bin (zeros too:
        every node's reply carries the same keys).

    Raises
    ------
    ValueError
        Mismatched lengths, labels other than 0/1, non-finite scores or ``bins < 1``.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if len(scores) != len(labels):
        raise ValueError(f"ctr_sums: {len(scores)} scores but {len(labels)} labels")
    if bins < 1:
        raise ValueError(f"ctr_sums: bins must be >= 1, got {bins}")
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError("ctr_sums: labels must be 0 or 1")
    if not np.all(np.isfinite(scores)):
        raise ValueError("ctr_sums: scores must be finite (NaN or inf logits)")
    positive = labels == 1
    prob = sigmoid(scores)
    predicted = prob >= 0.5
    out: dict[str, float] = {
        "tp": float(np.sum(predicted & positive)),
        "fp": float(np.sum(predicted & ~positive)),
        "fn": float(np.sum(~predicted & positive)),
        "tn": float(np.sum(~predicted & ~positive)),
        "count": float(len(labels)),
    }
    k = np.minimum((prob * bins).astype(np.int64), bins - 1)
    for prefix, mask in ((AUC_POS, positive), (AUC_NEG, ~positive)):
        counts = np.bincount(k[mask], minlength=bins)
        out.update({f"{prefix}{b}": float(c) for b, c in enumerate(counts.tolist())})
    return out


def add_sums(total: dict[str, float], part: dict[str, float]) -> dict[str, float]:
    """Key-wise sum of two sums dictionaries (a missing key counts 0); a new dictionary."""
    out = dict(total)
    for key, value in part.items():
        out[key] = out.get(key, 0.0) + float(value)
    return out


def ctr_means(sums: dict[str, float]) -> dict[str, float]:
    """AUC, accuracy and F1 from (summed) :func:`ctr_sums` dictionaries.

    Parameters
    ----------
    sums : dict of str to float
        Sums over any number of nodes; other keys are ignored.

    Returns
    -------
    dict of str to float
        ``auc`` (NaN without both positives and negatives), ``acc`` = (tp + tn) / count
        (NaN without rows) and ``f1`` = 2 tp / (2 tp + fp + fn) (0 without positives or
        positive predictions).
    """
    pos, neg = _histogram(sums, AUC_POS), _histogram(sums, AUC_NEG)
    n_pos, n_neg = sum(pos.values()), sum(neg.values())
    if n_pos > 0 and n_neg > 0:
        keys = sorted(set(pos) | set(neg))
        p = np.array([pos.get(k, 0.0) for k in keys])
        n = np.array([neg.get(k, 0.0) for k in keys])
        below = np.cumsum(n) - n  # negatives in strictly lower bins
        auc = float(np.sum(p * (below + 0.5 * n)) / (n_pos * n_neg))
    else:
        auc = float("nan")
    tp, fp, fn, tn = (float(sums.get(name, 0.0)) for name in CONFUSION)
    count = float(sums.get("count", tp + fp + fn + tn))
    denom = 2 * tp + fp + fn
    return {
        "auc": auc,
        "acc": (tp + tn) / count if count > 0 else float("nan"),
        "f1": 2 * tp / denom if denom > 0 else 0.0,
    }


def _histogram(sums: dict[str, float], prefix: str) -> dict[int, float]:
    return {
        int(key[len(prefix):]): float(value)
        for key, value in sums.items()
        if key.startswith(prefix) and value
    }
