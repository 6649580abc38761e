"""bert_jax.model.Dropout (flax `nn.Dropout`): rate, scale, keys, gradient.

The expectation is independent of the implementation: each element is kept
with probability `1 - rate` (a binomial count within 5 standard errors) and
a kept element is `x / (1 - rate)` exactly; masks are a function of the key.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.model import Dropout


def _apply(rate, x, seed=0, deterministic=False):
  return Dropout(rate).apply({}, x, deterministic,
                             rngs={'dropout': jax.random.PRNGKey(seed)})


@pytest.mark.parametrize('rate', [0.1, 0.5, 0.9])
def test_drop_rate_and_scale(rate):
  x = jnp.ones((1001, 257), jnp.float32)
  y = np.asarray(_apply(rate, x))
  dropped = y == 0
  se = np.sqrt(rate * (1 - rate) / y.size)   # binomial standard error
  assert abs(dropped.mean() - rate) < 5 * se
  np.testing.assert_allclose(y[~dropped], 1.0 / (1.0 - rate), rtol=1e-6)
  assert abs(y.mean() - 1.0) < 5 * se / (1 - rate)
  # Neighbouring elements' masks are independent (correlation ~0).
  flat = dropped.ravel().astype(np.float64)
  assert abs(np.corrcoef(flat[:-1:2], flat[1::2])[0, 1]) < 0.02


def test_masks_depend_on_the_key_and_pass_through_when_deterministic():
  x = jax.random.normal(jax.random.PRNGKey(3), (64, 128), jnp.bfloat16)
  a, b = _apply(0.1, x, seed=0), _apply(0.1, x, seed=1)
  assert a.dtype == jnp.bfloat16 and a.shape == x.shape
  assert not np.array_equal(np.asarray(a == 0), np.asarray(b == 0))
  np.testing.assert_array_equal(_apply(0.1, x, seed=0), a)   # reproducible
  np.testing.assert_array_equal(_apply(0.1, x, deterministic=True), x)
  np.testing.assert_array_equal(_apply(0.0, x), x)
  assert not np.asarray(_apply(1.0, x)).any()


def test_gradient_is_the_mask_times_the_scale():
  x = jnp.linspace(0.5, 1.5, 999)   # no zeros: y == 0 means dropped
  y = _apply(0.25, x, seed=4)
  g = jax.grad(lambda x: jnp.sum(_apply(0.25, x, seed=4)))(x)
  keep = np.asarray(y) != 0
  np.testing.assert_allclose(np.asarray(g)[keep], 1 / 0.75, rtol=1e-6)
  assert not np.asarray(g)[~keep].any()
