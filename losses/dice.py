"""Dice-family losses of Li et al., "Dice Loss for Data-imbalanced NLP Tasks"
(ACL 2020): self-adjusting DSC, squared-denominator dice (DL), Tversky (TL).

Notation, per binary problem: `p_i` the probability of the positive class,
`y_i` in {0, 1}, `w_i` the instance weight, `f_i = (1 - p_i)^alpha p_i`.

* DSC, per instance (element-level: any `reduction`):
    `1 - (2 f_i y_i + gamma) / (f_i + y_i + gamma)`
* DL, set level (sums over the unmasked instances of a set):
    `1 - (2 sum w p y + s_nr) / (sum w p^2 + sum w y^2 + s_dr)`  (Milletari
    et al. 2016)
* TL, set level, with TP = sum w p y, FP = sum w p (1 - y), FN = sum w (1-p) y:
    `1 - (TP + s_nr) / (TP + alpha FP + beta FN + s_dr)`
  alpha weighs false positives, beta false negatives (Salehi et al. 2017:
  0.3 / 0.7; 0.5 / 0.5 is the plain dice).

Forms, from the shapes: binary (logits `[...]`, sigmoid, 0/1 labels of that
shape: one problem) or multi-class (logits `[..., C]`, softmax, int labels
`[...]`: C one-vs-rest problems `p_ic`, `y_ic = [y_i = c]`, averaged over
classes; absent classes count through their false positives).

What DSC optimises: for a positive the term falls as `f` grows, and `f`
peaks at `p = 1 / (1 + alpha)`, so DSC pulls the gold probability there,
not to 1: at alpha = 1 to 0.5, the binary decision boundary (the recorded
ablations, where DSC collapsed, bear on this; alpha = 0 is best at 1). Under 'ovr' with alpha > 0 a
negative class's term `1 - gamma / (f + gamma)` is 0 at `p = 0` and at
`p = 1` alike, so a wrong class near 1 is not pushed down. Both are tested.

`f = exp(alpha log(1 - p) + log p)`, `log(1 - p)` from the other classes'
mass, keeps `0 < alpha < 1` finite as `p -> 1`; denominators are floored at
machine epsilon (reachable only without smoothing); an all-masked set
gives exactly 0.
"""

import jax
import jax.numpy as jnp

from losses import _checks
from losses import _core


def _problems(loss, logits, labels, weights, need_log1m=True):
  """`(binary, log_p, log1m_p, y, w)`: `[..., K]` log-probabilities of the
  positive class and of its complement, 0/1 `y` `[..., K]`, weights `[...]`
  (K = 1 binary, C one-vs-rest); masked instances' inputs are 0."""
  logits, labels = jnp.asarray(logits), jnp.asarray(labels)
  if labels.shape == logits.shape:
    z, y, w = _core.sigmoid_inputs(logits, labels, weights, loss)
    return (True, jax.nn.log_sigmoid(z)[..., None],
            jax.nn.log_sigmoid(-z)[..., None], y[..., None], w)
  if labels.shape != logits.shape[:-1]:
    raise ValueError(
        f'{loss}: labels must have the logits shape {logits.shape} (binary, '
        f'sigmoid) or logits.shape[:-1] = {logits.shape[:-1]} (multi-class, '
        f'softmax), got {labels.shape}.')
  if logits.shape[-1] < 2:
    raise ValueError(f'{loss}: the multi-class form needs C >= 2.')
  z, labels, w = _core.softmax_inputs(logits, labels, weights)
  log1m_p = _core.log1m_softmax(z) if need_log1m else None
  y = jax.nn.one_hot(labels, z.shape[-1], dtype=z.dtype)
  return False, jax.nn.log_softmax(z, axis=-1), log1m_p, y, w


def _ratio(num, den):
  return num / jnp.maximum(den, jnp.finfo(den.dtype).eps)


def dsc(logits, labels, *, weights=None, alpha=1.0, gamma=1.0, form='ovr',
        reduction='mean'):
  """Self-adjusting per-instance dice loss (DSC) of Li et al. 2020.

  Args:
    logits: `[...]` (binary) or `[..., C]` (multi-class) float.
    labels: `[...]` 0/1 (binary) or int class ids (multi-class).
    weights: `[...]` or None.
    alpha: self-adjusting exponent >= 0; 0 gives the smoothed per-instance
      dice `1 - (2 p y + gamma) / (p + y + gamma)`.
    gamma: smoothing >= 0; with gamma = 0 negatives get no gradient.
    form: 'ovr' (the default, kept so existing configs mean what they
      meant): the mean over the K one-vs-rest problems, negatives
      `1 - gamma / (f + gamma)` included. 'gold': only the gold class's
      term `1 - (2 f_y + gamma) / (f_y + 1 + gamma)` (binary: `p_y` is `1 -
      p` for y = 0), as in the authors' code (the seeds' DSCLoss); it does
      not have 'ovr''s blind spot for a wrong class near p = 1 (above).
    reduction: 'mean' | 'sum' | 'none' (per instance, `[...]`).
  """
  _checks.check_range('dsc', 'alpha', alpha, lo=0)
  _checks.check_range('dsc', 'gamma', gamma, lo=0)
  if form not in ('ovr', 'gold'):
    raise ValueError(f"dsc: form must be 'ovr' or 'gold', got {form!r}.")
  binary, log_p, log1m_p, y, w = _problems('dsc', logits, labels, weights)
  if form == 'gold' and binary:   # The gold class of a negative is class 0.
    pos = y > 0.5
    log_p, log1m_p = (jnp.where(pos, log_p, log1m_p),
                      jnp.where(pos, log1m_p, log_p))
    y = jnp.ones_like(y)
  f = jnp.exp(alpha * log1m_p + log_p)
  term = 1.0 - _ratio(2.0 * f * y + gamma, f + y + gamma)
  per = jnp.sum(y * term, -1) if form == 'gold' else jnp.mean(term, -1)
  return _core.reduce(per, w, reduction, 'dsc')


def _set_level(loss, set_fn, logits, labels, weights, *, batch, exclude,
               class_weights, reduction):
  """`set_fn(tp, sq, pos, mass) -> [..., K]` averaged over the included
  classes, over the whole batch (`batch`) or per instance (leading axis)."""
  if batch:
    _core.check_reduction(
        loss, reduction, ('mean',),
        'with batch=True the loss is one set-level value for the batch (its '
        'sums run over every instance). Use batch=False for per-instance '
        'values.')
  else:
    _core.check_reduction(loss, reduction)
  binary, log_p, _, y, w = _problems(loss, logits, labels, weights, False)
  k = y.shape[-1]
  if binary and (exclude or class_weights is not None):
    raise ValueError(f'{loss}: exclude and class_weights need the '
                     'multi-class form (logits [..., C], int labels).')
  if not batch and w.ndim < 1:
    raise ValueError(f'{loss}: batch=False needs a leading instance axis.')
  keep = jnp.ones([k], y.dtype)
  if exclude:
    ids = [int(c) for c in exclude]
    if any(c < 0 or c >= k for c in ids) or len(set(ids)) == k:
      raise ValueError(f'{loss}: exclude must list class ids in [0, {k}) and '
                       f'leave at least one class, got {list(exclude)}.')
    keep = keep.at[jnp.asarray(ids)].set(0.0)
  if class_weights is not None:
    _checks.check_range(loss, 'class_weights', class_weights, lo=0)
    keep = keep * _core.class_vector(loss, 'class_weights', class_weights, k,
                                     y.dtype)
  p, wk = jnp.exp(log_p), w[..., None]
  axes = tuple(range(0 if batch else 1, w.ndim))
  sums = [jnp.sum(wk * a, axes) for a in (p * y, p * p, y * y, p)]
  per = jnp.sum(keep * set_fn(*sums), -1) / jnp.sum(keep)
  present = jnp.sum(w, axes) != 0  # all masked: exactly 0 (NaN stays NaN)
  if batch:
    return jnp.where(present, per, 0.0)
  return _core.reduce(jnp.where(present, per, 0.0), present.astype(per.dtype),
                      reduction, loss)


def _smoothing(loss, gamma, smooth_nr, smooth_dr):
  for key, v in (('gamma', gamma), ('smooth_nr', smooth_nr),
                 ('smooth_dr', smooth_dr)):
    _checks.check_range(loss, key, v, lo=0)
  return (gamma if smooth_nr is None else smooth_nr,
          gamma if smooth_dr is None else smooth_dr)


def dice(logits, labels, *, weights=None, gamma=1.0, smooth_nr=None,
         smooth_dr=None, batch=True, exclude=(), class_weights=None,
         reduction='mean'):
  """Squared-denominator dice loss (DL).

  Args:
    logits, labels, weights: as in `dsc`.
    gamma: smoothing >= 0 of numerator and denominator alike.
    smooth_nr, smooth_dr: numerator / denominator smoothing (MONAI's names);
      each defaults to `gamma`.
    batch: True: one set over the whole batch. False: a set per instance
      (sums over all axes but the first; `[B, T, C]` tagging: per sequence),
      then reduced over instances that have an unmasked element.
    exclude: class ids left out of the class mean (e.g. the 'O' tag;
      MONAI's include_background=False). Multi-class form only.
    class_weights: None or `[C]` >= 0: the class mean becomes
      `sum_c a_c L_c / sum_c a_c` (over the included classes).
    reduction: 'mean'; with batch=False also 'sum' and 'none' (`[B]`).
  """
  s_nr, s_dr = _smoothing('dice', gamma, smooth_nr, smooth_dr)

  def set_fn(tp, sq, pos, mass):
    del mass
    return 1.0 - _ratio(2.0 * tp + s_nr, sq + pos + s_dr)

  return _set_level('dice', set_fn, logits, labels, weights, batch=batch,
                    exclude=exclude, class_weights=class_weights,
                    reduction=reduction)


def tversky(logits, labels, *, weights=None, alpha=0.3, beta=0.7, gamma=1.0,
            smooth_nr=None, smooth_dr=None, batch=True, exclude=(),
            class_weights=None, reduction='mean'):
  """Tversky loss (TL).

  Args:
    logits, labels, weights: as in `dsc`.
    alpha: false-positive weight >= 0.
    beta: false-negative weight >= 0.
    gamma, smooth_nr, smooth_dr, batch, exclude, class_weights, reduction:
      as in `dice`.
  """
  _checks.check_range('tversky', 'alpha', alpha, lo=0)
  _checks.check_range('tversky', 'beta', beta, lo=0)
  s_nr, s_dr = _smoothing('tversky', gamma, smooth_nr, smooth_dr)

  def set_fn(tp, sq, pos, mass):
    del sq
    fp, fn = mass - tp, pos - tp
    return 1.0 - _ratio(tp + s_nr, tp + alpha * fp + beta * fn + s_dr)

  return _set_level('tversky', set_fn, logits, labels, weights, batch=batch,
                    exclude=exclude, class_weights=class_weights,
                    reduction=reduction)
