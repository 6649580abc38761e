"""Plumbing shared by every loss: compute dtype, weights, masked reductions.

Conventions used across the package:

* "element": the unit a loss is averaged over. For softmax losses it is one
  row of `logits[..., C]` (shape `[...]`); for sigmoid losses it is one
  logit (shape of `logits`).
* `weights` (default all ones) scale elements; 0 masks an element. Masked
  elements have their logits and labels replaced by 0 before any arithmetic,
  so garbage (NaN, inf, label -100) in padding cannot leak into the value or
  the gradient. An unmasked softmax label outside `[0, C)` makes the loss
  NaN on purpose (see `softmax_inputs`).
* Reduction: `sum(w * l) / max(sum(w), tiny)`, so an all-masked batch gives
  exactly 0 with a finite (zero) gradient.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from losses import _checks


def compute_dtype(x) -> jnp.dtype:
  """At least float32: bf16/fp16 are upcast, fp64 (x64 mode) is kept."""
  return jnp.promote_types(jnp.result_type(x), jnp.float32)


def element_weights(weights, elem_shape, *, dtype, allow_class_axis=False):
  """Returns `weights` as a `dtype` array of shape `elem_shape`.

  Args:
    weights: None (all ones) or an array of shape `elem_shape`; with
      `allow_class_axis`, also `elem_shape[:-1]` (one weight per example,
      shared by its C sigmoid outputs).
    elem_shape: shape of the per-element loss.
    dtype: compute dtype.
    allow_class_axis: whether per-example weights may be broadcast over a
      trailing class axis.
  """
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


def weighted_mean(per_element, weights):
  """`sum(w * l) / max(sum(w), tiny)`; 0 when every weight is 0."""
  total = jnp.sum(weights)
  tiny = jnp.finfo(per_element.dtype).tiny
  return jnp.sum(weights * per_element) / jnp.maximum(total, tiny)


_UINT_OF_WIDTH = {2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint64}


def _zero_unless_bits(keep, x):
  """`where(keep, x, 0)` as a bitwise AND of `x`'s words with a 0/all-ones
  integer mask: bit for bit the select, whatever (NaN, inf) `x` holds."""
  uint = _UINT_OF_WIDTH[jnp.dtype(x.dtype).itemsize]
  keep_word = jnp.where(keep, jnp.asarray(np.iinfo(uint).max, uint),
                        jnp.zeros((), uint))
  out = jax.lax.bitcast_convert_type(
      jax.lax.bitcast_convert_type(x, uint) & keep_word, x.dtype)
  if out.shape != x.shape:
    raise ValueError(f'keep {jnp.shape(keep)} broadcasts x {x.shape} to '
                     f'{out.shape}.')
  return out


@jax.custom_vjp
def zero_unless(keep, x):
  """`where(keep, x, 0)` for float `x`, computed with bit operations.

  Why: on XLA CPU a select whose predicate is broadcast from a row mask
  (`keep [..., 1]` against `x [..., C]`), once fused with a loss's
  transcendentals, makes that fusion 3-4x slower than the same loss with a
  bitwise AND of a broadcast integer mask (a BCE forward+backward on
  [8192, 9]: 536 µs against 177 µs; on [256, 3]: 19.9 against 5.1;
  losses/README.md), and XLA turns a float-level rewrite (`x * mask`, a
  full-shape predicate) back into that select or does no better. Where
  the select is a pass of its own (the dice family's logits, before a
  YNNPACK softmax) the two cost about the same on large inputs and the AND
  wins on small ones (fewer, cheaper thunks: [256, 3] 1.4x -> 1.0x CE).

  Args:
    keep: bool, broadcastable to `x`'s shape (not beyond it).
    x: float array.

  Returns:
    An array like `x`: `x` where kept, exactly +0.0 elsewhere. The gradient
    in `x` is the cotangent where kept and 0 elsewhere (reverse mode only:
    a custom VJP, like the fused losses).
  """
  return _zero_unless_bits(keep, x)


def _zero_unless_fwd(keep, x):
  return _zero_unless_bits(keep, x), keep


def _zero_unless_bwd(keep, ct):
  return np.zeros(jnp.shape(keep), jax.dtypes.float0), _zero_unless_bits(
      keep, ct)


zero_unless.defvjp(_zero_unless_fwd, _zero_unless_bwd)


def mask_rows(x, weights):
  """Zeroes `x[..., :]` wherever the row weight is 0 (keeps padding clean)."""
  return zero_unless((weights > 0)[..., None], x)


def mask_elements(x, weights):
  """Zeroes `x` wherever the (same-shaped) weight is 0."""
  return zero_unless(weights > 0, x)


def _softmax_args(logits, labels, weights):
  """Checked softmax-loss arguments: logits `[..., C]` as given, integer
  labels `[...]`, weights `[...]` in the compute dtype (>= fp32)."""
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels)
  if logits.ndim < 1:
    raise ValueError('softmax losses need logits of shape [..., C].')
  if labels.shape != logits.shape[:-1]:
    raise ValueError(
        f'labels shape {labels.shape} must equal logits.shape[:-1] = '
        f'{logits.shape[:-1]} (integer class ids).')
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f'softmax losses need integer labels, got {labels.dtype}.')
  dtype = compute_dtype(logits)
  return logits, labels, element_weights(weights, labels.shape, dtype=dtype)


def softmax_inputs(logits, labels, weights):
  """Validated, cast and masked inputs for a softmax loss.

  Args:
    logits: `[..., C]` float, any precision.
    labels: `[...]` integer class ids in `[0, C)` (anything where masked).
    weights: None or `[...]`.

  Returns:
    `(logits [..., C], labels [...], weights [...])`: logits and weights in
    the compute dtype (>= fp32), masked rows' logits and labels set to 0.
    An unmasked label outside `[0, C)` sets its row's weight to NaN (and
    its logits and label to 0: NaN logits need an OR of NaN bits beside
    `zero_unless`'s AND, which made that pass slower than a select), so the
    loss is NaN and the trainer's non-finite check stops the run (a silent
    wrap-around of -1, or a dropped row, would corrupt an ablation quietly).
  """
  logits, labels, weights, live = unmasked_softmax_inputs(logits, labels,
                                                          weights)
  return zero_unless(live[..., None], logits), labels, weights


def unmasked_softmax_inputs(logits, labels, weights):
  """`softmax_inputs` without masking the logits, and the row mask.

  For a loss that replaces its masked rows' results itself (a select on
  `[...]` and one fused into its gradient pass): masking `[..., C]` up
  front is a pass of its own, which XLA CPU cannot fuse into a YNNPACK
  softmax.

  Returns:
    `(logits [..., C], labels [...], weights [...], live [...])`: logits
    only cast to the compute dtype (masked rows may hold NaN or inf), the
    rest as in `softmax_inputs`, and `live` (bool) true on the unmasked
    rows with a label in `[0, C)`.
  """
  logits, labels, weights = _softmax_args(logits, labels, weights)
  dtype = weights.dtype
  live, invalid = _row_status(labels, weights, logits.shape[-1])
  labels = jnp.where(live, labels, 0)
  weights = jnp.where(invalid, jnp.asarray(jnp.nan, dtype), weights)
  return logits.astype(dtype), labels, weights, live


def _row_status(labels, weights, num_classes):
  """`(live, invalid)`, bool `[...]`: unmasked with a label in `[0, C)`;
  unmasked with a label outside it."""
  active = weights > 0
  invalid = active & ((labels < 0) | (labels >= num_classes))
  return active & ~invalid, invalid


def label_mask(labels, num_classes):
  """Boolean `[..., C]`, True at each row's label."""
  return labels[..., None] == jnp.arange(num_classes, dtype=labels.dtype)


def sigmoid_inputs(logits, labels, weights):
  """Validated, cast and masked inputs for a sigmoid (binary) loss.

  Args:
    logits: `[...]` (binary) or `[..., C]` (multi-label), any precision.
    labels: same shape as logits, 0/1 (bool, int or float).
    weights: None, same shape as logits, or `logits.shape[:-1]`.

  Returns:
    `(logits, labels, weights)` all of logits' shape in the compute dtype,
    with masked elements zeroed.
  """
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels)
  if labels.shape != logits.shape:
    raise ValueError(
        f'sigmoid losses need labels of the logits shape {logits.shape}, got '
        f'{labels.shape}.')
  dtype = compute_dtype(logits)
  weights = element_weights(
      weights, logits.shape, dtype=dtype, allow_class_axis=True)
  logits = mask_elements(logits.astype(dtype), weights)
  labels = mask_elements(labels.astype(dtype), weights)
  return logits, labels, weights


def softmax_parts(logits):
  """Pieces of a stable softmax, shared so each loss does one `exp` pass.

  Args:
    logits: `[..., C]` in the compute dtype.

  Returns:
    `(shifted, e, s)`: `shifted = logits - max` (`[..., C]`, <= 0, exactly 0
    at the max), `e = exp(shifted)` (`[..., C]`) and `s = sum(e)`
    (`[..., 1]`, >= 1). Then `log p = shifted - log s` and `p = e / s`.
  """
  # The max is a constant shift (log-sum-exp is invariant to it), so no
  # gradient needs to flow through it.
  m = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
  shifted = logits - m
  e = jnp.exp(shifted)
  return shifted, e, jnp.sum(e, axis=-1, keepdims=True)


def log_ratio(num, den):
  """`log(num / den)` for `num >= 0`, `den >= 1`, with `num` floored at tiny.

  Used for `log(1 - p) = log(rest / s)` from the other classes' mass `rest`
  (never `s - e`, which cancels as `p -> 1`). The floor only acts when
  `1 - p < ~1e-38`, i.e. `p = 1` to working precision.
  """
  tiny = jnp.finfo(num.dtype).tiny
  return jnp.log(jnp.maximum(num, tiny)) - jnp.log(den)


@jax.custom_jvp
def log_sigmoid(x):
  """`log sigmoid(x) = min(x, 0) - log1p(exp(-|x|))`: exact for all finite x.

  Hand-written (one exp, one log1p) because `jax.nn.log_sigmoid` lowers to
  a `logaddexp` that is ~3x slower on CPU. `log sigmoid(-x)` is
  `log_sigmoid(x) - x`.
  """
  return jnp.minimum(x, 0.0) - jnp.log1p(jnp.exp(-jnp.abs(x)))


@log_sigmoid.defjvp
def _log_sigmoid_jvp(primals, tangents):
  x, = primals
  dx, = tangents
  e = jnp.exp(-jnp.abs(x))
  value = jnp.minimum(x, 0.0) - jnp.log1p(e)
  # d/dx log sigmoid(x) = sigmoid(-x), from the same exp (no 1 - sigmoid).
  sigmoid_neg = jnp.where(x >= 0, e, 1.0) / (1.0 + e)
  return value, sigmoid_neg * dx


def _bin_sums_scatter(idx, values, bins):
  return jnp.zeros((bins,) + values.shape[1:], values.dtype).at[idx].add(values)


def _bin_sums_compare(idx, values, bins):
  # [bins, N] compare-and-reduce along the long axis: a fused, deterministic
  # reduction, without the atomics a scatter needs on accelerators.
  hit = idx[None, :] == jnp.arange(bins, dtype=idx.dtype)[:, None]
  hit = hit.reshape(hit.shape + (1,) * (values.ndim - 1))
  return jnp.sum(jnp.where(hit, values[None], jnp.zeros((), values.dtype)),
                 axis=1)


def bin_sums(idx, values, bins):
  """`out[b] = sum_{i: idx_i = b} values[i]`: per-bin sums.

  Args:
    idx: int `[N]` bin ids in `[0, bins)`.
    values: `[N]` or `[N, F]` float.
    bins: static number of bins.

  Returns:
    `[bins]` or `[bins, F]` in `values.dtype`. A scatter-add on CPU (a
    serial loop, ~5x faster there than any O(N bins) form), a
    compare-and-reduce elsewhere. Both are exact for 0/1 values (integer sums
    in float32 up to 2^24 elements).
  """
  return jax.lax.platform_dependent(
      idx, values,
      cpu=lambda i, v: _bin_sums_scatter(i, v, bins),
      default=lambda i, v: _bin_sums_compare(i, v, bins))


def computed_once(table):
  """`table` (`[T]` float, T small), computed once however many elements
  of a larger array read it.

  Why: XLA CPU fuses the elementwise ops that produce a small table into
  each consumer, so a table computed by a chain of selects, divides and
  powers (GHM's per-bin weights, the set losses' derivatives in their
  statistics) is recomputed for every element that reads it: 388 of ~1000
  µs per sigmoid GHM forward+backward on [64, 128, 9]. Routing the table
  through `bin_sums` with identity ids (a scatter, or a reduce off CPU;
  neither is fused into its consumers) makes XLA compute it once.
  """
  size = table.shape[0]
  return bin_sums(jnp.arange(size, dtype=jnp.int32), table, size)


def lookup(table, idx):
  """`table[idx]` for a small table computed in the same jit, computed once
  (`computed_once`).

  Args:
    table: `[T]` float, T small (a handful to tens of entries).
    idx: int array of any shape, values in `[0, T)`.

  Returns:
    `table[idx]`, of `idx`'s shape, in `table.dtype`.
  """
  return computed_once(table)[idx]


def integer_valued(value) -> bool:
  """Whether a concrete hyperparameter is a whole number (fast power path)."""
  return isinstance(value, (int, float)) and float(value).is_integer()


def class_vector(loss, key, vec, logits, dtype=None):
  """`vec` as a `[C]` array in `dtype` (default: logits' dtype); checks C
  when concrete."""
  _checks.check_class_vector(loss, key, vec, logits.shape[-1])
  return jnp.asarray(vec, dtype or logits.dtype)


# ---------------------------------------------------------------------------
# Fused softmax row losses.
#
# CE, weighted CE, focal and GHM share one shape: a per-row loss l(z) whose
# gradient is `coef * (softmax(z) - t)`, with `t` the (smoothed) one-hot
# target and `coef` a per-row scalar. Autodiff of their log-space forms
# builds a backward pass several times the size of the forward (selects,
# gathers and their scatter transposes); here the forward computes `coef`
# alongside the value and the backward is one elementwise pass, so each
# costs about what plain CE costs.


class SoftmaxRows(NamedTuple):
  """Per-row statistics handed to a row function; all `[...]`, fp32+."""
  nll: jax.Array       # -log p_y (label-smoothed when eps > 0); exact as
                       # p_y -> 1 too when `with_log1m_p`
  log1m_p: jax.Array   # log(1 - p_y), exact as p_y -> 1 (from other classes);
                       # None unless asked for (`with_log1m_p`)
  labels: jax.Array    # label ids (0 where masked)
  weights: jax.Array   # element weights (0 masks)


def fused_softmax_loss(row_fn, logits, labels, weights, hparams, *,
                       mean=True, label_smoothing=0.0, axis_name=None,
                       with_log1m_p=False):
  """`sum(w * l) / max(sum(w), tiny)` (or `sum(w * l)` when not `mean`)
  with a hand-written backward pass.

  Args:
    row_fn: module-level function `(SoftmaxRows, hparams) -> (l, coef,
      aux)`: per-row loss `l` `[...]`, its gradient scale `coef` `[...]`
      (`dl/dz = coef * (p - t)`; a coefficient that is not the true
      derivative, such as GHM's density weight, is held constant, i.e.
      stop-gradient), and any pytree `aux` (returned, not differentiated).
    logits: `[..., C]` float, any precision (computed in >= fp32).
    labels: `[...]` int in `[0, C)`; out of range where unmasked -> NaN loss.
    weights: None or `[...]`.
    hparams: pytree of arrays/floats for `row_fn` (not differentiated).
    mean: divide by the weight sum (else the row function normalises).
    label_smoothing: eps: target `(1 - eps) onehot(y) + eps / C`.
    axis_name: psum the numerator and weight sum over this mapped axis
      (inside shard_map/pmap); the backward pass is then the per-shard
      gradient of the global loss.
    with_log1m_p: fill `SoftmaxRows.log1m_p` (else None); costs a second
      sum over the classes, fused into the first.

  Returns:
    `(loss, aux)`: scalar in the compute dtype, and `row_fn`'s aux.
  """
  logits, labels, w = _softmax_args(logits, labels, weights)
  return _fused_rows(row_fn, bool(mean), float(label_smoothing), axis_name,
                     bool(with_log1m_p), logits, labels, w, hparams)


# Along a minor axis up to this long, or one `minor_axis_split` splits,
# several row sums pay as one variadic reduce (`sums_in_one_pass`); along
# a longer one that does not split (a prime class count, or more than 384
# classes), as a YNNPACK sum each: the extra passes pay from ~48 classes
# (focal [256, 100]: 1.51x -> 1.21x optax CE, label smoothing 1.46x ->
# 1.15x), the one pass below 32 (focal on the tagging shape 1.15x against
# 1.23x, [8192, 3] 1.00x against 1.54x; losses/README.md). There focal
# needs one sum (`_row_sums`), label smoothing none (its sum of the logits
# is apart there, and above 48 classes: `_LS_ONE_PASS_MAX_CLASSES`).
_ONE_PASS_MAX_CLASSES = 32


def one_pass_sums(length):
  """Whether several sums along a minor axis this long pay as one pass."""
  return length <= _ONE_PASS_MAX_CLASSES or minor_axis_split(length) is not None


# XLA CPU emits a reduce along the minor axis as a scalar loop, one add
# after another (LLVM does not vectorise it). Reducing `[..., C]` as
# `[..., C / G, G]` over the middle axis first, then the `[..., G]` rest,
# gives LLVM a short inner loop it unrolls and vectorises (<8 x float> in
# the optimised IR), as long as it has at most 12 steps (at 16 it stays
# scalar) and G is not tiny (G = 2 stays 2 lanes wide). The three-sum
# reduce of DSC on [4096, 64]: 418 us -> 163 us. G = 8 (one 256-bit vector)
# is the fastest group wherever it divides (that reduce on [256, K], with
# its elementwise terms: 48 classes 10.4 us at G = 8, 11.8 at 4; 96: 12.9
# at 8, 18.9 at 12; and 13 steps of 8 are still vectorised: 104 classes
# 12.1 us, against 26.7 for 100 classes at G = 10); in the losses, against
# the smallest G >= 4, DSC / focal [256, 104] 1.49x / 1.09x -> 1.38x /
# 1.00x optax CE, ties within +-0.05 at 16-56 classes (one process, A/B).
# Else the smallest G >= 4 timed best in the losses (G = 4-5 at 20
# classes, 5 at 45, 10 at 100; losses/README.md); 3 only where nothing
# larger divides (9 classes: focal on the tagging shape 1.07x -> 1.01x
# optax CE). Groups wider than 32 were not timed well (G = 50 at 100
# classes lost), so axes longer than 12 x 32 (a vocabulary) keep the
# YNNPACK sums.
_SPLIT_MAX_STEPS = 12
_SPLIT_MAX_GROUP = 32
_VECTOR_GROUP = 8
_SPLIT_MAX_STEPS_OF_8 = 13


def minor_axis_split(length):
  """Group size G for `sums_in_one_pass` along a minor axis this long, or
  None where no G in [3, 32] divides it in at most 12 steps (13 for G = 8)."""
  if length > _VECTOR_GROUP and length % _VECTOR_GROUP == 0 and (
      length // _VECTOR_GROUP <= _SPLIT_MAX_STEPS_OF_8):
    return _VECTOR_GROUP
  for g in range(4, min(length, _SPLIT_MAX_GROUP + 1)):
    if length % g == 0 and length // g <= _SPLIT_MAX_STEPS:
      return g
  if length > 3 and length % 3 == 0 and length // 3 <= _SPLIT_MAX_STEPS:
    return 3
  return None


def sums_in_one_pass(arrays, axis):
  """`[sum(a, axis) for a in arrays]` from one variadic reduce.

  XLA on CPU does not fuse sibling reductions, so separate sums of arrays
  computed from the same inputs are separate passes over them; one
  variadic reduce is one pass. Along the minor axis the reduce runs in
  groups where `minor_axis_split` finds a size (vectorised), else as a
  scalar chain, which along a long axis is slower than a YNNPACK sum each
  (`one_pass_sums`).

  Args:
    arrays: same-shaped float arrays of one dtype.
    axis: the axis to sum over.

  Returns:
    A tuple of arrays, each without `axis`.
  """
  zero = (jnp.zeros((), arrays[0].dtype),) * len(arrays)
  add = lambda x, y: tuple(a + b for a, b in zip(x, y))
  ndim = arrays[0].ndim
  axis = axis % ndim
  length = arrays[0].shape[axis]
  group = minor_axis_split(length) if axis == ndim - 1 else None
  if group is None:
    return jax.lax.reduce(tuple(arrays), zero, add, (axis,))
  grouped = tuple(a.reshape(*a.shape[:-1], length // group, group)
                  for a in arrays)
  partial = jax.lax.reduce(grouped, zero, add, (ndim - 1,))
  return jax.lax.reduce(partial, zero, add, (ndim - 1,))


def _row_sums(e, labels, shifted_y, with_rest, shifted=None):
  """`s = sum_c e` `[...]`, if `with_rest` `rest = sum_{c != y} e`, and if
  `shifted` is given `sum_c shifted`; the ones not asked for are None.
  `shifted_y` `[...]` is the label's `z_y - m`.

  `rest` is summed apart because `s - e_y` cancels as `p_y -> 1`. Where
  `one_pass_sums` holds, all come from one pass over `e [..., C]`
  (`sums_in_one_pass`): a second pass made focal 1.2-1.4x CE instead of
  1.0-1.1x (label smoothing's own row mean of the shifted logits, through
  YNNPACK: tagging 1.20x, [8192, 3] 1.42x; in this reduce 0.93x and 0.78x
  optax CE). Elsewhere (a long axis that does not split), `rest` is the
  one (YNNPACK) sum and `s = rest + exp(shifted_y)`: one pass over `e`
  less (focal [256, 100] 1.20x -> 1.12x optax CE before the split).
  """
  if not with_rest and shifted is None:
    return jnp.sum(e, axis=-1), None, None
  num_classes = e.shape[-1]
  arrays = [e]
  if with_rest:
    rest_terms = jnp.where(label_mask(labels, num_classes), 0.0, e)
    if shifted is None and not one_pass_sums(num_classes):
      rest = jnp.sum(rest_terms, axis=-1)
      return rest + jnp.exp(shifted_y), rest, None
    arrays.append(rest_terms)
  if shifted is not None:
    arrays.append(shifted)
  out = list(sums_in_one_pass(arrays, -1))
  s = out.pop(0)
  rest = out.pop(0) if with_rest else None
  return s, rest, (out.pop(0) if shifted is not None else None)


# Label smoothing needs each row's sum of the logits. Up to this many
# classes, where `one_pass_sums` holds, it rides in the variadic reduce that
# sums `e` (`_row_sums`); elsewhere it is a YNNPACK sum of the logits as
# given (`sum z - C m`: nothing written) beside CE's own sum of `e`. Same
# process A/B, optax CE = 1, one pass against apart: [256, 16] 1.01x /
# 1.10x, [1024, 32] 1.04x / 1.12x, [256, 48] 0.93x / 0.99x, [64 x 128, 45]
# 0.85x / 0.96x; but [256, 100] 1.12x / 1.07x, [1024, 60] 0.96x / 0.86x,
# [512, 128] 0.99x / 0.95x, and on an axis that does not split [1024, 37]
# 1.11x / 1.07x (losses/README.md). (Before the grouped reduce of
# `minor_axis_split` that reduce was a scalar chain, and the sum apart won
# from 16 classes.) Apart, the price is rounding at the scale of the
# logits, not of their spread: the row mean is off by a few ulp of max |z|
# (1e-3 at |z| = 1e4), times eps.
_LS_ONE_PASS_MAX_CLASSES = 48


def _rows_forward(row_fn, mean, eps, axis_name, with_log1m_p, logits, labels,
                  w, hparams):
  dtype = w.dtype
  # Masked rows are not cleaned up front (a select writing all of [N, C]
  # that XLA could not fuse away); whatever they hold (NaN, inf, any label)
  # is replaced in the row results below and in the backward pass.
  live, invalid = _row_status(labels, w, logits.shape[-1])
  labels = jnp.where(live, labels, 0)
  z = logits.astype(dtype)
  m = jnp.max(z, axis=-1)
  shifted = z - m[..., None]
  e = jnp.exp(shifted)
  num_classes = z.shape[-1]
  sum_logits = eps and not (num_classes <= _LS_ONE_PASS_MAX_CLASSES
                            and one_pass_sums(num_classes))
  # z_y - m at row level (the same rounding as gathering from `shifted`),
  # so that no gather reads `shifted`: XLA CPU then fuses the subtract into
  # the exp instead of writing `shifted` out of its max fusion ([256, 20]:
  # ce 1.12x -> 1.00x, focal 1.27x -> 1.16x optax CE).
  shifted_y = jnp.take_along_axis(z, labels[..., None], axis=-1)[..., 0] - m
  s, rest, sum_shifted = _row_sums(
      e, labels, shifted_y, with_log1m_p,
      shifted if eps and not sum_logits else None)
  if sum_logits:
    sum_shifted = jnp.sum(z, axis=-1) - num_classes * m
  if rest is None:
    log_s = jnp.log(s)
  else:
    # Where y holds the max, s = 1 + rest exactly: log1p(rest) keeps -log p_y
    # exact as p_y -> 1 (log(s) rounds it to 0 once rest < 6e-8, which would
    # drop the gamma * nll * (1 - p_y)^(gamma - 1) term of focal's gradient
    # scale on confident rows). One log1p serves every row: elsewhere
    # log1p(s - 1) is log(s).
    log_s = jnp.log1p(jnp.where(shifted_y == 0, rest, s - 1.0))
  nll = log_s - shifted_y
  if eps:
    nll = (1.0 - eps) * nll + eps * (log_s - sum_shifted / num_classes)
  # Masked rows: 0; live rows with an out-of-range label: NaN (see
  # softmax_inputs).
  nll = jnp.where(live, nll, jnp.where(invalid, jnp.nan, 0.0).astype(dtype))
  log1m_p = None
  if rest is not None:   # log(rest / s), rest floored at tiny (log_ratio)
    log1m_p = jnp.log(jnp.maximum(rest, jnp.finfo(dtype).tiny)) - log_s
    log1m_p = jnp.where(live, log1m_p, 0.0)
  rows = SoftmaxRows(nll, log1m_p, labels, w)
  l, coef, aux = row_fn(rows, hparams)
  numerator = jnp.sum(w * l)
  total = jnp.sum(w)
  if axis_name is not None:
    numerator = jax.lax.psum(numerator, axis_name)
    total = jax.lax.psum(total, axis_name)
  denom = jnp.maximum(total, jnp.finfo(dtype).tiny) if mean else jnp.ones(
      (), dtype)
  loss = numerator / denom
  p = e / s[..., None]
  scale = jnp.where(live, w * coef / denom, 0.0)
  residuals = (p, labels, live, scale, l, loss, denom, total, hparams)
  return (loss, aux), residuals


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3, 4))
def _fused_rows(row_fn, mean, eps, axis_name, with_log1m_p, logits, labels, w,
                hparams):
  return _rows_forward(row_fn, mean, eps, axis_name, with_log1m_p, logits,
                       labels, w, hparams)[0]


def _fused_rows_fwd(row_fn, mean, eps, axis_name, with_log1m_p, logits, labels,
                    w, hparams):
  out, residuals = _rows_forward(row_fn, mean, eps, axis_name, with_log1m_p,
                                 logits, labels, w, hparams)
  # An empty array carries the logits' dtype (residuals must be arrays).
  return out, (residuals, jnp.zeros((0,), logits.dtype))


def _fused_rows_bwd(row_fn, mean, eps, axis_name, with_log1m_p, res,
                    cotangents):
  del row_fn, axis_name, with_log1m_p
  (p, labels, live, scale, l, loss, denom, total, hparams), dtype_carrier = res
  logits_dtype = dtype_carrier.dtype
  g = cotangents[0]   # aux is not differentiated
  num_classes = p.shape[-1]
  target = label_mask(labels, num_classes).astype(p.dtype)
  if eps:
    target = (1.0 - eps) * target + eps / num_classes
  d_logits = jnp.where(live[..., None], (g * scale)[..., None] * (p - target),
                       0.0).astype(logits_dtype)
  # d/dw_i of sum(w l) / max(sum(w), tiny): (l_i - loss) / denom (the max
  # passes no gradient to the sum when it is below tiny).
  if mean:
    d_w = g * (l - jnp.where(total > jnp.finfo(p.dtype).tiny, loss, 0.0)) / denom
  else:
    d_w = g * l
  d_labels = np.zeros(labels.shape, jax.dtypes.float0)
  d_hparams = zero_cotangents(hparams)
  return d_logits, d_labels, d_w, d_hparams


def zero_cotangents(tree):
  """Zero cotangents for a pytree of custom_vjp inputs that are not
  differentiated (hyperparameters, loss state): float0 for integers."""
  def zero(x):
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.inexact):
      return jnp.zeros_like(x)
    return np.zeros(x.shape, jax.dtypes.float0)
  return jax.tree.map(zero, tree)


_fused_rows.defvjp(_fused_rows_fwd, _fused_rows_bwd)
