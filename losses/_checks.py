"""Hyperparameter checks shared by the loss functions and the registry.

Only concrete values are checked (traced ones are skipped, so no check
forces a host sync inside `jit`); hyperparameters normally arrive as Python
constants, checked once at trace time.
"""

import numbers

import jax
import numpy as np


def is_concrete(value) -> bool:
  return not isinstance(value, jax.core.Tracer)


def check_range(loss, key, value, *, lo=None, hi=None, lo_open=False,
                hi_open=False):
  """Raises ValueError naming `loss` and `key` unless every entry of `value`
  (skipped when None or traced) is finite and in [lo, hi] (None: unbounded;
  `*_open`: the bound excluded)."""
  if value is None or not is_concrete(value):
    return
  arr = np.asarray(value, dtype=np.float64)
  ok = np.all(np.isfinite(arr))
  if lo is not None:
    ok &= np.all(arr > lo) if lo_open else np.all(arr >= lo)
  if hi is not None:
    ok &= np.all(arr < hi) if hi_open else np.all(arr <= hi)
  if not ok:
    left = '(' if lo_open else '['
    right = ')' if hi_open else ']'
    interval = (f'{left}{"-inf" if lo is None else lo}, '
                f'{"inf" if hi is None else hi}{right}')
    raise ValueError(f'{loss}: {key} must be finite and in {interval}, '
                     f'got {value!r}.')


def check_int(loss, key, value, *, lo):
  if not isinstance(value, numbers.Integral) or isinstance(value, bool):
    raise ValueError(f'{loss}: {key} must be an integer, got {value!r}.')
  if value < lo:
    raise ValueError(f'{loss}: {key} must be >= {lo}, got {value!r}.')


def check_class_vector(loss, key, value, num_classes):
  """Checks that a concrete per-class vector has `num_classes` entries."""
  if value is None or not is_concrete(value):
    return
  shape = np.shape(value)
  if len(shape) != 1 or shape[0] != num_classes:
    raise ValueError(f'{loss}: {key} must have shape [{num_classes}] (one '
                     f'entry per class), got shape {shape}.')
