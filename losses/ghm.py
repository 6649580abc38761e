"""GHM-C: gradient harmonizing classification loss.

Li, Liu, Wang, "Gradient Harmonized Single-stage Detector", AAAI 2019.

Each element's gradient norm `g` (sigmoid: `|sigmoid(z) - y|`; softmax:
`1 - p_y`, which is half the L1 norm of `softmax(z) - onehot(y)`) falls in
one of `bins` equal-width bins on [0, 1]. Its cross-entropy is divided by
the gradient density of its bin, so the many easy examples (g ~ 0) and the
few outliers (g ~ 1) stop dominating:

  loss = sum_i w_i CE_i / (n * R_{b(i)})

where `R_b` is the (EMA of the) weighted count of elements in bin b and `n`
the number of non-empty bins in the batch: mmdetection's `GHMC` with a
weighted histogram (`bias_correction=False` reproduces its EMA exactly).
The weights `1 / (n R_b)` are held constant (stop_gradient).

The EMA is explicit state, `state = init_state(bins)`, returned updated:
`loss, state = ghm(logits, labels, weights=w, state=state)`. Each bin
non-empty in the batch gets `R_b <- m R_b + (1 - m) count_b`, `k_b += 1`;
with `bias_correction` (the default, a deviation from mmdetection) the
density is the debiased `R_b / (1 - m^k_b)`, as in Adam.

Distribution: under `jax.jit` on a sharded batch every sum is already
global. Inside `shard_map` / `pmap` pass `axis_name`: the histogram and the
loss are psum-ed, so every shard returns the global loss and the same new
state (tested on 8 host devices; `pmap` is not tested).

Defaults follow Li et al. / mmdetection: bins=30, momentum=0.75.
"""

import jax
import jax.numpy as jnp

from losses import _checks
from losses import _core


def init_state(bins=30):
  """EMA state: float32 `counts` and int32 `updates`, both of shape `[bins]`."""
  _checks.check_int('ghm', 'bins', bins, lo=1)
  return {'counts': jnp.zeros([bins], jnp.float32),
          'updates': jnp.zeros([bins], jnp.int32)}


def _check(loss, state, bins, momentum):
  _checks.check_int(loss, 'bins', bins, lo=1)
  _checks.check_range(loss, 'momentum', momentum, lo=0, hi=1, hi_open=True)
  if state is None:
    raise ValueError(f'{loss}: state is required; start from '
                     f'losses.ghm.init_state(bins={bins}).')
  if not isinstance(state, dict) or set(state) != {'counts', 'updates'}:
    raise ValueError(f'{loss}: state must be the dict from init_state(), got '
                     f'{state!r:.80}.')
  if any(jnp.shape(v) != (bins,) for v in state.values()):
    raise ValueError(f'{loss}: state has shapes {jax.tree.map(jnp.shape, state)}'
                     f', expected ({bins},); was it made with a different '
                     '`bins`?')


def _density_weights(g, w, state, *, bins, momentum, bias_correction,
                     axis_name):
  """Each element's `1 / (n R_b)` (0 in empty bins), and the new state.

  Args:
    g: gradient norms in [0, 1], any shape `S`.
    w: weights, shape `S`, compute dtype.
    state: `init_state(bins)` pytree.
    bins, momentum, bias_correction, axis_name: see module docstring.

  Returns:
    `(beta, new_state)`: `beta` of shape `S` under stop_gradient (the
    density is a weight, not a function of the logits to differentiate).
  """
  g, w = jax.lax.stop_gradient(g), jax.lax.stop_gradient(w)
  dtype = w.dtype
  idx = jnp.clip(jnp.floor(g * bins).astype(jnp.int32), 0, bins - 1)
  counts = jax.ops.segment_sum(w.ravel(), idx.ravel(), num_segments=bins)
  if axis_name is not None:
    counts = jax.lax.psum(counts, axis_name)
  nonempty = counts > 0
  acc = state['counts'].astype(dtype)
  new_acc = jnp.where(nonempty, momentum * acc + (1.0 - momentum) * counts,
                      acc)
  updates = state['updates'] + nonempty.astype(jnp.int32)
  density = new_acc
  if bias_correction:  # 1 - m^k; bins never updated (k = 0) are unused.
    debias = 1.0 - jnp.asarray(momentum, dtype) ** updates.astype(dtype)
    density = new_acc / jnp.where(updates > 0, debias, 1.0)
  n = jnp.sum(nonempty.astype(dtype))
  bin_weight = jnp.where(nonempty,
                         1.0 / jnp.where(nonempty, density * n, 1.0), 0.0)
  new_state = {'counts': new_acc.astype(state['counts'].dtype),
               'updates': updates.astype(state['updates'].dtype)}
  return jax.lax.stop_gradient(bin_weight[idx]), new_state


_WHY = ("the density normaliser 1 / (n R_b) is global to the batch, so a "
        "per-element or summed value has no meaning of its own.")


def _total(per, w, beta, axis_name):
  loss = jnp.sum(w * beta * per)
  return loss if axis_name is None else jax.lax.psum(loss, axis_name)


def ghm(logits, labels, *, weights=None, state, bins=30, momentum=0.75,
        bias_correction=True, axis_name=None, reduction='mean'):
  """Softmax GHM-C: CE re-weighted by the density of `g = 1 - p_y`.

  Args:
    logits, labels, weights: `[..., C]` float, `[...]` int, `[...]` or None.
    state: from `init_state(bins)`.
    bins: number of bins >= 1.
    momentum: EMA momentum in [0, 1); 0 uses this batch's histogram only.
    bias_correction: debias the zero-initialised EMA (module docstring).
    axis_name: mapped axis to psum over inside shard_map/pmap, or None.
    reduction: 'mean' only ('sum' / 'none' raise: module docstring).

  Returns:
    `(loss, new_state)`: scalar and a pytree like `state`.
  """
  _core.check_reduction('ghm', reduction, ('mean',), _WHY)
  _check('ghm', state, bins, momentum)
  z, y, w = _core.softmax_inputs(logits, labels, weights)
  log_p_y = _core.pick(jax.nn.log_softmax(z), y)
  beta, new_state = _density_weights(
      -jnp.expm1(log_p_y), w, state, bins=bins, momentum=momentum,
      bias_correction=bias_correction, axis_name=axis_name)
  return _total(-log_p_y, w, beta, axis_name), new_state


def sigmoid_ghm(logits, labels, *, weights=None, state, bins=30,
                momentum=0.75, bias_correction=True, axis_name=None,
                reduction='mean'):
  """Sigmoid GHM-C (the form of Li et al.): BCE re-weighted by the density of
  `g = |sigmoid(z) - y|`, one histogram over all logits.

  Args:
    logits: `[...]` or `[..., C]` float.
    labels: same shape, 0/1; or int class ids `[...]` with logits
      `[..., C]`, read as one-hot (one-vs-rest).
    weights: labels' shape, `logits.shape[:-1]`, or None.
    state, bins, momentum, bias_correction, axis_name, reduction: as in
      `ghm`.

  """
  _core.check_reduction('sigmoid_ghm', reduction, ('mean',), _WHY)
  _check('sigmoid_ghm', state, bins, momentum)
  z, y, w = _core.sigmoid_inputs(logits, labels, weights, 'sigmoid_ghm')
  per = -(y * jax.nn.log_sigmoid(z) + (1.0 - y) * jax.nn.log_sigmoid(-z))
  beta, new_state = _density_weights(
      jnp.abs(jax.nn.sigmoid(z) - y), w, state, bins=bins, momentum=momentum,
      bias_correction=bias_correction, axis_name=axis_name)
  return _total(per, w, beta, axis_name), new_state
