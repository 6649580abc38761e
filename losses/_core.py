"""Shared plumbing: compute dtype, input checks and masking, reductions.

Conventions (see also the package docstring): an "element" is a softmax row
`[...]` of `logits[..., C]`, or one sigmoid logit. Masked (weight 0) logits
and labels are replaced by 0 before any arithmetic (`jnp.where`, whose
gradient is 0 there), so NaN, inf or label -100 in padding changes neither
value nor gradient; an unmasked class id outside `[0, C)` gets weight NaN,
so the loss is NaN and a label bug stops training.
"""

import jax
import jax.numpy as jnp

from losses import _checks

REDUCTIONS = ('mean', 'sum', 'none')


def compute_dtype(x) -> jnp.dtype:
  """At least float32: bf16/fp16 are upcast, fp64 (x64 mode) is kept."""
  return jnp.promote_types(jnp.result_type(x), jnp.float32)


def check_reduction(loss, reduction, allowed=REDUCTIONS, why=''):
  """Raises ValueError unless `reduction` is one of `allowed`."""
  if reduction not in allowed:
    if reduction in REDUCTIONS:
      raise ValueError(f'{loss}: reduction={reduction!r} is not available: '
                       f'{why} Use one of {list(allowed)}.')
    raise ValueError(f'{loss}: reduction must be one of {list(REDUCTIONS)}, '
                     f'got {reduction!r}.')


def reduce(per_element, weights, reduction, loss='loss'):
  """'mean' `sum(w l) / max(sum(w), tiny)` (all masked: 0), 'sum'
  `sum(w l)`, 'none' `w l` (masked elements exactly 0)."""
  check_reduction(loss, reduction)
  weighted = weights * per_element
  if reduction == 'none':
    return weighted
  total = jnp.sum(weighted)
  if reduction == 'sum':
    return total
  tiny = jnp.finfo(per_element.dtype).tiny
  return total / jnp.maximum(jnp.sum(weights), tiny)


def element_weights(weights, elem_shape, *, dtype, allow_class_axis=False):
  """`weights` (None: ones) as a `dtype` array of shape `elem_shape`; with
  `allow_class_axis`, `elem_shape[:-1]` is broadcast over the last axis."""
  elem_shape = tuple(elem_shape)
  if weights is None:
    return jnp.ones(elem_shape, dtype)
  weights = jnp.asarray(weights)
  if weights.shape == elem_shape:
    return weights.astype(dtype)
  if allow_class_axis and elem_shape and weights.shape == elem_shape[:-1]:
    return jnp.broadcast_to(weights.astype(dtype)[..., None], elem_shape)
  allowed = [elem_shape] + ([elem_shape[:-1]] if allow_class_axis else [])
  raise ValueError(
      f'weights has shape {weights.shape}; expected one of {allowed}.')


def _class_ids(labels, weights, num_classes):
  """Masked labels set to 0; an unmasked label outside `[0, C)` sets its
  weight to NaN. Returns `(labels, weights, live)`."""
  active = weights > 0
  invalid = active & ((labels < 0) | (labels >= num_classes))
  live = active & ~invalid
  weights = jnp.where(invalid, jnp.nan, weights).astype(weights.dtype)
  return jnp.where(live, labels, 0), weights, live


def softmax_inputs(logits, labels, weights):
  """`(logits [..., C], labels [...], weights [...])` checked, in the
  compute dtype, masked rows' logits and labels 0. Labels: int `[...]` in
  `[0, C)` (anything where masked); weights: None or `[...]`."""
  logits, labels = jnp.asarray(logits), jnp.asarray(labels)
  if logits.ndim < 1:
    raise ValueError('softmax losses need logits of shape [..., C].')
  if labels.shape != logits.shape[:-1]:
    raise ValueError(
        f'labels shape {labels.shape} must equal logits.shape[:-1] = '
        f'{logits.shape[:-1]} (integer class ids).')
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f'softmax losses need integer labels, got {labels.dtype}.')
  dtype = compute_dtype(logits)
  w = element_weights(weights, labels.shape, dtype=dtype)
  labels, w, live = _class_ids(labels, w, logits.shape[-1])
  return jnp.where(live[..., None], logits.astype(dtype), 0.0), labels, w


def sigmoid_inputs(logits, labels, weights, loss='loss'):
  """`(logits, labels, weights)` of a sigmoid (per-logit) loss, all of the
  logits' shape (`[...]` or `[..., C]`) in the compute dtype, masked
  elements 0. Labels: 0/1 of the logits' shape, or int class ids
  `logits.shape[:-1]` read as one-hot (an unmasked id outside `[0, C)`
  gives NaN). Weights: None, the labels' or the logits' shape."""
  logits, labels = jnp.asarray(logits), jnp.asarray(labels)
  dtype = compute_dtype(logits)
  if (logits.ndim >= 1 and labels.shape == logits.shape[:-1]
      and jnp.issubdtype(labels.dtype, jnp.integer)):
    c = logits.shape[-1]
    w = element_weights(weights, labels.shape, dtype=dtype)
    labels, w, _ = _class_ids(labels, w, c)
    labels = jax.nn.one_hot(labels, c, dtype=dtype)
    w = jnp.broadcast_to(w[..., None], logits.shape)
  elif labels.shape == logits.shape:
    w = element_weights(weights, logits.shape, dtype=dtype,
                        allow_class_axis=True)
  else:
    raise ValueError(
        f'{loss}: labels must be 0/1 of the logits shape {logits.shape}, or '
        f'integer class ids of shape {logits.shape[:-1]}, got '
        f'{labels.shape} {labels.dtype}.')
  keep = w > 0
  return (jnp.where(keep, logits.astype(dtype), 0.0),
          jnp.where(keep, labels.astype(dtype), 0.0), w)


def pick(x, labels):
  """`x[..., y]` for `x [..., C]`, int labels `[...]`, as a masked sum (its
  gradient is a select, not a scatter; -inf elsewhere in the row is fine)."""
  at = jax.nn.one_hot(labels, x.shape[-1], dtype=bool)
  return jnp.sum(jnp.where(at, x, 0.0), axis=-1)


def log1m_softmax_at(log_p, at):
  """`log(1 - p_c)`, `[...]`, at the one class per row marked in `at`, as
  `logsumexp_{c' != c} log p_c'`: exact where `log1p(-p_c)` gives log 0."""
  return jax.nn.logsumexp(log_p, axis=-1, where=~at)


def log1m_softmax(z):
  """`log(1 - softmax(z)_c)` for every class, `[..., C]`, exact as p -> 1.

  For every class but the row's top one, `sum_{c' != c} e^(z_c' - max)`
  includes the top class's 1, so `log(s - e_c) - log(s)` is accurate; the
  top class takes the log-sum-exp of the others (`log1m_softmax_at`).
  """
  log_p = jax.nn.log_softmax(z, axis=-1)
  top = jax.nn.one_hot(jnp.argmax(z, axis=-1), z.shape[-1], dtype=bool)
  e = jnp.exp(z - jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True)))
  s = jnp.sum(e, axis=-1, keepdims=True)
  not_top = jnp.log(jnp.where(top, s, s - e)) - jnp.log(s)
  return jnp.where(top, log1m_softmax_at(log_p, top)[..., None], not_top)


def nll_from_log1m(log_p_y, log1m_p_y):
  """`-log p_y`, taken as `-log1p(-(1 - p_y))` when `1 - p_y < 1/2`, so it
  keeps its relative precision as `p_y -> 1` (where `log_softmax` rounds it
  to 0 once `1 - p_y < 6e-8`)."""
  half = jnp.log(0.5)
  confident = log1m_p_y < half
  from_rest = -jnp.log1p(-jnp.exp(jnp.minimum(log1m_p_y, half)))
  return jnp.where(confident, from_rest, -log_p_y)


def class_vector(loss, key, vec, num_classes, dtype):
  """`vec` as a `[C]` array in `dtype`; checks C when concrete."""
  _checks.check_class_vector(loss, key, vec, num_classes)
  return jnp.asarray(vec, dtype)
