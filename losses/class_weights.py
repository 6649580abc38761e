"""Per-class weights and priors derived from class counts.

All weightings are normalised so that `sum_c alpha_c = C`: the average class
weight is 1, so swapping CE for a weighted CE keeps the loss scale (and the
tuned learning rate) comparable. This is the normalisation of Cui et al.
(2019); it differs from PyTorch's `CrossEntropyLoss(weight=...)`, which
divides by `sum_i alpha_{y_i}` instead.

The functions take a length-C `class_counts` (NumPy, list or jax array) and
return a float32 (or float64 under x64) jax array of shape `[C]`.
"""

import jax.numpy as jnp
import numpy as np

SCHEMES = ('inverse_freq', 'inverse_sqrt_freq', 'class_balanced')


def validate_counts(loss, class_counts, num_classes=None, *,
                    key='class_counts', positive=True):
  """Host-side check of length-C (`num_classes`, None: any) counts, >= 0
  (> 0 if `positive`: every weighting here divides by or takes the log of
  them); errors name `loss` and `key`. Returns float64 NumPy counts."""
  if class_counts is None:
    raise ValueError(f'{loss}: {key} is required (a length-C sequence of '
                     'training-set class counts from the data pipeline).')
  counts = np.asarray(class_counts, dtype=np.float64)
  if counts.ndim != 1 or (num_classes is not None and
                          counts.shape[0] != num_classes):
    raise ValueError(f'{loss}: {key} must have shape [{num_classes}] (one '
                     f'count per class), got shape {counts.shape}.')
  if not np.all(np.isfinite(counts)) or np.any(counts < 0):
    raise ValueError(f'{loss}: {key} must be finite and >= 0, got {counts}.')
  if positive and np.any(counts == 0):
    zero = np.flatnonzero(counts == 0).tolist()
    raise ValueError(
        f'{loss}: {key} has zero counts for classes {zero}; this weighting '
        'divides by (or takes the log of) the count. Add-one smooth the '
        'counts in the data pipeline if a class can be absent.')
  return counts


def _normalise(inv):
  return inv * (inv.shape[0] / jnp.sum(inv))


def _floats(v):
  v = jnp.asarray(v)
  return v.astype(jnp.promote_types(v.dtype, jnp.float32))


def inverse_freq(class_counts):
  """`alpha_c ∝ 1 / n_c`, normalised to sum to C."""
  return _normalise(1.0 / _floats(class_counts))


def inverse_sqrt_freq(class_counts):
  """`alpha_c ∝ 1 / sqrt(n_c)`, normalised to sum to C (a softer inverse)."""
  return _normalise(1.0 / jnp.sqrt(_floats(class_counts)))


def class_balanced(class_counts, beta):
  """Effective-number weights of Cui et al., CVPR 2019.

  `E_n = (1 - beta^n) / (1 - beta)` is the expected volume of `n` samples;
  `alpha_c ∝ 1 / E_{n_c} ∝ (1 - beta) / (1 - beta^{n_c})`, normalised to sum
  to C. `beta = 0` gives uniform weights, `beta -> 1` inverse frequency.
  Cui et al. use beta in {0.9, 0.99, 0.999, 0.9999}.
  """
  n = _floats(class_counts)
  beta = jnp.asarray(beta, n.dtype)
  # 1 - beta^n as -expm1(n log beta) keeps precision for beta close to 1.
  # beta = 0 gives log(0) = -inf and -expm1(-inf) = 1, the right limit.
  one_minus_pow = -jnp.expm1(n * jnp.log(beta))
  return _normalise(1.0 / one_minus_pow)


def log_prior(class_counts_or_prior):
  """`log pi_c` with `pi = v / sum(v)`; accepts counts or a prior."""
  v = _floats(class_counts_or_prior)
  return jnp.log(v) - jnp.log(jnp.sum(v))


def from_scheme(loss, scheme, class_counts, num_classes, beta=None):
  """Resolves a named weighting to a NumPy `[C]` alpha (host side)."""
  if scheme not in SCHEMES:
    raise ValueError(f'{loss}: alpha must be a list of {num_classes} '
                     f'non-negative floats or one of {list(SCHEMES)}, got '
                     f'{scheme!r}.')
  counts = validate_counts(loss, class_counts, num_classes)
  if scheme == 'class_balanced':
    return np.asarray(class_balanced(counts, beta), np.float32)
  return np.asarray(globals()[scheme](counts), np.float32)
