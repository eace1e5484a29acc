"""The learned router's classifier: L2-regularized logistic regression on prompt embeddings.

It predicts, from the prompt alone, whether the cheap back end's answer will be good enough (label 1), as
RouteLLM's classifier routers do (Ong et al., 2024), in their simplest form. Features are the packaged MiniLM's
L2-normalized 384-d sentence embeddings (`temper.embeddings.Embedder.load().embed(texts)`); labels come from
logged outcomes (the cheap model's answer scored by the task's checker, or judged against the strong one's).

The fit is Newton's method in float64 numpy on the mean log-loss plus ``l2 / 2 * ||w||^2`` (the bias is not
penalized), on features centered by their training mean: a strictly convex problem with a unique optimum, so a fit
is deterministic and takes well under a second for thousands of prompts. The model saves as JSON (floats written
with `repr`, so a save/load round trip is exact); no pickle.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

FORMAT = 1
L2_GRID = (1e-3, 1e-2, 1e-1, 1.0)  # the penalties `cross_val_predict` chooses from when given no single one


@dataclass
class RouterModel:
    """p(cheap answer good enough | prompt) = sigmoid((x - mean) . weight + bias)."""

    weight: np.ndarray  # (d,) float64
    bias: float
    mean: np.ndarray  # (d,) float64: the training features' mean, subtracted before the dot product
    l2: float  # the penalty it was fitted with (kept for the record)

    @classmethod
    def fit(cls, embeddings, labels, l2: float = 1e-2, epochs: int = 50, tol: float = 1e-10,
            sample_weight=None) -> RouterModel:
        """Fit by Newton steps until the largest gradient entry is below `tol` or `epochs` steps are done.

        Args:
            embeddings: (n, d) features, numpy or torch.
            labels: (n,) in {0, 1}; 1 means the cheap back end's answer was good enough. Both classes must occur.
            l2: weight of the ridge penalty on the mean log-loss scale; must be > 0.
            epochs: most Newton steps (each one is a full-batch step; 10 to 20 usually reach `tol`).
            sample_weight: optional (n,) non-negative weights (e.g. to balance the classes).
        """
        x, y = _features(embeddings), _labels(labels)
        if len(x) != len(y):
            raise ValueError(f"{len(x)} embeddings but {len(y)} labels")
        if not l2 > 0:
            raise ValueError(f"l2 must be > 0, got {l2}")
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        if y.min() == y.max():
            raise ValueError(f"labels must contain both 0 and 1, got only {int(y[0])}")
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if w.shape != y.shape or (w < 0).any() or w.sum() <= 0:
            raise ValueError("sample_weight must be (n,) non-negative with a positive sum")
        w = w / w.sum()
        mean = (w[:, None] * x).sum(0)
        xb = np.concatenate([x - mean, np.ones((len(x), 1))], axis=1)  # (n, d + 1): the last column is the bias
        penalty = np.full(xb.shape[1], l2)
        penalty[-1] = 0.0  # NOTE: a penalized bias would pull every prediction towards 0.5
        theta = np.zeros(xb.shape[1])
        theta[-1] = _logit(float((w * y).sum()))  # start from the base rate: the first step is then a small one
        for _ in range(epochs):
            p = _sigmoid(xb @ theta)
            grad = xb.T @ (w * (p - y)) + penalty * theta
            if np.abs(grad).max() < tol:
                break
            hess = (xb * (w * p * (1 - p))[:, None]).T @ xb + np.diag(penalty)
            # NOTE: with an unpenalized bias the Hessian is singular only if p(1-p) vanishes for every row
            # (a perfectly separated fit); the tiny ridge keeps the solve defined there
            theta -= np.linalg.solve(hess + 1e-12 * np.eye(len(theta)), grad)
        return cls(weight=theta[:-1].copy(), bias=float(theta[-1]), mean=mean, l2=float(l2))

    def predict_proba(self, embeddings) -> np.ndarray:
        """(n,) probabilities that the cheap back end's answer is good enough."""
        x = _features(embeddings)
        if x.shape[1] != len(self.weight):
            raise ValueError(f"embeddings have {x.shape[1]} dimensions, the router was fitted on {len(self.weight)}")
        return _sigmoid((x - self.mean) @ self.weight + self.bias)

    def save(self, path: str | os.PathLike) -> None:
        """Write JSON; every float is written exactly (shortest repr of the float64)."""
        body = {"format": FORMAT, "kind": "logistic_regression", "dim": len(self.weight), "l2": self.l2,
                "bias": self.bias, "weight": self.weight.tolist(), "mean": self.mean.tolist()}
        with open(path, "w") as f:
            json.dump(body, f)

    @classmethod
    def load(cls, path: str | os.PathLike) -> RouterModel:
        with open(path) as f:
            body = json.load(f)
        if body.get("format") != FORMAT or body.get("kind") != "logistic_regression":
            raise ValueError(f"{path}: not a router model of format {FORMAT} "
                             f"(format {body.get('format')!r}, kind {body.get('kind')!r})")
        weight, mean = np.asarray(body["weight"], dtype=np.float64), np.asarray(body["mean"], dtype=np.float64)
        if weight.shape != (body["dim"],) or mean.shape != (body["dim"],):
            raise ValueError(f"{path}: weight and mean must both have dim={body['dim']} entries")
        return cls(weight=weight, bias=float(body["bias"]), mean=mean, l2=float(body["l2"]))


def cross_val_predict(embeddings, labels, folds: int = 5, seed: int = 0,
                      l2: float | Sequence[float] = L2_GRID, epochs: int = 50) -> np.ndarray:
    """Out-of-fold probabilities: each prompt is scored by a router that never saw it.

    Folds are stratified by label and drawn with `seed`. Given a sequence of penalties, each outer fold picks
    its own by an inner cross-validation (log-loss) on its training part only, so the returned
    probabilities stay honest (nested cross-validation); given one float, it is used everywhere.
    """
    x, y = _features(embeddings), _labels(labels)
    fold_of = stratified_folds(y, folds, seed)
    out = np.empty(len(y))
    for k in range(folds):
        train, test = fold_of != k, fold_of == k
        penalty = l2 if isinstance(l2, (int, float)) else select_l2(x[train], y[train], l2, folds, seed + 1, epochs)
        out[test] = RouterModel.fit(x[train], y[train], l2=penalty, epochs=epochs).predict_proba(x[test])
    return out


def select_l2(embeddings, labels, grid: Sequence[float], folds: int = 5, seed: int = 0, epochs: int = 50) -> float:
    """The penalty in `grid` with the lowest out-of-fold log-loss (ties: the larger, i.e. simpler, model)."""
    x, y = _features(embeddings), _labels(labels)
    losses = {c: log_loss(y, cross_val_predict(x, y, folds, seed, float(c), epochs)) for c in sorted(grid)}
    best = min(losses.values())
    return max(c for c, v in losses.items() if v <= best + 1e-12)


def stratified_folds(labels, folds: int, seed: int) -> np.ndarray:
    """(n,) fold index of every row: each class is shuffled with `seed` and dealt round-robin to the folds."""
    y = _labels(labels)
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    if min((y == 0).sum(), (y == 1).sum()) < folds:
        raise ValueError(f"each class needs at least folds={folds} rows: {int((y == 0).sum())} zeros, "
                         f"{int((y == 1).sum())} ones")
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(y), dtype=np.int64)
    for cls in (0, 1):
        rows = rng.permutation(np.flatnonzero(y == cls))
        fold_of[rows] = np.arange(len(rows)) % folds
    return fold_of


def log_loss(labels, probs) -> float:
    """Mean binary cross-entropy, with probabilities clipped to [1e-12, 1 - 1e-12]."""
    y, p = _labels(labels), np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1 - 1e-12)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def _features(embeddings) -> np.ndarray:
    if hasattr(embeddings, "detach"):  # a torch tensor: no torch import needed for numpy callers
        embeddings = embeddings.detach().cpu().double().numpy()
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or not len(x):
        raise ValueError(f"embeddings must be a non-empty (n, d) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or infinite values")
    return x


def _labels(labels) -> np.ndarray:
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    return y


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free form of 1 / (1 + exp(-z))


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))
