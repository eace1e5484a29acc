"""The learned router's classifier: it learns, it saves exactly, and its cross-validation never peeks."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from temper.gateway.router_model import RouterModel, cross_val_predict, log_loss, select_l2, stratified_folds


def separable_direction(d: int = 16) -> np.ndarray:
    v = np.arange(1.0, d + 1) * (-1.0) ** np.arange(d)
    return v / np.linalg.norm(v)


def separable(n: int = 400, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm points labelled by the side of a hyperplane, with a margin (like L2-normalized embeddings)."""
    rng = np.random.default_rng(seed)
    direction = separable_direction(d)
    x = rng.normal(size=(n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    margin = x @ direction
    keep = np.abs(margin) > 0.1
    return x[keep], (margin[keep] > 0).astype(np.int64)


def test_learns_a_separable_problem():
    x, y = separable()
    router = RouterModel.fit(x, y, l2=1e-3)
    p = router.predict_proba(x)
    assert ((p > 0.5) == y).mean() == 1.0
    assert log_loss(y, p) < 0.2
    cosine = router.weight @ separable_direction() / np.linalg.norm(router.weight)
    assert cosine > 0.95  # it found the hyperplane, not just some separator of these points


def test_generalizes_out_of_fold_and_penalty_shrinks_weights():
    x, y = separable(n=600)
    p = cross_val_predict(x, y, folds=5, seed=0, l2=1e-3)
    assert ((p > 0.5) == y).mean() > 0.95
    strong, weak = RouterModel.fit(x, y, l2=10.0), RouterModel.fit(x, y, l2=1e-3)
    assert np.linalg.norm(strong.weight) < np.linalg.norm(weak.weight)


def test_fit_reaches_the_optimum():
    """At the returned parameters the regularized log-loss's gradient vanishes (weights and bias)."""
    x, y = separable(n=300, seed=3)
    y = np.where(np.random.default_rng(3).random(len(y)) < 0.15, 1 - y, y)  # label noise: a finite optimum
    l2 = 0.05
    router = RouterModel.fit(x, y, l2=l2)
    r = router.predict_proba(x) - y
    grad_w = (x - router.mean).T @ r / len(y) + l2 * router.weight
    assert np.abs(grad_w).max() < 1e-8
    assert abs(r.mean()) < 1e-8


def test_torch_and_numpy_inputs_agree():
    x, y = separable(n=200)
    a = RouterModel.fit(x, y, l2=0.1)
    b = RouterModel.fit(torch.from_numpy(x).float(), torch.from_numpy(y), l2=0.1)
    np.testing.assert_allclose(a.predict_proba(x), b.predict_proba(torch.from_numpy(x)), atol=1e-6)


def test_save_load_round_trip_is_exact(tmp_path):
    x, y = separable(n=200)
    router = RouterModel.fit(x, y, l2=0.1)
    path = tmp_path / "router.json"
    router.save(path)
    loaded = RouterModel.load(path)
    assert np.array_equal(loaded.weight, router.weight) and np.array_equal(loaded.mean, router.mean)
    assert loaded.bias == router.bias and loaded.l2 == router.l2
    assert np.array_equal(loaded.predict_proba(x), router.predict_proba(x))
    body = json.loads(path.read_text())
    assert body["format"] == 1 and body["dim"] == x.shape[1]


def test_load_rejects_a_foreign_file(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"format": 1, "kind": "mlp"}))
    with pytest.raises(ValueError, match="not a router model"):
        RouterModel.load(path)


def test_cross_val_predictions_are_out_of_fold():
    """Rows whose labels are pure noise: a fit that saw a row memorizes it (tiny penalty, more features
    than rows), so in-sample accuracy is ~1, but out-of-fold predictions are at chance."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 200))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = rng.integers(0, 2, size=120)
    in_sample = RouterModel.fit(x, y, l2=1e-4).predict_proba(x)
    assert ((in_sample > 0.5) == y).mean() == 1.0
    oof = cross_val_predict(x, y, folds=5, seed=0, l2=1e-4)
    assert 0.3 < ((oof > 0.5) == y).mean() < 0.7


def test_cross_val_predict_equals_fits_on_the_other_folds():
    x, y = separable(n=200)
    oof = cross_val_predict(x, y, folds=4, seed=7, l2=0.1)
    fold_of = stratified_folds(y, 4, 7)
    for k in range(4):
        router = RouterModel.fit(x[fold_of != k], y[fold_of != k], l2=0.1)
        np.testing.assert_array_equal(oof[fold_of == k], router.predict_proba(x[fold_of == k]))


def test_folds_are_stratified_and_cover_every_row():
    y = np.array([1] * 30 + [0] * 12)
    fold_of = stratified_folds(y, 3, seed=0)
    for k in range(3):
        assert (y[fold_of == k] == 1).sum() == 10 and (y[fold_of == k] == 0).sum() == 4
    with pytest.raises(ValueError, match="at least folds"):
        stratified_folds(np.array([1] * 10 + [0] * 2), 3, seed=0)


def test_select_l2_prefers_a_strong_penalty_on_noise():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(150, 100))
    y = rng.integers(0, 2, size=150)
    assert select_l2(x, y, grid=(1e-4, 1.0, 100.0)) >= 1.0


def test_bad_inputs_raise():
    x, y = separable(n=50)
    with pytest.raises(ValueError, match="both 0 and 1"):
        RouterModel.fit(x, np.ones(len(x)))
    with pytest.raises(ValueError, match="labels"):
        RouterModel.fit(x, np.full(len(x), 2))
    with pytest.raises(ValueError, match="l2"):
        RouterModel.fit(x, y, l2=0.0)
    with pytest.raises(ValueError, match="dimensions"):
        RouterModel.fit(x, y).predict_proba(x[:, :3])
