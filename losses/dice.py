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

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from losses import _checks
from losses import _core


class _Problems(NamedTuple):
  """The K binary problems: K = 1 (binary form) or C (one-vs-rest)."""
  binary: bool
  z: jax.Array  # [..., K] logits (masked, compute dtype).
  y: jax.Array  # [..., K] 0/1 positive-class indicator, y_1.
  w: jax.Array  # [...] instance weights.
  labels: jax.Array | None  # [...] class ids (multi-class form only).


def _problems(loss, logits, labels, weights):
  """Validated, masked inputs in the binary or one-vs-rest form.

  Args:
    loss: name, for messages.
    logits, labels, weights: as in `dsc`.
  """
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels)
  if _check_form(loss, logits, labels):
    z, y, w = _core.sigmoid_inputs(logits, labels, weights)
    return _Problems(True, z[..., None], y[..., None], w, None)
  z, labels, w = _core.softmax_inputs(logits, labels, weights)
  y = _core.label_mask(labels, z.shape[-1]).astype(z.dtype)
  return _Problems(False, z, y, w, labels)


def _log_probs(problems):
  """Exact `(log p, log(1 - p))`, each `[..., K]`, for the autodiff path."""
  z = problems.z
  if problems.binary:
    log_p = _core.log_sigmoid(z)
    return log_p, log_p - z  # log(1 - p) = log sigmoid(-z)
  shifted, e, s = _core.softmax_parts(z)
  log_s = jnp.log(s)
  log_p = shifted - log_s
  # log(1 - p_c): every class but the top one has the top class's unit mass
  # in s - e_c, so that is accurate. For the top class take the exact
  # log-sum-exp of the other classes' log-probabilities.
  top = jax.nn.one_hot(jnp.argmax(z, axis=-1), z.shape[-1], dtype=jnp.bool_)
  top_rest = jax.nn.logsumexp(jnp.where(top, -jnp.inf, log_p), axis=-1,
                              keepdims=True)
  not_top = _core.log_ratio(jnp.where(top, s, s - e), s)
  return log_p, jnp.where(top, top_rest, not_top)


def _safe_ratio(num, den):
  return num / jnp.maximum(den, jnp.finfo(den.dtype).eps)


# ---------------------------------------------------------------------------
# Hand-written gradients. Each loss below is a function of the class
# probabilities `p`; its gradient in `p` is a few elementwise terms, and the
# chain through the softmax is `dz = p * (g_p - sum_c g_p p)` (sigmoid:
# `dz = g_p p (1 - p)`). Autodiff of the same forward builds a backward pass
# 5-10x its size (XLA cost analysis), which made these losses 2-3x slower
# than CE; fused, they cost about CE on CPU (losses/README.md). A forward
# function `(binary, logits, labels, w, hparams) -> (loss, (g_z, g_w))`
# returns the scalar and its gradients in the logits and in the instance
# weights; `_fused` makes them the VJP. Tested against finite differences
# and autodiff of the plain formulas.


def _fused_loss(forward, loss, logits, labels, weights, hparams):
  """Runs `forward` on validated inputs with its hand-written gradient.

  The masking (`_core.softmax_inputs` / `sigmoid_inputs`) runs inside the
  custom VJP, so the backward pass writes the logits' gradient directly
  (masked elements get exactly 0 from their zero weight) instead of
  chaining it back through a select: one pass over `[..., C]` less.
  """
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels)
  binary = _check_form(loss, logits, labels)
  dtype = _core.compute_dtype(logits)
  w = _core.element_weights(weights, labels.shape, dtype=dtype,
                            allow_class_axis=binary)
  hparams = {k: jnp.asarray(v, dtype) for k, v in hparams.items()}
  return _fused(forward, binary, logits, labels, w, hparams)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _fused(forward, binary, logits, labels, w, hparams):
  return forward(binary, logits, labels, w, hparams)[0]


def _fused_fwd(forward, binary, logits, labels, w, hparams):
  value, (g_z, g_w) = forward(binary, logits, labels, w, hparams)
  # An empty array carries the labels' dtype (residuals must be arrays).
  return value, (g_z, g_w, hparams, jnp.zeros((0,), labels.dtype))


def _fused_bwd(forward, binary, res, g):
  del forward
  g_z, g_w, hparams, labels_carrier = res
  # Labels are data: a zero cotangent (float0 for integer labels).
  labels_shape = g_z.shape if binary else g_z.shape[:-1]
  zero_labels = _core.zero_cotangents(
      jnp.zeros(labels_shape, labels_carrier.dtype))
  return ((g * g_z).astype(g_z.dtype), zero_labels, g * g_w,
          _core.zero_cotangents(hparams))


_fused.defvjp(_fused_fwd, _fused_bwd)


def _check_form(loss, logits, labels):
  """Whether the shapes give the binary form; raises if neither form fits."""
  if labels.shape == logits.shape:
    return True
  if labels.shape != logits.shape[:-1]:
    raise ValueError(
        f'{loss}: labels must have the logits shape {logits.shape} (binary, '
        f'sigmoid) or logits.shape[:-1] = {logits.shape[:-1]} (multi-class, '
        f'softmax), got {labels.shape}.')
  if logits.shape[-1] < 2:
    raise ValueError(f'{loss}: the multi-class form needs C >= 2.')
  return False


def _dsc_power(p, p0, alpha):
  """`f = p (1 - p)^alpha` and `df/dp` for whole-number `alpha` (any shape)."""
  if not alpha:
    return p, jnp.ones_like(p)
  p0_a1 = jax.lax.integer_pow(p0, alpha - 1) if alpha > 1 else jnp.ones_like(p0)
  return p * p0_a1 * p0, p0_a1 * (p0 - alpha * p)


def _dsc_forms(f, gamma):
  """Per-class DSC terms from `f`: negative form `1 - gamma / (f + gamma)`,
  positive form `(1 - f) / (f + 1 + gamma)`, and their derivatives in f."""
  eps = jnp.finfo(f.dtype).eps
  den_neg = f + gamma
  safe_neg = jnp.maximum(den_neg, eps)
  den_pos = f + 1.0 + gamma                   # >= 1
  neg = 1.0 - gamma / safe_neg
  d_neg = jnp.where(den_neg > eps, gamma / (safe_neg * safe_neg), 0.0)
  return neg, d_neg, (1.0 - f) / den_pos, -(2.0 + gamma) / (den_pos * den_pos)


def _dsc_neg_shared(f, gamma):
  """The negative form and its derivative (as `_dsc_forms`) from one
  reciprocal `r = 1 / (f + gamma)`, which XLA then computes in a pass of
  its own."""
  eps = jnp.finfo(f.dtype).eps
  den = f + gamma
  r = 1.0 / jnp.maximum(den, eps)
  return 1.0 - gamma * r, jnp.where(den > eps, gamma * r * r, 0.0)


# How `_dsc_forward` lays out the multi-class problem; the math is the same.
# Measured on XLA CPU, 2 cores (losses/README.md):
# * Up to 17 classes the class axis is too short for vector reductions along
#   it, so the logits are transposed to `[C, N]` and every class sum runs
#   over the major axis (vectorised over rows), at the cost of a transpose
#   in and out. Tagging [64, 128, 9]: 1.33x -> 1.03x CE, [1024, 9] 1.85x ->
#   0.85x; 17 tags (UPOS) [64 x 128, 17] 1.20x -> 1.04x, [4096, 17] 1.21x
#   -> 1.13x. Beyond that the two transposes (strided copies on XLA CPU)
#   cost more per element as the class count grows ([1024, 20]: 44 us for
#   the gradient's, [1024, 16]: 8 us; [64 x 128, 18] 1.02x in rows against
#   1.38x, [64 x 128, 20] 1.05x against 1.78x), so 18-22 classes run
#   class-major only in the small regime below. (XLA CPU's loop fusions
#   over `[N, K]` run ~2x slower per element with 9-24 classes than with
#   <= 8 or >= 25, losses/README.md, so rows x classes is slow there:
#   [256, 17] 1.53x -> 0.80x CE class-major, [256, 20] 1.41x -> 1.05x,
#   [1024, 19] 1.38x -> 0.94x; a tie at [1024, 20]-[1024, 22].) From 23
#   classes rows win.
# * XLA CPU splits a compute-heavy loop fusion over threads once it reads
#   more than ~10 KB; below ~32K elements the split costs more than it
#   saves (~5-10 us per fusion). Forming `1 / (f + gamma)` once puts the
#   divide in a cheap pass of its own and keeps the other fusions light
#   enough not to be split ([256, 12]: 1.49x -> 0.93x CE; [256, 20]:
#   1.9x -> 1.4x).
_CLASS_MAJOR_MAX_CLASSES = 17
_SMALL_CLASS_MAJOR_MAX_CLASSES = 22
_SMALL_BELOW = 32768      # rows x classes
# The set losses (dice, Tversky) read the logits less and sum per class over
# the rows, which favours rows x classes: class-major pays only up to 8
# classes, where YNNPACK's row-wise softmax is slow (4.6 ns per element at
# [8192, 3] against ~1 at 9 classes). Dice [8192, 3] 1.84x -> 0.58x CE,
# [4096, 6] 2.14x -> 0.95x. At 9-14 classes it pays only in the small
# regime (rows x classes < 32K: dice [1024, 9] 1.22x -> 0.85x, [16 x 128,
# 9] 1.19x -> 0.80x, [256, 12] 1.23x -> 0.86x; Tversky alike), and there
# dice's row sums of `A p^2` go through a dot: as one more term of the
# variadic reduce they made that fusion compute-heavy enough for XLA to
# split it over the threads ([512, 12]: 1.38x against 0.92x). Up to 60K
# elements class-major still pays, with that sum back in the reduce (now
# large enough for the threads to pay): dice / Tversky on the NER
# fine-tuning shape [32 x 128, 9] 1.13x / 1.11x -> 1.00x / 0.92x, [32 x 128,
# 12] 1.14x / 0.99x -> 0.95x / 0.78x, [4096, 12] 1.12x / 1.03x -> 0.99x /
# 0.83x, [48 x 128, 9] 0.97x / 0.85x -> 0.85x / 0.74x; through the dot
# [32 x 128, 9] lost (1.53x). Larger problems stay in rows ([56 x 128, 9]
# 1.16x / 1.00x against 1.29x / 1.06x class-major, tagging [64 x 128, 9]
# 1.16x against 1.36x; [4096, 16] 0.93x -> 1.62x), as do 15+ classes.
_SET_CLASS_MAJOR_MAX_CLASSES = 8
_SET_SMALL_CLASS_MAJOR_MAX_CLASSES = 14
_SET_MID_BELOW = 60_000   # rows x classes


def _dsc_plan(rows, classes):
  """`(class_major, small)` for a `[rows, classes]` problem; a small one
  forms `1 / (f + gamma)` once and, along a long class axis that does not
  split (`_core.one_pass_sums`), sums with YNNPACK."""
  small = rows * classes < _SMALL_BELOW
  class_major = classes <= _CLASS_MAJOR_MAX_CLASSES or (
      small and classes <= _SMALL_CLASS_MAJOR_MAX_CLASSES)
  return class_major, small


def _dsc_class_padding(classes, class_major):
  """Columns of `-inf` logits to append in rows x classes, so that a class
  axis that `_core.minor_axis_split` cannot split (a prime count from 23)
  sums in vectorised groups of 8: 0, or up to 7.

  Why: such an axis summed as a scalar chain (large problems) or as three
  YNNPACK sums over written-out inputs (small ones); padded, one grouped
  pass, at the price of one copy of the logits and a sliced gradient
  (two runs each, optax CE = 1: DSC [4096, 47] 1.40-1.46x -> 0.99-1.03x,
  [256, 47] 1.40-1.49x -> 1.05x, [2048, 97] 1.65-1.68x -> 1.31-1.38x,
  [64 x 128, 43] 1.46-1.47x -> 1.20-1.25x; losses/README.md). An axis that
  splits, into groups of 5 or 10 say, is not padded: 45 classes padded to
  48 lost (POS-sized [64 x 128, 45] 1.08x -> 1.25x), and 100 to 104 gained
  nothing at [256, 100]. From 23 classes (17-22 are class-major in small
  problems): [64 x 128, 23] 1.16x -> 1.12x, [64 x 128, 31] 1.07x -> 0.91x,
  but 17 or 19 padded to 24 lost ([4096, 19] 1.26x -> 1.31x).
  """
  if class_major or classes <= _SMALL_CLASS_MAJOR_MAX_CLASSES or (
      _core.minor_axis_split(classes) is not None):
    return 0
  padded = -(-classes // _core._VECTOR_GROUP) * _core._VECTOR_GROUP
  if _core.minor_axis_split(padded) != _core._VECTOR_GROUP:
    return 0
  return padded - classes


def _set_plan(rows, classes):
  """`(class_major, sq_rows_by_dot)` for dice / Tversky on `[rows, classes]`."""
  if classes <= _SET_CLASS_MAJOR_MAX_CLASSES:
    return True, False
  if classes <= _SET_SMALL_CLASS_MAJOR_MAX_CLASSES:
    if rows * classes < _SMALL_BELOW:
      return True, True
    if rows * classes < _SET_MID_BELOW:
      return True, False
  return False, False


def _flat_softmax_inputs(logits, labels, w, class_major):
  """Validated multi-class inputs, flattened to N rows.

  Returns:
    `(z, labels [N], w [N], live [N], is_label)`: `z` the logits in the
    compute dtype and `is_label` the bool one-hot, both `[K, N]` if
    `class_major` (the transpose behind an optimization barrier, which
    keeps XLA from sinking it into the max and exp: tagging DSC 1.21x CE
    without, 1.03x with) and `[N, K]` otherwise. Class-major, the masked
    rows' logits are zeroed (the transpose writes them anyway); in rows
    they are as given (NaN, inf, anything), and the caller must select its
    results by `live` (masking up front was a pass of its own: DSC
    [64 x 128, 45] 1.23x -> 1.14x optax CE without it).
  """
  z, labels, w, live = _core.unmasked_softmax_inputs(logits, labels, w)
  k = z.shape[-1]
  n = labels.size
  labels = labels.reshape(n)
  live = live.reshape(n)
  classes = jnp.arange(k, dtype=labels.dtype)
  if class_major:
    z = _core.zero_unless(live[:, None], z.reshape(n, k))
    return (jax.lax.optimization_barrier(z.T), labels, w.reshape(n), live,
            labels[None] == classes[:, None])
  return (z.reshape(n, k), labels, w.reshape(n), live,
          labels[:, None] == classes[None])


def _dsc_forward(binary, logits, labels, w, hparams, *, alpha):
  """DSC with whole-number `alpha`. Multi-class: every class in the negative
  form, the label's swapped for the positive form at row level, so neither
  the one-hot labels nor `dL/dp` is materialised over `[N, K]`; the label's
  gradient term is added by one select on the result (as in
  `_set_forward`). The layout (rows x classes, or classes x rows for few
  classes) and the reciprocal's pass are picked from the static shape
  (`_dsc_plan`)."""
  if binary:
    return _binary_dsc_forward(logits, labels, w, hparams, alpha=alpha)
  gamma = hparams['gamma']
  k = logits.shape[-1]
  class_major, small = _dsc_plan(labels.size, k)
  z, labels, w, live, is_label = _flat_softmax_inputs(logits, labels, w,
                                                      class_major)
  axis = 0 if class_major else 1       # The class axis.
  # Row quantities `[N]` broadcast against `[K, N]` or `[N, K]`.
  rows = (lambda v: v[None]) if class_major else (lambda v: v[:, None])
  zero = jnp.zeros((), z.dtype)
  pad = _dsc_class_padding(k, class_major)
  if pad:  # Padded classes: e = p = 0 exactly; only `neg` is masked below.
    z = jnp.pad(z, ((0, 0), (0, pad)), constant_values=-jnp.inf)
    is_label = jnp.pad(is_label, ((0, 0), (0, pad)))
  e = jnp.exp(z - jnp.max(z, axis=axis, keepdims=True))
  e_at_label = jnp.where(is_label, e, zero)
  if class_major:
    s, e_y = _core.sums_in_one_pass((e, e_at_label), axis)
  else:  # A plain row sum is a fast YNNPACK reduce on CPU; e_y comes below.
    s = jnp.sum(e, axis=axis)
  inv_s = 1.0 / s
  p = e * rows(inv_s)
  # 1 - p as (s - e) / s: accurate except for the top class as p -> 1,
  # where its absolute error (~1e-7) is harmless to the polynomials here.
  p0 = (rows(s) - e) * rows(inv_s)
  f, df = _dsc_power(p, p0, alpha)
  if small:
    neg, d_neg = _dsc_neg_shared(f, gamma)
  else:
    neg, d_neg, _, _ = _dsc_forms(f, gamma)
  d_neg = d_neg * df                          # d neg / dp
  if pad:  # The padded classes' negative form, 1 - gamma / gamma: 1 at 0.
    neg = jnp.where(jnp.arange(k + pad) < k, neg, zero)
  if class_major:
    sum_neg, sum_dp = _core.sums_in_one_pass((neg, d_neg * p), axis)
  elif small and not _core.one_pass_sums(k + pad):
    # Small, with a long class axis that does not split even padded (from
    # 105 classes: 107, 109, ...): a YNNPACK sum per array, each over a
    # materialised input; a gather of the label's e is cheaper than one
    # more ([256, 100] 1.76x -> 1.66x CE, [256, 48] 1.66x -> 1.56x, before
    # the split).
    sum_neg, sum_dp = (jnp.sum(neg, axis=axis),
                       jnp.sum(d_neg * p, axis=axis))
    e_y = jnp.take_along_axis(e, labels[:, None], axis=1)[:, 0]
  else:
    # One pass, whatever the class count (grouped where the class axis
    # splits, `_core.minor_axis_split`: [64 x 128, 45] 1.47x -> 1.14x
    # optax CE, [4096, 64] 1.71x -> 1.10x, [256, 48] 1.49x -> 1.13x).
    # Even unsplit, above 32K elements three YNNPACK passes over
    # materialised inputs cost more than this one scalar-loop reduce:
    # [64 x 128, 45] 2.11x against 1.48x CE, [4096, 64] 2.08x against
    # 1.71x, [1024, 40] 1.40x against 1.16x.
    sum_neg, sum_dp, e_y = _core.sums_in_one_pass(
        (neg, d_neg * p, e_at_label), axis)
  # The label's p and 1 - p, as p and p0 above (bit for bit).
  p_y = e_y * inv_s
  f_y, df_y = _dsc_power(p_y, (s - e_y) * inv_s, alpha)
  neg_y, d_neg_y, pos_y, d_pos_y = _dsc_forms(f_y, gamma)
  # Masked rows (garbage logits in rows) count 0, in the value and in the
  # weights' gradient.
  per_instance = jnp.where(live, (sum_neg - neg_y + pos_y) / k, 0.0)
  total = jnp.sum(w)
  tiny = jnp.finfo(p.dtype).tiny
  denom = jnp.maximum(total, tiny)
  value = jnp.sum(w * per_instance) / denom
  scale = w / (denom * k)
  swap = (d_pos_y - d_neg_y) * df_y           # the label's d/dp, pos - neg
  x = rows(scale) * p * (d_neg - rows(sum_dp + swap * p_y))
  g_z = jnp.where(is_label, x + rows(scale * swap) * p, x)
  if pad:
    g_z = g_z[:, :k]
  if class_major:
    g_z = g_z.T
  else:  # One more select in the same pass: masked rows' garbage out.
    g_z = jnp.where(live[:, None], g_z, 0.0)
  g_z = g_z.reshape(logits.shape)
  g_w = (per_instance - jnp.where(total > tiny, value, 0.0)) / denom
  return value, (g_z.astype(logits.dtype), g_w.reshape(logits.shape[:-1]))


def _binary_dsc_forward(logits, labels, w, hparams, *, alpha):
  """DSC in the binary form, whole-number `alpha`: `[...]` logits, each
  element in the positive or negative form by its 0/1 label."""
  z, y, w = _core.sigmoid_inputs(logits, labels, w)
  p = jax.nn.sigmoid(z)
  p0 = jax.nn.sigmoid(-z)
  f, df = _dsc_power(p, p0, alpha)
  neg, d_neg, pos, d_pos = _dsc_forms(f, hparams['gamma'])
  positive = y > 0.5
  per_instance = jnp.where(positive, pos, neg)
  total = jnp.sum(w)
  tiny = jnp.finfo(p.dtype).tiny
  denom = jnp.maximum(total, tiny)
  value = jnp.sum(w * per_instance) / denom
  g_p = w / denom * jnp.where(positive, d_pos, d_neg) * df
  g_w = (per_instance - jnp.where(total > tiny, value, 0.0)) / denom
  return value, ((g_p * p * p0).astype(logits.dtype), g_w)


# ---------------------------------------------------------------------------
# Set-level losses (DL, TL). Both are functions of four per-problem batch
# statistics, `[K]` each:
#   tp = sum_i w_i p_ik y_ik   pos = sum_i w_i y_ik
#   mass = sum_i w_i p_ik      sq = sum_i w_i p_ik^2
# so the loss is differentiated in the statistics by autodiff (a `[K]`
# problem), and the chain to the logits is written once for both:
#   dL/dp_ik = w_i (D_k y_ik + B_k + 2 A_k p_ik)
# with D, B, A the derivatives in tp, mass, sq. Through the softmax,
#   dL/dz_ik = w_i p_ik (2 A_k p_ik + B_k - r_i) + [y_i = k] w_i D_k p_ik,
#   r_i = sum_k (2 A_k p_ik^2 + B_k p_ik) + D_{y_i} p_{i y_i},
# i.e. a product with a `[K]` vector for the row sum and the label's term
# added by one select, instead of materialising `y` and `dL/dp` over
# `[N, K]`. On CPU this took dice / Tversky from 1.6-1.8x CE to 1.1-1.2x on
# the tagging shape (losses/README.md).


def _dice_set(stats, hparams):
  """DL per problem; `y^2 = y` for 0/1 labels, so `sum y^2` is `pos`."""
  gamma = hparams['gamma']
  den = stats['sq'] + stats['pos'] + gamma
  return 1.0 - (2.0 * stats['tp'] + gamma) / jnp.maximum(
      den, jnp.finfo(den.dtype).eps)


def _tversky_set(stats, hparams):
  """TL per problem: TP + alpha FP + beta FN with FP = mass - TP, FN = pos - TP."""
  alpha, beta, gamma = hparams['alpha'], hparams['beta'], hparams['gamma']
  tp = stats['tp']
  den = ((1.0 - alpha - beta) * tp + alpha * stats['mass'] +
         beta * stats['pos'] + gamma)
  return 1.0 - (tp + gamma) / jnp.maximum(den, jnp.finfo(den.dtype).eps)


def _set_forward(set_fn, uses, binary, logits, labels, w, hparams):
  """`(loss, (g_z, g_w))` of the set-level loss `mean_k set_fn(stats)_k`.

  `set_fn(stats, hparams) -> [K]` reads tp, pos and the statistics named in
  `uses` ('mass', 'sq'); only those are summed. The statistics and the
  chain back to the logits come from one of three builders: binary,
  class-major (few classes, or a few more in a small problem: `_set_plan`)
  or rows x classes.
  """
  if binary:
    build = _binary_set_stats
  else:
    class_major, sq_rows_by_dot = _set_plan(labels.size, logits.shape[-1])
    build = (functools.partial(_class_major_set_stats,
                               sq_rows_by_dot=sq_rows_by_dot)
             if class_major else _row_major_set_stats)
  stats, total, chain = build(uses, logits, labels, w)
  # All masked: exactly 0. `!= 0`, not `> 0`: a bad label's NaN weight
  # (softmax_inputs) must reach the value, and XLA turns `on * x` into a
  # select on `on`.
  on = (total != 0).astype(total.dtype)

  def mean_loss(stats):
    return on * jnp.mean(set_fn(stats, hparams))

  value, d = jax.value_and_grad(mean_loss)(stats)
  # The `[K]` derivatives, computed once for all N x K elements that read
  # them (one scatter for all; [256, 12] 1.38x -> 1.28x CE, [256, 100]
  # 1.42x -> 1.25x, elsewhere within noise).
  names = sorted(d)
  once = _core.computed_once(jnp.concatenate([d[name] for name in names]))
  d = dict(zip(names, jnp.split(once, len(names))))
  g_z, g_w = chain(d)
  return value, (g_z.astype(logits.dtype), g_w)


def _binary_set_stats(uses, logits, labels, w):
  """Statistics `[1]` of the binary form, `sum(w)` and the chain."""
  z, y, w = _core.sigmoid_inputs(logits, labels, w)
  p = jax.nn.sigmoid(z)
  wp = w * p
  stats = {'tp': jnp.sum(wp * y), 'pos': jnp.sum(w * y)}
  if 'mass' in uses:
    stats['mass'] = jnp.sum(wp)
  if 'sq' in uses:
    stats['sq'] = jnp.sum(wp * p)
  stats = {k: v[None] for k, v in stats.items()}  # One problem: K = 1.

  def chain(d):
    d = {k: v[0] for k, v in d.items()}
    a, b = d.get('sq', 0.0), d.get('mass', 0.0)
    g_z = w * (d['tp'] * y + b + 2.0 * a * p) * p * jax.nn.sigmoid(-z)
    g_w = d['tp'] * p * y + d['pos'] * y + b * p + a * p * p
    return g_z, g_w

  return stats, jnp.sum(w), chain


def _class_major_set_stats(uses, logits, labels, w, *, sq_rows_by_dot):
  """Multi-class statistics `[K]` with the logits transposed to `[K, N]`:
  the softmax and the chain's row sums reduce over the major axis
  (vectorised; see `_dsc_plan`), the row sums of `A p^2` by a dot if
  `sq_rows_by_dot` (see `_SET_SMALL_CLASS_MAJOR_MAX_CLASSES`)."""
  k = logits.shape[-1]
  z, labels, w, _, is_label = _flat_softmax_inputs(logits, labels, w, True)
  e = jnp.exp(z - jnp.max(z, axis=0, keepdims=True))
  p = e * (1.0 / jnp.sum(e, axis=0))
  # Per-class sums run over the minor axis here, which XLA CPU reduces as a
  # scalar loop; as products with `w` they are vectorised dots.
  stats = {'tp': jnp.dot(jnp.where(is_label, p, 0.0), w),
           'pos': _core.bin_sums(labels, w, k)}
  if 'mass' in uses:
    stats['mass'] = jnp.dot(p, w)
  sq = p * p if 'sq' in uses else None
  if sq is not None:
    stats['sq'] = jnp.dot(sq, w)

  def chain(d):
    # dL/dz = w p (2 A p + B - r) + [y = k] w D p with the row sums r (see
    # the section comment); here the row sums are sums over axis 0.
    a = d['sq'][:, None] if 'sq' in uses else 0.0
    b = d['mass'][:, None] if 'mass' in uses else 0.0
    terms = {'tp_y': jnp.where(is_label, d['tp'][:, None] * p, 0.0),
             'pos_y': jnp.where(is_label, d['pos'][:, None], 0.0)}
    if 'sq' in uses and not sq_rows_by_dot:
      terms['sq'] = a * p * p
    if 'mass' in uses:
      terms['mass'] = b * p
    row = dict(zip(terms, _core.sums_in_one_pass(list(terms.values()), 0)))
    rows_sq, rows_mass = row.get('sq', 0.0), row.get('mass', 0.0)
    if 'sq' in uses and sq_rows_by_dot:
      rows_sq = jnp.dot(d['sq'], sq)
    tp_y = row['tp_y']
    r = 2.0 * rows_sq + rows_mass + tp_y
    x = w * p * (2.0 * a * p + b - r)
    g_z = jnp.where(is_label, x + w * d['tp'][:, None] * p, x)
    g_w = rows_sq + rows_mass + tp_y + row['pos_y']
    return g_z.T.reshape(logits.shape), g_w.reshape(logits.shape[:-1])

  return stats, jnp.sum(w), chain


def _row_major_set_stats(uses, logits, labels, w):
  """Multi-class statistics `[K]` over `[N, K]` logits."""
  z, labels, w = _core.softmax_inputs(logits, labels, w)
  k = z.shape[-1]
  _, e, s = _core.softmax_parts(z)
  p = e * (1.0 / s)
  p_y = jnp.take_along_axis(p, labels[..., None], axis=-1)[..., 0]
  flat_w = w.ravel()
  # tp and pos in one pass: per-class sums of (w p_y, w) by label.
  tp_pos = _core.bin_sums(labels.ravel(),
                          jnp.stack([flat_w * p_y.ravel(), flat_w], -1), k)
  stats = {'tp': tp_pos[:, 0], 'pos': tp_pos[:, 1]}
  if 'mass' in uses:
    stats['mass'] = jnp.dot(flat_w, p.reshape(-1, k))
  sq = p * p if 'sq' in uses else None
  if sq is not None:
    stats['sq'] = jnp.dot(flat_w, sq.reshape(-1, k))

  def chain(d):
    # Row sums of the p and p^2 terms, as products with [K] vectors.
    rows_sq = jnp.dot(sq, d['sq']) if sq is not None else 0.0
    rows_mass = jnp.dot(p, d['mass']) if 'mass' in uses else 0.0
    per_class = 0.0
    if sq is not None:
      per_class = 2.0 * d['sq'] * p
    if 'mass' in uses:
      per_class = per_class + d['mass']
    tp_y = d['tp'][labels] * p_y   # (d is computed once: a plain gather)
    r = 2.0 * rows_sq + rows_mass + tp_y
    x = w[..., None] * p * (per_class - r[..., None])
    # The label's term by a select on the result: a select of a [N, K] term
    # added in made this pass 1.3x slower on CPU.
    g_z = jnp.where(_core.label_mask(labels, k),
                    x + w[..., None] * d['tp'] * p, x)
    g_w = rows_sq + rows_mass + tp_y + d['pos'][labels]
    return g_z, g_w

  # sum(w) is sum(pos), on [K].
  return stats, jnp.sum(stats['pos']), chain


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
  if _core.integer_valued(alpha):  # (1 - p)^alpha p as a polynomial.
    forward = functools.partial(_dsc_forward, alpha=int(alpha))
    return _fused_loss(forward, 'dsc', logits, labels, weights,
                       {'gamma': gamma})
  # exp(alpha log(1 - p) + log p), differentiated by JAX: a finite gradient
  # as p -> 1 for 0 < alpha < 1 needs log(1 - p) from the other classes.
  problems = _problems('dsc', logits, labels, weights)
  log_p, log1m_p = _log_probs(problems)
  f = jnp.exp(alpha * log1m_p + log_p)
  # 1 - DSC for y = 1 and for y = 0 (where it is 1 - gamma / (f + gamma)).
  pos = lambda f: 1.0 - _safe_ratio(2.0 * f + gamma, f + 1.0 + gamma)
  neg = lambda f: 1.0 - _safe_ratio(jnp.asarray(gamma, f.dtype), f + gamma)
  if problems.binary:  # One class, y in {0, 1}.
    per_instance = jnp.where(problems.y[..., 0] > 0.5, pos(f[..., 0]),
                             neg(f[..., 0]))
  else:
    # One-vs-rest: every class is a negative except the label, so sum the
    # negative form over all classes and swap in the label's positive form
    # (one division per class instead of a select between two).
    f_y = jnp.take_along_axis(f, problems.labels[..., None], axis=-1)[..., 0]
    per_instance = (jnp.sum(neg(f), axis=-1) - neg(f_y) + pos(f_y))
    per_instance = per_instance / f.shape[-1]
  return _core.weighted_mean(per_instance, problems.w)


def dice(logits, labels, *, weights=None, gamma=1.0):
  """Squared-denominator dice loss (DL), set level over the batch.

  Args:
    logits, labels, weights: as in `dsc`.
    gamma: smoothing >= 0.

  Returns:
    Scalar: mean over the K one-vs-rest problems of the set-level loss.
  """
  _checks.check_range('dice', 'gamma', gamma, lo=0)
  forward = functools.partial(_set_forward, _dice_set, ('sq',))
  return _fused_loss(forward, 'dice', logits, labels, weights,
                     {'gamma': gamma})


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
  forward = functools.partial(_set_forward, _tversky_set, ('mass',))
  return _fused_loss(forward, 'tversky', logits, labels, weights,
                     dict(alpha=alpha, beta=beta, gamma=gamma))
