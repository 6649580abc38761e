"""Cross-entropy losses: softmax CE, sigmoid BCE and per-class weighted CE.

Shapes (all functions): softmax forms take logits `[..., C]` (any float
dtype, computed in >= fp32), integer labels `[...]` and weights `[...]`;
sigmoid forms take logits `[...]` or `[..., C]`, 0/1 labels of the same
shape, and weights of that shape or `logits.shape[:-1]`. Each returns a
scalar: the weighted mean `sum(w * l) / max(sum(w), tiny)` over elements.
"""

import jax.numpy as jnp

from losses import _checks
from losses import _core
from losses import class_weights


def _nll_rows(rows, hparams):
  """CE rows: `l = -sum_c q_c log p_c`, gradient `p - q` (coef 1)."""
  del hparams
  return rows.nll, jnp.ones_like(rows.nll), None


def _alpha_rows(rows, hparams):
  """Weighted CE rows: `l = alpha_y nll`, gradient `alpha_y (p - onehot)`."""
  alpha_y = hparams['alpha'][rows.labels]
  return alpha_y * rows.nll, alpha_y, None


def ce(logits, labels, *, weights=None, label_smoothing=0.0):
  """Softmax cross-entropy with optional label smoothing.

  `l_i = -sum_c q_ic log softmax(z_i)_c`, `q_i = (1 - eps) onehot(y_i) + eps/C`.
  Label smoothing: Szegedy et al., "Rethinking the Inception Architecture",
  CVPR 2016.

  Args:
    logits: `[..., C]` float. C may be a sequence length (span QA: `[B, T]`
      logits, `[B]` positions); positions masked out of the softmax with
      -inf or a large negative value are fine without label smoothing (with
      it they receive eps / C of the target mass, so the loss is huge).
    labels: `[...]` int in `[0, C)`.
    weights: `[...]` or None.
    label_smoothing: eps in [0, 1].

  Returns:
    Scalar (fp32, or fp64 for fp64 inputs under x64).
  """
  _checks.check_range('ce', 'label_smoothing', label_smoothing, lo=0, hi=1)
  loss, _ = _core.fused_softmax_loss(_nll_rows, logits, labels, weights, {},
                                     label_smoothing=label_smoothing)
  return loss


def bce(logits, labels, *, weights=None, label_smoothing=0.0, pos_weight=None):
  """Sigmoid binary cross-entropy (binary or multi-label, per logit).

  `l = -[pw * y log sigmoid(z) + (1 - y) log sigmoid(-z)]`, with labels
  smoothed to `y (1 - eps) + eps / 2`. `pos_weight` (`pw`, scalar or `[C]`)
  up-weights positives, as in PyTorch's `BCEWithLogitsLoss`.

  Args:
    logits: `[...]` or `[..., C]` float.
    labels: same shape, 0/1 (soft targets in [0, 1] also work here).
    weights: logits' shape, `logits.shape[:-1]`, or None.
    label_smoothing: eps in [0, 1].
    pos_weight: None, scalar or `[C]`, >= 0.

  Returns:
    Scalar: weighted mean over all logits (multi-label: over example x
    class, as in `torch.nn.BCEWithLogitsLoss(reduction='mean')`).
  """
  _checks.check_range('bce', 'label_smoothing', label_smoothing, lo=0, hi=1)
  _checks.check_range('bce', 'pos_weight', pos_weight, lo=0)
  logits, y, w = _core.sigmoid_inputs(logits, labels, weights)
  if label_smoothing:
    y = y * (1.0 - label_smoothing) + 0.5 * label_smoothing
  log_p = _core.log_sigmoid(logits)
  pos = y * log_p
  if pos_weight is not None:
    pos = pos * jnp.asarray(pos_weight, logits.dtype)
  # log sigmoid(-z) = log sigmoid(z) - z.
  per_elem = -(pos + (1.0 - y) * (log_p - logits))
  return _core.weighted_mean(per_elem, w)


def weighted_ce(logits, labels, *, weights=None, alpha):
  """Per-class weighted softmax cross-entropy.

  `l_i = -alpha_{y_i} log softmax(z_i)_{y_i}`, reduced by the weighted mean
  over examples (normalised by `sum(w)`, not `sum(w alpha_y)`; derived
  alphas sum to C so the scale stays that of CE; see `class_weights`).
  Alphas from counts: `class_weights.inverse_freq`, `inverse_sqrt_freq`,
  `class_balanced`.

  Args:
    logits: `[..., C]` float.
    labels: `[...]` int.
    weights: `[...]` or None.
    alpha: `[C]` non-negative class weights.
  """
  _checks.check_range('weighted_ce', 'alpha', alpha, lo=0)
  logits = jnp.asarray(logits)
  alpha = _core.class_vector('weighted_ce', 'alpha', alpha, logits,
                             _core.compute_dtype(logits))
  loss, _ = _core.fused_softmax_loss(_alpha_rows, logits, labels, weights,
                                     {'alpha': alpha})
  return loss


def class_balanced_ce(logits, labels, *, weights=None, class_counts,
                      beta=0.999):
  """Class-balanced softmax CE (Cui et al., "Class-Balanced Loss Based on
  Effective Number of Samples", CVPR 2019).

  `weighted_ce` with `alpha_c ∝ (1 - beta) / (1 - beta^{n_c})`, normalised to
  sum to C. beta in [0, 1): 0 is plain CE, -> 1 is inverse frequency.

  Args:
    logits: `[..., C]` float.
    labels: `[...]` int.
    weights: `[...]` or None.
    class_counts: `[C]` positive training-set counts.
    beta: in [0, 1).
  """
  _checks.check_range('class_balanced_ce', 'beta', beta, lo=0, hi=1,
                      hi_open=True)
  if _checks.is_concrete(class_counts):
    class_weights.validate_counts('class_balanced_ce', class_counts)
  alpha = class_weights.class_balanced(class_counts, beta)
  return weighted_ce(logits, labels, weights=weights, alpha=alpha)
