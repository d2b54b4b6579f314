"""Few-shot linear evaluation of frozen features: the math, in NumPy (float64), no model involved.

The protocol of the ViT and TokenLearner papers (arXiv 2010.11929, 2106.11297): for k shots per
class and several seeds, draw k training examples per class, whiten the features with that set's
mean and standard deviation, append a constant bias feature, regress targets in {-1, +1} (one-hot)
by closed-form ridge regression, predict by argmax, and report the test accuracy per seed and its mean.

Ridge regression for a whole grid of regularisers costs one eigendecomposition: of X^T X `[d, d]`
(primal) or of X X^T `[n, n]` (dual), whichever is smaller. With X^T X = V S V^T,
W(l2) = V (S + l2)^-1 V^T X^T Y; with X X^T = U S U^T, W(l2) = X^T U (S + l2)^-1 U^T Y.

The regulariser is chosen on the few-shot training set only, never on the test split, by exact
leave-one-out cross-validation (each training example held out in turn), which the same
eigendecomposition gives in closed form: with the hat matrix H(l2) = X (X^T X + l2)^-1 X^T, the
prediction for example i from a fit without it is (yhat_i - H_ii y_i) / (1 - H_ii). The regulariser
with the highest leave-one-out accuracy wins, ties broken by the lowest leave-one-out squared error.
(With one shot a held-out example's class is absent from the rest, so the accuracy ties and the
squared error decides.) The whitening statistics include the held-out example's features (never its label).
"""

import dataclasses

import numpy as np

SHOTS = (1, 5, 10, 25)
L2_REGS = tuple(float(2.0 ** i) for i in range(-10, 21))


class RidgeRegression:
    """min_W ||X W - Y||^2 + l2 ||W||^2 for any l2, from one eigendecomposition.

    Args:
      x: features `[n, d]` (whitened, bias column included).
      y: targets `[n, c]`.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        self.x, self.y = x, y
        n, d = x.shape
        self.primal = d <= n
        if self.primal:
            s, v = np.linalg.eigh(x.T @ x)  # [d], [d, d]
            self.v = v
            self.z = x @ v  # [n, d]: X in the eigenbasis
            self.zty = self.z.T @ y  # [d, c]
        else:
            s, u = np.linalg.eigh(x @ x.T)  # [n], [n, n]
            self.u = u
            self.uty = u.T @ y  # [n, c]
            self.xtu = x.T @ u  # [d, n]
        self.s = np.maximum(s, 0.0)  # round-off can make tiny eigenvalues negative

    def weights(self, l2: float) -> np.ndarray:
        """W(l2) `[d, c]`."""
        if self.primal:
            return self.v @ (self.zty / (self.s + l2)[:, None])
        return self.xtu @ (self.uty / (self.s + l2)[:, None])

    def fitted(self, l2: float):
        """(X W(l2) `[n, c]`, the hat matrix diagonal H_ii `[n]`)."""
        if self.primal:
            scale = 1.0 / (self.s + l2)
            return self.z @ (self.zty * scale[:, None]), (self.z ** 2) @ scale
        shrink = self.s / (self.s + l2)
        return self.u @ (self.uty * shrink[:, None]), (self.u ** 2) @ shrink

    def leave_one_out(self, l2: float) -> np.ndarray:
        """Prediction for each training example by the fit on all the others, `[n, c]`."""
        fitted, leverage = self.fitted(l2)
        return (fitted - leverage[:, None] * self.y) / np.maximum(1.0 - leverage, 1e-12)[:, None]


def sample_shots(labels: np.ndarray, shots: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of `shots` random examples of every class (all of a class's examples if it has fewer)."""
    picked = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        picked.append(rng.choice(members, size=min(shots, len(members)), replace=False))
    return np.sort(np.concatenate(picked))


def whiten(train: np.ndarray, test: np.ndarray):
    """Both `[n, d]` sets standardised with the training set's mean and std (constant features: std 1)."""
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std > 1e-8, std, 1.0)
    return (train - mean) / std, (test - mean) / std


def add_bias(x: np.ndarray) -> np.ndarray:
    """`[n, d]` -> `[n, d + 1]` with a constant 1 last."""
    return np.concatenate([x, np.ones((x.shape[0], 1), x.dtype)], axis=1)


def targets(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """One-hot in {-1, +1}: `[n]` -> `[n, num_classes]`."""
    return 2.0 * (labels[:, None] == np.arange(num_classes)[None, :]) - 1.0


def select_l2(ridge: RidgeRegression, labels: np.ndarray, l2_regs) -> float:
    """The regulariser of best leave-one-out accuracy on the training set (ties: lowest squared error)."""
    best_key, best_l2 = None, None
    for l2 in l2_regs:
        held_out = ridge.leave_one_out(l2)
        if not np.all(np.isfinite(held_out)):
            continue
        key = (np.mean(np.argmax(held_out, axis=1) == labels), -np.mean((held_out - ridge.y) ** 2))
        if best_key is None or key > best_key:
            best_key, best_l2 = key, l2
    if best_l2 is None:
        raise FloatingPointError("few-shot ridge regression: no regulariser gives finite predictions")
    return best_l2


@dataclasses.dataclass(frozen=True)
class FewShotResult:
    """Test accuracy of one (shots, seed) draw and the regulariser chosen for it."""

    accuracy: float
    l2: float
    num_train: int


def linear_probe(train_x, train_labels, test_x, test_labels, num_classes: int,
                 l2_regs=L2_REGS) -> FewShotResult:
    """Whiten, add the bias feature, choose l2 by leave-one-out, fit, and score the test set.

    train_x `[n, d]`, train_labels `[n]` int, test_x `[m, d]`, test_labels `[m]` int."""
    train_x, test_x = whiten(np.asarray(train_x, np.float64), np.asarray(test_x, np.float64))
    train_x, test_x = add_bias(train_x), add_bias(test_x)
    ridge = RidgeRegression(train_x, targets(train_labels, num_classes))
    l2 = select_l2(ridge, train_labels, l2_regs)
    predictions = np.argmax(test_x @ ridge.weights(l2), axis=1)
    return FewShotResult(float(np.mean(predictions == test_labels)), float(l2), len(train_labels))


def evaluate(train_x, train_labels, test_x, test_labels, num_classes: int, *, shots=SHOTS, seeds: int = 3,
             l2_regs=L2_REGS) -> dict:
    """{shots: [FewShotResult per seed]}: the k-shot sets are drawn from (train_x `[N, d]`, train_labels `[N]`),
    the accuracy measured on (test_x `[M, d]`, test_labels `[M]`). Seed s of k shots draws with
    `np.random.default_rng([s, k])`, so results do not depend on which other shot counts run."""
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    results = {}
    for k in shots:
        results[k] = []
        for seed in range(seeds):
            index = sample_shots(train_labels, k, num_classes, np.random.default_rng([seed, k]))
            results[k].append(linear_probe(train_x[index], train_labels[index], test_x, test_labels,
                                           num_classes, l2_regs))
    return results
