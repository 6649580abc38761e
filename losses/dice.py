"""Dice-family losses of Li et al., "Dice Loss for Data-imbalanced NLP Tasks"
(ACL 2020): self-adjusting DSC, squared-denominator dice (DL) and Tversky (TL).

Notation (binary, per instance i): `p_i1` the probability of the positive
class, `p_i0 = 1 - p_i1`, `y_i1` in {0, 1}, `y_i0 = 1 - y_i1`.

* DSC (per instance, reduced by the weighted mean over instances):
    `1 - (2 (1 - p_i1)^alpha p_i1 y_i1 + gamma) /
         ((1 - p_i1)^alpha p_i1 + y_i1 + gamma)`
* DL (set level: sums run over all unmasked instances of the batch):
    `1 - (2 sum_i p_i1 y_i1 + gamma) /
         (sum_i p_i1^2 + sum_i y_i1^2 + gamma)`   (Milletari et al. 2016)
* TL (set level):
    `1 - (sum_i p_i1 y_i1 + gamma) / (sum_i p_i1 y_i1
         + alpha sum_i p_i1 y_i0 + beta sum_i p_i0 y_i1 + gamma)`
  alpha weighs false positives, beta false negatives (Salehi et al. 2017
  recommend alpha = 0.3, beta = 0.7; alpha = beta = 0.5 is the plain dice).

Forms, picked from the shapes:
* binary: logits `[...]` (sigmoid), labels `[...]` 0/1, weights `[...]`.
  All elements form one binary problem (token-level: `[B, T]`).
* multi-class: logits `[..., C]` (softmax), int labels `[...]`, weights
  `[...]`. One-vs-rest: class c's problem uses `p_ic` and `y_ic = [y_i = c]`;
  the loss is the mean over the C classes (DSC: per instance; DL/TL: of the
  C set-level losses; classes absent from the batch still contribute their
  false-positive term).

Robustness: for whole-number alpha, `(1 - p)^alpha p` is a polynomial in
`p`; otherwise it is `exp(alpha log(1 - p) + log p)` with `log(1 - p)` exact
in log space, so `0 < alpha < 1` has finite gradients at `p -> 1`;
denominators are floored at machine epsilon (reachable only with
`gamma = 0`); an all-masked batch gives exactly 0. Weights multiply each
instance's contribution to every sum, so masked instances change nothing.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from losses import _checks
from losses import _core


class _OneVsRest(NamedTuple):
  """The K binary problems: K = 1 (binary form) or C (one-vs-rest)."""
  p: jax.Array  # [..., K] probability of the positive class, p_1.
  p0: jax.Array  # [..., K] 1 - p.
  y: jax.Array  # [..., K] 0/1 positive-class indicator, y_1.
  w: jax.Array  # [...] instance weights.
  logs: tuple[jax.Array, jax.Array] | None  # (log p, log(1 - p)), [..., K].
  labels: jax.Array | None  # [...] class ids (multi-class form only).


def _one_vs_rest(loss, logits, labels, weights, *, need_logs=False):
  """Per-class probabilities for the binary or one-vs-rest problem.

  Args:
    loss: name, for messages.
    logits, labels, weights: as in `dsc`.
    need_logs: also compute exact `log p` and `log(1 - p)`.
  """
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels)
  if labels.shape == logits.shape:
    z, y, w = _core.sigmoid_inputs(logits, labels, weights)
    z, y = z[..., None], y[..., None]
    p = jax.nn.sigmoid(z)
    logs = None
    if need_logs:
      log_p = _core.log_sigmoid(z)
      logs = (log_p, log_p - z)  # log(1 - p) = log sigmoid(-z)
    return _OneVsRest(p, 1.0 - p, y, w, logs, None)
  if labels.shape != logits.shape[:-1]:
    raise ValueError(
        f'{loss}: labels must have the logits shape {logits.shape} (binary, '
        f'sigmoid) or logits.shape[:-1] = {logits.shape[:-1]} (multi-class, '
        f'softmax), got {labels.shape}.')
  z, labels, w = _core.softmax_inputs(logits, labels, weights)
  y = _core.label_mask(labels, z.shape[-1]).astype(z.dtype)
  if z.shape[-1] < 2:
    raise ValueError(f'{loss}: the multi-class form needs C >= 2.')
  shifted, e, s = _core.softmax_parts(z)
  inv_s = 1.0 / s
  p = e * inv_s
  # 1 - p as (s - e) / s: it loses relative precision only for the top class
  # as p -> 1, where its absolute error (~1e-7) is harmless for the
  # polynomial terms below; the log form gets an exact value instead.
  p0 = (s - e) * inv_s
  logs = None
  if need_logs:
    log_s = jnp.log(s)
    log_p = shifted - log_s
    # log(1 - p_c): every class but the top one has the top class's unit
    # mass in s - e_c, so that is accurate. For the top class take the
    # exact log-sum-exp of the other classes' log-probabilities.
    top = jax.nn.one_hot(jnp.argmax(z, axis=-1), z.shape[-1], dtype=jnp.bool_)
    top_rest = jax.nn.logsumexp(jnp.where(top, -jnp.inf, log_p), axis=-1,
                                keepdims=True)
    not_top = _core.log_ratio(jnp.where(top, s, s - e), s)
    logs = (log_p, jnp.where(top, top_rest, not_top))
  return _OneVsRest(p, p0, y, w, logs, labels)


def _safe_ratio(num, den):
  return num / jnp.maximum(den, jnp.finfo(den.dtype).eps)


def _set_level(per_class, w):
  """Mean over classes; exactly 0 when every instance is masked."""
  return jnp.where(jnp.sum(w) > 0, jnp.mean(per_class), 0.0)


def dsc(logits, labels, *, weights=None, alpha=1.0, gamma=1.0):
  """Self-adjusting per-instance dice loss (DSC) of Li et al. 2020.

  Args:
    logits: `[...]` (binary) or `[..., C]` (multi-class) float.
    labels: `[...]` 0/1 (binary) or int class ids (multi-class).
    weights: `[...]` or None.
    alpha: self-adjusting exponent >= 0; 0 gives the smoothed per-instance
      dice `1 - (2 p y + gamma) / (p + y + gamma)`.
    gamma: smoothing >= 0; with gamma = 0 negatives get no gradient.

  Returns:
    Scalar: weighted mean over instances of the (class-averaged) loss.
  """
  _checks.check_range('dsc', 'alpha', alpha, lo=0)
  _checks.check_range('dsc', 'gamma', gamma, lo=0)
  fast = _core.integer_valued(alpha)
  ovr = _one_vs_rest('dsc', logits, labels, weights, need_logs=not fast)
  if fast:  # (1 - p)^alpha p as a polynomial: no transcendentals.
    f = ovr.p * jax.lax.integer_pow(ovr.p0, int(alpha)) if alpha else ovr.p
  else:  # exp(alpha log(1 - p) + log p): finite gradient as p -> 1.
    f = jnp.exp(alpha * ovr.logs[1] + ovr.logs[0])
  # 1 - DSC for y = 1 and for y = 0 (where it is 1 - gamma / (f + gamma)).
  pos = lambda f: 1.0 - _safe_ratio(2.0 * f + gamma, f + 1.0 + gamma)
  neg = lambda f: 1.0 - _safe_ratio(jnp.asarray(gamma, f.dtype), f + gamma)
  if ovr.labels is None:  # Binary: one class, y in {0, 1}.
    per_instance = jnp.where(ovr.y[..., 0] > 0.5, pos(f[..., 0]),
                             neg(f[..., 0]))
  else:
    # One-vs-rest: every class is a negative except the label, so sum the
    # negative form over all classes and swap in the label's positive form
    # (one division per class instead of a select between two).
    f_y = jnp.take_along_axis(f, ovr.labels[..., None], axis=-1)[..., 0]
    per_instance = (jnp.sum(neg(f), axis=-1) - neg(f_y) + pos(f_y))
    per_instance = per_instance / f.shape[-1]
  return _core.weighted_mean(per_instance, ovr.w)


def dice(logits, labels, *, weights=None, gamma=1.0):
  """Squared-denominator dice loss (DL), set level over the batch.

  Args:
    logits, labels, weights: as in `dsc`.
    gamma: smoothing >= 0.

  Returns:
    Scalar: mean over the K one-vs-rest problems of the set-level loss.
  """
  _checks.check_range('dice', 'gamma', gamma, lo=0)
  ovr = _one_vs_rest('dice', logits, labels, weights)
  p, y, w = ovr.p, ovr.y, ovr.w
  wk = w[..., None]
  axes = tuple(range(p.ndim - 1))
  inter = jnp.sum(wk * p * y, axis=axes)
  den = jnp.sum(wk * (p * p + y * y), axis=axes)
  per_class = 1.0 - _safe_ratio(2.0 * inter + gamma, den + gamma)
  return _set_level(per_class, w)


def tversky(logits, labels, *, weights=None, alpha=0.3, beta=0.7, gamma=1.0):
  """Tversky loss (TL), set level over the batch.

  Args:
    logits, labels, weights: as in `dsc`.
    alpha: false-positive weight >= 0.
    beta: false-negative weight >= 0.
    gamma: smoothing >= 0.

  Returns:
    Scalar: mean over the K one-vs-rest problems of the set-level loss.
  """
  _checks.check_range('tversky', 'alpha', alpha, lo=0)
  _checks.check_range('tversky', 'beta', beta, lo=0)
  _checks.check_range('tversky', 'gamma', gamma, lo=0)
  ovr = _one_vs_rest('tversky', logits, labels, weights)
  p, y, w = ovr.p, ovr.y, ovr.w
  wk = w[..., None]
  axes = tuple(range(p.ndim - 1))
  wp = wk * p
  tp = jnp.sum(wp * y, axis=axes)
  # FP = sum p_1 y_0 = sum p_1 - TP and FN = sum p_0 y_1 = sum y_1 - TP:
  # two fewer [..., K] products than summing them directly.
  fp = jnp.sum(wp, axis=axes) - tp
  fn = jnp.sum(wk * y, axis=axes) - tp
  per_class = 1.0 - _safe_ratio(tp + gamma, tp + alpha * fp + beta * fn + gamma)
  return _set_level(per_class, w)
