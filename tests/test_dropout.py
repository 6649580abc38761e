"""bert_jax.model.Dropout: packed 16-bit draws, exact expectation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.model import Dropout, random_bits


def _apply(rate, x, seed=0, deterministic=False):
  return Dropout(rate).apply({}, x, deterministic,
                             rngs={'dropout': jax.random.PRNGKey(seed)})


@pytest.mark.parametrize('rate', [0.1, 0.5, 0.9])
def test_drop_rate_scale_and_expectation(rate):
  x = jnp.ones((1001, 257), jnp.float32)      # odd size: a half-used word
  y = np.asarray(_apply(rate, x))
  dropped = y == 0
  t = round(rate * 65536)
  # Binomial: 257k draws, 5 standard errors.
  se = np.sqrt(rate * (1 - rate) / y.size)
  assert abs(dropped.mean() - t / 65536) < 5 * se
  np.testing.assert_allclose(y[~dropped], 65536 / (65536 - t), rtol=1e-6)
  assert abs(y.mean() - 1.0) < 5 * se / (1 - rate)
  # Neighbouring elements share a 32-bit word: their masks must still be
  # independent (correlation ~0).
  flat = dropped.ravel().astype(np.float64)
  corr = np.corrcoef(flat[:-1:2], flat[1::2])[0, 1]
  assert abs(corr) < 0.02


def test_masks_depend_on_the_rng_and_pass_through_when_deterministic():
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
  np.testing.assert_allclose(np.asarray(g)[keep], 65536 / (65536 - 16384))
  assert not np.asarray(g)[~keep].any()


@pytest.mark.parametrize('num', [1, 2, 7, 4097, 1_572_864])
def test_unrolled_threefry_bits_equal_jax_random_bits(num):
  """The masks are those `jax.random.bits` would give, raw or typed keys."""
  draw = jax.jit(random_bits, static_argnums=1)
  for seed in (0, 5, 2**31 - 1):
    raw = jax.random.fold_in(jax.random.PRNGKey(seed), 11)
    for key in (raw, jax.random.wrap_key_data(raw)):
      np.testing.assert_array_equal(
          np.asarray(draw(key, num)),
          np.asarray(jax.random.bits(key, (num,), jnp.uint32)))


def test_other_prngs_and_counter_schemes_fall_back_to_jax_random_bits():
  rbg = jax.random.key(0, impl='rbg')
  np.testing.assert_array_equal(random_bits(rbg, 9),
                                jax.random.bits(rbg, (9,), jnp.uint32))
  key = jax.random.PRNGKey(1)
  with jax.threefry_partitionable(False):
    np.testing.assert_array_equal(random_bits(key, 9),
                                  jax.random.bits(key, (9,), jnp.uint32))
