"""Focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017).

`FL(p_t) = -alpha_t (1 - p_t)^gamma log p_t`; gamma = 0 is (alpha-weighted)
cross-entropy, larger gamma down-weights well-classified examples.

Both forms work in log space, `(1 - p_t)^gamma = exp(gamma log(1 - p_t))`,
with `log(1 - p_y)` the log-sum-exp of the other classes' log-probabilities
(softmax; `log1p(-p_y)` would round to `log 0`) or `log_sigmoid(-z_t)`.
Autodiff of this form is finite for every `gamma >= 0` and finite logits;
that of the naive `(1 - p)**gamma`, `gamma (1 - p)^(gamma - 1)`, is
infinite at `p = 1` for `0 < gamma < 1`.

'mean' is the weighted mean over elements (Lin et al. divide the sum by the
number of positive anchors, a detection-specific normaliser).
"""

import jax
import jax.numpy as jnp

from losses import _checks
from losses import _core


def focal(logits, labels, *, weights=None, gamma=2.0, alpha=None,
          reduction='mean'):
  """Softmax (multi-class) focal loss.

  `l_i = -alpha_{y_i} (1 - p_{i,y_i})^gamma log p_{i,y_i}`, `p = softmax(z)`.

  Args:
    logits, labels, weights: `[..., C]` float (C >= 2), `[...]` int,
      `[...]` or None.
    gamma: focusing parameter >= 0 (Lin et al. use 2).
    alpha: None (all 1) or `[C]` non-negative class weights.
    reduction: 'mean' | 'sum' | 'none' (`[...]`).
  """
  _checks.check_range('focal', 'gamma', gamma, lo=0)
  _checks.check_range('focal', 'alpha', alpha, lo=0)
  logits = jnp.asarray(logits)
  if logits.ndim >= 1 and logits.shape[-1] < 2:
    raise ValueError('focal: needs C >= 2 classes.')
  z, y, w = _core.softmax_inputs(logits, labels, weights)
  log_p = jax.nn.log_softmax(z, axis=-1)
  log_p_y = _core.pick(log_p, y)
  log1m_p_y = _core.log1m_softmax_at(
      log_p, jax.nn.one_hot(y, z.shape[-1], dtype=bool))
  per = jnp.exp(gamma * log1m_p_y) * _core.nll_from_log1m(log_p_y, log1m_p_y)
  if alpha is not None:
    per = _core.class_vector('focal', 'alpha', alpha, z.shape[-1],
                             z.dtype)[y] * per
  return _core.reduce(per, w, reduction, 'focal')


def sigmoid_focal(logits, labels, *, weights=None, gamma=2.0, alpha=0.25,
                  reduction='mean'):
  """Sigmoid (binary / multi-label) focal loss, the form of Lin et al.

  `l = -alpha_t (1 - p_t)^gamma log p_t` per logit: `p_t = sigmoid(z_t)`
  with `z_t = (2y - 1) z`, `alpha_t = alpha y + (1 - alpha)(1 - y)`.

  Args:
    logits: `[...]` or `[..., C]` float.
    labels: same shape, 0/1 (hard labels); or int class ids `[...]` with
      logits `[..., C]`, read as one-hot (one-vs-rest).
    weights: labels' shape, `logits.shape[:-1]`, or None.
    gamma: >= 0 (Lin et al.: 2).
    alpha: None (no alpha-balancing), or scalar / `[C]` in [0, 1] (Lin et
      al.: 0.25, the weight of positives).
    reduction: 'mean' (over all logits) | 'sum' | 'none' (logits' shape).
  """
  _checks.check_range('sigmoid_focal', 'gamma', gamma, lo=0)
  _checks.check_range('sigmoid_focal', 'alpha', alpha, lo=0, hi=1)
  z, y, w = _core.sigmoid_inputs(logits, labels, weights, 'sigmoid_focal')
  z_t = (2.0 * y - 1.0) * z
  per = -jnp.exp(gamma * jax.nn.log_sigmoid(-z_t)) * jax.nn.log_sigmoid(z_t)
  if alpha is not None:
    alpha = jnp.asarray(alpha, z.dtype)
    per = (alpha * y + (1.0 - alpha) * (1.0 - y)) * per
  return _core.reduce(per, w, reduction, 'sigmoid_focal')
