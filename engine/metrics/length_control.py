"""AlpacaEval 2 length-controlled win rate (docs/science.md §7.2).

A logistic GLM predicts the judge's soft preference from a length term (and, in the full form,
an instruction-difficulty term) plus a model-identity term; LC is the mean prediction with the
length difference set to 0. scikit-learn does the fitting; what is written here is the part
alpaca_eval does around it (features, duplicated soft-label rows, grouped CV over C), kept
without its pandas/patsy/hub dependencies. The fit follows `fit_LogisticRegressionCV` at the
pinned commit: L1, liblinear, no intercept, Cs = 10 values on logspace(-4, 4), GroupKFold(5)
with both copies of a row in one group, chosen by continuous log-loss, refit on all rows,
random_state 123.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import numpy as np
from numpy.typing import ArrayLike

from ._arrays import as_1d

if TYPE_CHECKING:
    from sklearn.linear_model import LogisticRegression


@dataclass(frozen=True)
class GamedBaselineRows:
    """Rows of alpaca_eval's `df_gamed.csv` (verbose/concise versions of the baseline).

    They enter the fit with `not_gamed_baseline = 0` and weight λ/2, which pulls the length and
    difficulty weights towards the baseline's (step 4 of §7.2).
    """

    p_model_wins: ArrayLike
    std_delta_len: ArrayLike
    instruction_difficulty: ArrayLike


@dataclass(frozen=True)
class LengthControlledResult:
    """LC win rate in percent and the fitted GLM weights (keys as in alpaca_eval's weight files)."""

    win_rate: float
    weights: dict[str, float] = field(default_factory=dict)
    C: float = float("nan")


def std_delta_len(
    model_outputs: Sequence[str] | ArrayLike, baseline_outputs: Sequence[str] | ArrayLike
) -> np.ndarray:
    """(len(baseline) - len(model)) / std of those deltas, lengths in characters (§7.2 step 1).

    Accepts the output strings or their lengths. The std is pandas' default (ddof = 1), over this
    model's own deltas.
    """
    m = _lengths(model_outputs, "model_outputs")
    b = _lengths(baseline_outputs, "baseline_outputs")
    if m.size != b.size:
        raise ValueError(f"{m.size} model outputs against {b.size} baseline outputs")
    delta = b - m
    std = delta.std(ddof=1) if delta.size > 1 else 0.0
    if not std > 0:
        raise ValueError("the length differences are constant: std_delta_len is undefined")
    return delta / std


def lc_from_weights(
    w_not_gamed: float, w_difficulty: float = 0.0, instruction_difficulty: ArrayLike | None = None
) -> float:
    """LC in percent from already-fitted weights: mean_i σ(w_ng + w_diff · difficulty_i) × 100.

    The length term drops out because tanh(0) = 0 (§7.2 step 6). Without difficulties (the
    minimal form) this is σ(w_ng) × 100.
    """
    d = (
        np.zeros(1)
        if instruction_difficulty is None
        else as_1d(instruction_difficulty, "instruction_difficulty")
    )
    return float(_sigmoid(w_not_gamed + w_difficulty * d).mean() * 100)


def length_controlled_win_rate(
    p_model_wins: ArrayLike,
    model_outputs: Sequence[str] | ArrayLike,
    baseline_outputs: Sequence[str] | ArrayLike,
    *,
    instruction_difficulty: ArrayLike | None = None,
    gamed_rows: GamedBaselineRows | None = None,
    regularize_lambda: float = 0.2,
    n_splits: int = 5,
    Cs: int = 10,
    random_state: int = 123,
) -> LengthControlledResult:
    """Fit the length-control GLM for one model against one baseline and return LC (§7.2).

    - Without `instruction_difficulty`: `length_controlled_minimal`,
      y ~ tanh(std_delta_len) + not_gamed_baseline - 1.
    - With it: the `length_controlled_v1` formula, adding `+ instruction_difficulty`; pass the
      `gamed_rows` from df_gamed.csv as well to regularise towards the baseline with weight
      `regularize_lambda` / 2, exactly as the leaderboard does.

    `p_model_wins` is preference - 1 per instruction; NaN items are left out of the fit but, as
    in alpaca_eval, every instruction is averaged in the prediction. Numbers from a local judge
    are "AE2-style" and not comparable to the leaderboard (§7.2).
    """
    y = as_1d(p_model_wins, "p_model_wins")
    delta = std_delta_len(model_outputs, baseline_outputs)
    if delta.size != y.size:
        raise ValueError(f"{y.size} preferences against {delta.size} output pairs")
    columns = ["np.tanh(std_delta_len)"]
    features = [np.tanh(delta)]
    difficulty = None
    if instruction_difficulty is not None:
        difficulty = as_1d(instruction_difficulty, "instruction_difficulty")
        if difficulty.size != y.size:
            raise ValueError(f"{difficulty.size} difficulties for {y.size} instructions")
        columns.append("instruction_difficulty")
        features.append(difficulty)
    columns.append("not_gamed_baseline.astype(float)")
    features.append(np.ones_like(y))

    fit = ~np.isnan(y)
    X = np.column_stack(features)[fit]
    target = y[fit]
    weight = np.ones_like(target)
    if gamed_rows is not None:
        if difficulty is None:
            raise ValueError("gamed_rows regularise the v1 formula: pass instruction_difficulty too")
        g_target = as_1d(gamed_rows.p_model_wins, "gamed_rows.p_model_wins")
        g_len = as_1d(gamed_rows.std_delta_len, "gamed_rows.std_delta_len")
        g_diff = as_1d(gamed_rows.instruction_difficulty, "gamed_rows.instruction_difficulty")
        X = np.vstack(
            [
                np.column_stack([np.tanh(g_len), g_diff, np.zeros(g_target.size)]),
                X,
            ]
        )
        target = np.concatenate([g_target, target])
        weight = np.concatenate([np.full(g_target.size, regularize_lambda / 2), weight])
    if ((target < 0) | (target > 1)).any():
        raise ValueError("p_model_wins must lie in [0, 1]")

    coef, best_C = _fit_soft_logistic_cv(
        X, target, weight, n_splits=n_splits, Cs=Cs, random_state=random_state
    )
    weights = dict(zip(columns, (float(c) for c in coef), strict=True))

    X_test = np.column_stack(features)
    X_test[:, 0] = 0.0  # std_delta_len = 0 -> tanh(0) = 0: "as if the lengths were equal"
    lc = float(_sigmoid(X_test @ coef).mean() * 100)
    return LengthControlledResult(win_rate=lc, weights=weights, C=best_C)


def _fit_soft_logistic_cv(
    X: np.ndarray, y: np.ndarray, weight: np.ndarray, *, n_splits: int, Cs: int, random_state: int
) -> tuple[np.ndarray, float]:
    """L1 logistic regression on soft labels, C chosen by grouped CV on continuous log-loss.

    Each row is duplicated as label 1 with weight y·w and label 0 with weight (1-y)·w; the two
    copies share a group so that they never straddle folds.
    """
    from sklearn.model_selection import GroupKFold

    n = y.size
    X_dup = np.vstack([X, X])
    label = np.concatenate([np.ones(n), np.zeros(n)])
    sample_weight = np.concatenate([y * weight, (1 - y) * weight])
    groups = np.concatenate([np.arange(n), np.arange(n)])
    grid = np.logspace(-4, 4, Cs)

    scores = np.zeros(grid.size)
    for train, test in GroupKFold(n_splits=n_splits).split(X_dup, label, groups):
        for i, C in enumerate(grid):
            model = _l1_logistic(C, random_state).fit(
                X_dup[train], label[train], sample_weight=sample_weight[train]
            )
            p = model.predict_proba(X_dup[test])[:, 1]
            # both copies of a row carry its soft target; weight them by the row's own weight
            y_test = np.concatenate([y, y])[test]
            w_test = np.concatenate([weight, weight])[test]
            scores[i] -= _soft_log_loss(y_test, p, w_test)
    best_C = float(grid[int(np.argmax(scores))])
    model = _l1_logistic(best_C, random_state).fit(X_dup, label, sample_weight=sample_weight)
    return model.coef_[0].astype(np.float64), best_C


def _l1_logistic(C: float, random_state: int) -> LogisticRegression:
    """An L1 liblinear LogisticRegression without intercept, on any scikit-learn >= 1.4.

    scikit-learn 1.8 deprecated `penalty=` in favour of `l1_ratio=`; pick whichever this version
    expects so that no deprecation warning leaks into notebooks.
    """
    import inspect

    from sklearn.linear_model import LogisticRegression

    kwargs = dict(C=C, solver="liblinear", fit_intercept=False, random_state=random_state)
    if inspect.signature(LogisticRegression).parameters["penalty"].default == "deprecated":
        return LogisticRegression(l1_ratio=1.0, **kwargs)
    return LogisticRegression(penalty="l1", **kwargs)


def _soft_log_loss(y_true: np.ndarray, p: np.ndarray, weight: np.ndarray) -> float:
    """alpaca_eval's `logloss`: mean of -w·[y log p + (1-y) log(1-p)], p clipped at 1e-15."""
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-np.mean(weight * (y_true * np.log(p) + (1 - y_true) * np.log(1 - p))))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -np.asarray(x, dtype=np.float64)))


def _lengths(outputs: Sequence[str] | ArrayLike, name: str) -> np.ndarray:
    values = list(outputs)  # type: ignore[arg-type]
    if values and isinstance(values[0], str):
        return np.array([len(cast(str, v)) for v in values], dtype=np.float64)
    return as_1d(values, name)
