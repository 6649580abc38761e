"""Focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017).

`FL(p_t) = -alpha_t (1 - p_t)^gamma log p_t`; gamma = 0 is (alpha-weighted)
cross-entropy, larger gamma down-weights well-classified examples.

Both forms work in log space and `(1 - p_t)^gamma` is
`exp(gamma * log(1 - p_t))`. Softmax: `log p_y = z_y - logsumexp(z)` and
`log(1 - p_y) = log(sum_{c != y} e^{z_c - m}) - log(sum_c e^{z_c - m})`,
from the other classes' mass rather than `1 - p_y` (which rounds to 0).
Sigmoid: `log p_t = log_sigmoid(z_t)`, `log(1 - p_t) = log_sigmoid(z_t) -
z_t`. The naive `(1 - p)**gamma` has derivative `gamma (1 - p)^(gamma - 1)`,
infinite at `p = 1` for `0 < gamma < 1`, and `log(softmax)` underflows to
-inf; here value and gradient are finite for every `gamma >= 0` and all
finite logits. (When `1 - p_y` is below ~1e-38 its log is floored near -87;
the loss there is `(...) * -log p_y` with `-log p_y = 0` exactly, so the
value and gradient are unaffected.)

The reduction is the weighted mean over elements (Lin et al. divide the sum
by the number of positive anchors, a detection-specific normaliser).
"""

import jax.numpy as jnp

from losses import _checks
from losses import _core


def focal(logits, labels, *, weights=None, gamma=2.0, alpha=None):
  """Softmax (multi-class) focal loss.

  `l_i = -alpha_{y_i} (1 - p_{i,y_i})^gamma log p_{i,y_i}`, `p = softmax(z)`.

  Args:
    logits: `[..., C]` float, C >= 2.
    labels: `[...]` int in `[0, C)`.
    weights: `[...]` or None.
    gamma: focusing parameter >= 0 (Lin et al. use 2).
    alpha: None (all 1) or `[C]` non-negative class weights.

  Returns:
    Scalar weighted mean (fp32 for <= fp32 inputs).
  """
  _checks.check_range('focal', 'gamma', gamma, lo=0)
  _checks.check_range('focal', 'alpha', alpha, lo=0)
  logits = jnp.asarray(logits)
  if logits.ndim >= 1 and logits.shape[-1] < 2:
    raise ValueError('focal: needs C >= 2 classes.')
  dtype = _core.compute_dtype(logits)
  hparams = {'gamma': jnp.asarray(gamma, dtype)}
  if alpha is not None:
    hparams['alpha'] = _core.class_vector('focal', 'alpha', alpha, logits,
                                          dtype)
  loss, _ = _core.fused_softmax_loss(_focal_rows, logits, labels, weights,
                                     hparams, with_log1m_p=True)
  return loss


def _focal_rows(rows, hparams):
  """`l = (1 - p_y)^gamma nll` and its gradient scale (module docstring).

  `dl/dz = (p - onehot) [(1 - p_y)^gamma + gamma p_y nll (1 - p_y)^(gamma-1)]`.
  For `gamma < 1` the last power is large only where `1 - p_y` is tiny, and
  there `nll ~ 1 - p_y` (or exactly 0 once `p_y` rounds to 1); with
  `log(1 - p_y) >= log(tiny) ~ -87.3` it stays below `e^87.3 ~ 1e38` in fp32,
  so the product is finite for every `gamma >= 0`.
  """
  gamma = hparams['gamma']
  modulator = jnp.exp(gamma * rows.log1m_p)
  p_y = jnp.exp(-rows.nll)
  coef = modulator + gamma * p_y * rows.nll * jnp.exp(
      (gamma - 1.0) * rows.log1m_p)
  loss = modulator * rows.nll
  if 'alpha' in hparams:
    alpha_y = hparams['alpha'][rows.labels]
    loss, coef = alpha_y * loss, alpha_y * coef
  return loss, coef, None


def sigmoid_focal(logits, labels, *, weights=None, gamma=2.0, alpha=0.25):
  """Sigmoid (binary / multi-label) focal loss, the form of Lin et al.

  `l = -alpha_t (1 - p_t)^gamma log p_t` per logit, with `p_t = sigmoid(z)`
  for `y = 1` and `1 - sigmoid(z)` for `y = 0`, `alpha_t = alpha y +
  (1 - alpha)(1 - y)`. With `z_t = (2y - 1) z`: `log p_t =
  log_sigmoid(z_t)` and `log(1 - p_t) = log_sigmoid(z_t) - z_t`, both exact
  for any finite z.

  Args:
    logits: `[...]` or `[..., C]` float.
    labels: same shape, 0/1 (hard labels; soft labels are not supported).
    weights: logits' shape, `logits.shape[:-1]`, or None.
    gamma: >= 0 (Lin et al.: 2).
    alpha: None (no alpha-balancing), or scalar / `[C]` in [0, 1] (Lin et
      al.: 0.25, the weight of positives).

  Returns:
    Scalar weighted mean over all logits.
  """
  _checks.check_range('sigmoid_focal', 'gamma', gamma, lo=0)
  _checks.check_range('sigmoid_focal', 'alpha', alpha, lo=0, hi=1)
  logits, y, w = _core.sigmoid_inputs(logits, labels, weights)
  z_t = (2.0 * y - 1.0) * logits
  log_p_t = _core.log_sigmoid(z_t)
  per_elem = -log_p_t
  if not (isinstance(gamma, (int, float)) and gamma == 0):
    # log(1 - p_t) = log sigmoid(-z_t) = log sigmoid(z_t) - z_t.
    per_elem = jnp.exp(gamma * (log_p_t - z_t)) * per_elem
  if alpha is not None:
    alpha = jnp.asarray(alpha, logits.dtype)
    per_elem = (alpha * y + (1.0 - alpha) * (1.0 - y)) * per_elem
  return _core.weighted_mean(per_elem, w)
