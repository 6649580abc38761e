"""Flooding (Ishida et al., "Do We Need Zero Training Loss After Achieving
Zero Training Loss?", ICML 2020).

`L_flood = |L - b| + b` on the batch loss `L`: below the flood level `b`
the gradient flips sign, so the training loss floats around `b` (Ishida et
al. pick b in {0.00, 0.01, ..., 0.10} on validation data). Any config may
add it: `dict(name='focal', flood=0.05)`.
"""

import functools

import jax.numpy as jnp

from losses import _checks


def flood(loss, b):
  """`|loss - b| + b` for a scalar `loss` and flood level `b >= 0`."""
  _checks.check_range('flooding', 'flood', b, lo=0)
  return jnp.abs(loss - b) + b


def flooded(fn, b):
  """Wraps a loss function so its scalar output is flooded at level `b`.

  Works for stateless `fn(...) -> loss` and stateful `fn(...) -> (loss,
  state)`. An all-masked batch (every weight 0) still gives 0 rather than
  `2 b`, so padding-only batches stay inert.
  """
  _checks.check_range('flooding', 'flood', b, lo=0)

  @functools.wraps(fn)
  def wrapped(*args, weights=None, **kwargs):
    out = fn(*args, weights=weights, **kwargs)
    loss, rest = (out[0], out[1:]) if isinstance(out, tuple) else (out, None)
    value = flood(loss, b)
    if weights is not None:
      value = jnp.where(jnp.sum(jnp.asarray(weights)) > 0, value, 0.0)
    value = value.astype(loss.dtype)
    return value if rest is None else (value,) + rest

  return wrapped
