"""Cross-entropy losses: softmax CE, sigmoid BCE and per-class weighted CE.

Shapes and `reduction` follow the package conventions (`losses.__doc__`).
"""

import jax
import jax.numpy as jnp

from losses import _checks
from losses import _core
from losses import class_weights


def ce(logits, labels, *, weights=None, label_smoothing=0.0,
       reduction='mean'):
  """Softmax cross-entropy with optional label smoothing.

  `l_i = -sum_c q_ic log softmax(z_i)_c`, `q_i = (1 - eps) onehot(y_i) + eps/C`
  (label smoothing: Szegedy et al., "Rethinking the Inception
  Architecture", CVPR 2016).

  Args:
    logits: `[..., C]` float; C may be a sequence length (span QA), with
      positions masked by -inf (then label smoothing gives inf).
    labels: `[...]` int in `[0, C)`.
    weights: `[...]` or None.
    label_smoothing: eps in [0, 1].
    reduction: 'mean' | 'sum' | 'none' (`[...]`).

  Returns:
    Scalar, or `[...]` for 'none' (fp32; fp64 under x64 for fp64 inputs).
  """
  _checks.check_range('ce', 'label_smoothing', label_smoothing, lo=0, hi=1)
  z, y, w = _core.softmax_inputs(logits, labels, weights)
  log_p = jax.nn.log_softmax(z, axis=-1)
  nll = -_core.pick(log_p, y)
  if label_smoothing:
    nll = (1.0 - label_smoothing) * nll - label_smoothing * jnp.mean(
        log_p, axis=-1)
  return _core.reduce(nll, w, reduction, 'ce')


def bce(logits, labels, *, weights=None, label_smoothing=0.0, pos_weight=None,
        reduction='mean'):
  """Sigmoid binary cross-entropy (binary or multi-label, per logit).

  `l = -[pw y log sigmoid(z) + (1 - y) log sigmoid(-z)]`, labels smoothed to
  `y (1 - eps) + eps / 2`; `pos_weight` (`pw`) up-weights positives as in
  PyTorch's `BCEWithLogitsLoss`.

  Args:
    logits: `[...]` or `[..., C]` float.
    labels: same shape, 0/1 (soft targets in [0, 1] work too); or int class
      ids `[...]` with logits `[..., C]`, read as one-hot.
    weights: logits' shape, `logits.shape[:-1]`, or None.
    label_smoothing: eps in [0, 1].
    pos_weight: None, scalar or `[C]`, >= 0.
    reduction: 'mean' (over all logits, as torch's 'mean'), 'sum' or
      'none' (the logits' shape).
  """
  _checks.check_range('bce', 'label_smoothing', label_smoothing, lo=0, hi=1)
  _checks.check_range('bce', 'pos_weight', pos_weight, lo=0)
  z, y, w = _core.sigmoid_inputs(logits, labels, weights, 'bce')
  if label_smoothing:
    y = y * (1.0 - label_smoothing) + 0.5 * label_smoothing
  pw = 1.0 if pos_weight is None else jnp.asarray(pos_weight, z.dtype)
  per = -(pw * y * jax.nn.log_sigmoid(z) + (1.0 - y) * jax.nn.log_sigmoid(-z))
  return _core.reduce(per, w, reduction, 'bce')


def weighted_ce(logits, labels, *, weights=None, alpha, reduction='mean'):
  """Per-class weighted softmax cross-entropy.

  `l_i = -alpha_{y_i} log softmax(z_i)_{y_i}`. 'mean' divides by `sum(w)`,
  not `sum(w alpha_y)`: derived alphas sum to C, so the scale stays CE's
  (`class_weights`).

  Args:
    logits, labels, weights: `[..., C]` float, `[...]` int, `[...]` or None.
    alpha: `[C]` non-negative class weights.
    reduction: 'mean' | 'sum' | 'none'.
  """
  _checks.check_range('weighted_ce', 'alpha', alpha, lo=0)
  logits, labels = jnp.asarray(logits), jnp.asarray(labels)
  alpha = _core.class_vector('weighted_ce', 'alpha', alpha, logits.shape[-1],
                             _core.compute_dtype(logits))
  z, y, w = _core.softmax_inputs(logits, labels, weights)
  nll = -_core.pick(jax.nn.log_softmax(z), y)
  return _core.reduce(alpha[y] * nll, w, reduction, 'weighted_ce')


def class_balanced_ce(logits, labels, *, weights=None, class_counts,
                      beta=0.999, reduction='mean'):
  """Class-balanced softmax CE (Cui et al., "Class-Balanced Loss Based on
  Effective Number of Samples", CVPR 2019).

  `weighted_ce` with `alpha_c ∝ (1 - beta) / (1 - beta^{n_c})` summing to C;
  beta = 0 is plain CE, beta -> 1 inverse frequency.

  Args:
    logits, labels, weights, reduction: as in `weighted_ce`.
    class_counts: `[C]` positive training-set counts.
    beta: in [0, 1).
  """
  _checks.check_range('class_balanced_ce', 'beta', beta, lo=0, hi=1,
                      hi_open=True)
  if _checks.is_concrete(class_counts):
    class_weights.validate_counts('class_balanced_ce', class_counts)
  alpha = class_weights.class_balanced(class_counts, beta)
  return weighted_ce(logits, labels, weights=weights, alpha=alpha,
                     reduction=reduction)
