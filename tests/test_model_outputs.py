"""BertModel's `output_positions`: the last layer run only where heads read.

Cutting the last layer's queries to the read positions must give exactly
the full model's outputs gathered there (values and gradients), in every
execution mode, and must really do less work (XLA's FLOP count, and the
FLOP formula behind MFU). Also: the layer builders the encoder and the
heads share (`model.dense`, `model.layer_norm`).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from bert_jax import heads
from bert_jax import model as model_lib
from bert_jax.model import BertConfig, BertModel
from bert_jax.tasks import pretraining

CONFIG = BertConfig(vocab_size=101, hidden_size=32, num_hidden_layers=3,
                    num_attention_heads=4, intermediate_size=64,
                    max_position_embeddings=64)
B, T = 3, 20


def _inputs():
  ids = jax.random.randint(jax.random.PRNGKey(0), (B, T), 1, 101)
  mask = jnp.ones((B, T), jnp.int32).at[1, 12:].set(0)
  types = jnp.zeros((B, T), jnp.int32).at[:, 10:].set(1)
  # Repeated positions, [CLS] itself, the last and a padding position.
  positions = jnp.array([[1, 5, 7, 7], [2, 3, 11, 15], [0, 19, 19, 4]])
  return ids, types, mask, positions


def _gather(seq, positions):
  return np.take_along_axis(np.asarray(seq), np.asarray(positions)[..., None],
                            axis=1)


@pytest.mark.parametrize('options', [
    {}, {'remat_policy': 'full'}, {'remat_policy': 'save_proj'},
    {'last_layer_at_outputs': False}, {'scan_layers': True},
    {'scan_layers': True, 'remat_policy': 'dots'}])
def test_outputs_at_positions_equal_the_gathered_full_output(options):
  config = CONFIG.replace(**options)
  ids, types, mask, positions = _inputs()
  model = BertModel(config)
  params = model.init(jax.random.PRNGKey(1), ids, types, mask)
  seq, pooled = model.apply(params, ids, types, mask)
  at, pooled_at = model.apply(params, ids, types, mask,
                              output_positions=positions)
  assert at.shape == (B, 4, 32)
  np.testing.assert_allclose(at, _gather(seq, positions), atol=2e-6)
  np.testing.assert_allclose(pooled_at, pooled, atol=2e-6)
  none, pooled_none = model.apply(params, ids, types, mask,
                                  output_positions=jnp.zeros((B, 0), jnp.int32))
  assert none.shape == (B, 0, 32)
  np.testing.assert_allclose(pooled_none, pooled, atol=2e-6)


def test_gradients_equal_the_full_model():
  ids, types, mask, positions = _inputs()
  model = BertModel(CONFIG)
  params = model.init(jax.random.PRNGKey(1), ids, types, mask)['params']
  probe = jax.random.normal(jax.random.PRNGKey(2), (B, 4, 32))

  def loss(p, cut):
    if cut:
      at, pooled = model.apply({'params': p}, ids, types, mask,
                               output_positions=positions)
    else:
      seq, pooled = model.apply({'params': p}, ids, types, mask)
      at = jnp.take_along_axis(seq, positions[..., None], axis=1)
    return jnp.sum(at * probe) + jnp.sum(pooled ** 2)

  grad = jax.jit(jax.grad(loss), static_argnums=1)
  g_cut, g_full = grad(params, True), grad(params, False)
  flat_cut = jax.tree_util.tree_leaves_with_path(g_cut)
  flat_full = jax.tree_util.tree_leaves(g_full)
  for (path, a), b in zip(flat_cut, flat_full):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6,
                               err_msg=jax.tree_util.keystr(path))
  # The last layer's query-side weights do get gradients.
  last = g_cut['encoder']['layer_2']['intermediate']['kernel']
  assert float(jnp.abs(last).max()) > 0


def test_training_mode_shapes_and_no_dropout_equality():
  ids, types, mask, positions = _inputs()
  config = CONFIG.replace(hidden_dropout_prob=0.0,
                          attention_probs_dropout_prob=0.0)
  model = BertModel(config)
  params = model.init(jax.random.PRNGKey(1), ids, types, mask)
  rngs = {'dropout': jax.random.PRNGKey(3)}
  at, _ = model.apply(params, ids, types, mask, output_positions=positions,
                      deterministic=False, rngs=rngs)
  seq, _ = model.apply(params, ids, types, mask, deterministic=True)
  np.testing.assert_allclose(at, _gather(seq, positions), atol=2e-6)
  # Attention dropout on takes the explicit-softmax path; at rate 1e-6 the
  # 16-bit threshold is 0, so it drops nothing and must equal the fused path,
  # with the cut queries (Q rows against T keys, padding masked) too.
  model = BertModel(config.replace(attention_probs_dropout_prob=1e-6))
  at, pooled = model.apply(params, ids, types, mask,
                           output_positions=positions, deterministic=False,
                           rngs=rngs)
  np.testing.assert_allclose(at, _gather(seq, positions), atol=2e-6)
  full, _ = model.apply(params, ids, types, mask, deterministic=False,
                        rngs=rngs)
  np.testing.assert_allclose(full, seq, atol=2e-6)
  # And with real dropout the cut path still runs, finite, Q rows out.
  model = BertModel(CONFIG)
  at, pooled = model.apply(params, ids, types, mask,
                           output_positions=positions, deterministic=False,
                           rngs=rngs)
  assert at.shape == (B, 4, 32) and pooled.shape == (B, 32)
  assert np.isfinite(np.asarray(at)).all()


def test_key_lengths_are_the_padding_mask_in_length_form():
  mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]],
                   bool)[:, None, None, :]
  lengths = model_lib.key_lengths(mask)
  assert lengths.dtype == jnp.int32
  np.testing.assert_array_equal(lengths, [3, 5, 1])
  # The length form attends exactly like the mask (XLA implements both), with
  # queries cut to fewer rows than keys as the last layer does.
  ks = jax.random.split(jax.random.PRNGKey(0), 3)
  q = jax.random.normal(ks[0], (2, 3, 4, 8))
  k = jax.random.normal(ks[1], (2, 5, 4, 8))
  v = jax.random.normal(ks[2], (2, 5, 4, 8))
  mask = mask[:2]
  by_mask = jax.nn.dot_product_attention(q, k, v, mask=mask,
                                         implementation='xla')
  by_length = jax.nn.dot_product_attention(
      q, k, v, key_value_seq_lengths=model_lib.key_lengths(mask),
      implementation='xla')
  np.testing.assert_allclose(by_length, by_mask, atol=1e-6)


def test_dense_and_layer_norm_follow_the_config():
  """The layers the encoder and the heads build: dtypes, init, epsilon."""
  c = CONFIG.replace(dtype='bfloat16', initializer_range=0.5,
                     layer_norm_eps=1.0)

  class Both(nn.Module):
    @nn.compact
    def __call__(self, x):
      return (model_lib.dense(c, 64, 'proj')(x),
              model_lib.layer_norm(c, 'norm')(x))

  x = jnp.arange(64, dtype=jnp.float32).reshape(2, 32) / 8
  params = Both().init(jax.random.PRNGKey(0), x)['params']
  kernel = params['proj']['kernel']
  assert kernel.shape == (32, 64) and kernel.dtype == jnp.float32
  assert 0.45 < float(kernel.std()) < 0.55   # N(0, initializer_range^2)
  assert not params['proj']['bias'].any()
  projected, normed = Both().apply({'params': params}, x)
  assert projected.dtype == normed.dtype == jnp.bfloat16
  x = np.asarray(x)
  expected = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True)
                                                       + 1.0)
  np.testing.assert_allclose(np.asarray(normed, np.float32), expected,
                             atol=0.02)


def test_cudnn_attention_needs_half_precision():
  with pytest.raises(ValueError, match="attention_implementation='cudnn'.*"
                     "dtype='float32'"):
    CONFIG.replace(attention_implementation='cudnn')
  CONFIG.replace(attention_implementation='cudnn', dtype='bfloat16')


@pytest.mark.skipif(jax.default_backend() != 'gpu', reason='needs a GPU')
def test_cudnn_attention_matches_xla_on_gpu():
  ids, types, mask, positions = _inputs()
  config = CONFIG.replace(dtype='bfloat16', hidden_size=64,
                          num_attention_heads=2)
  model = BertModel(config)
  params = model.init(jax.random.PRNGKey(1), ids, types, mask)
  xla, _ = model.apply(params, ids, types, mask, output_positions=positions)
  model = BertModel(config.replace(attention_implementation='cudnn'))
  cudnn, _ = model.apply(params, ids, types, mask, output_positions=positions)
  np.testing.assert_allclose(np.asarray(cudnn, np.float32),
                             np.asarray(xla, np.float32), atol=5e-2)


def _forward_flops(fn, *args):
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return cost['flops']


def test_the_cut_does_less_work_and_the_flop_formula_counts_it():
  """XLA's FLOP count of the pretraining forward: the cut saves most of one
  layer, and `training_flops_per_example` / 3 matches XLA within 3% with the
  cut and without it."""
  # ReLU: XLA counts erf-GELU's polynomial as FLOPs, the formula does not.
  config = BertConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=2,
                      num_attention_heads=4, intermediate_size=512,
                      max_position_embeddings=128, hidden_act='relu')
  b, t, p = 4, 128, 20
  ids = jnp.ones((b, t), jnp.int32)
  positions = jnp.tile(jnp.arange(p, dtype=jnp.int32)[None] * 5, (b, 1))
  flops = {}
  for cut in (True, False):
    c = config.replace(last_layer_at_outputs=cut)
    model = heads.BertForPreTraining(c)
    params = model.init(jax.random.PRNGKey(0), ids, ids, ids, positions)
    flops[cut] = _forward_flops(
        lambda prm: model.apply(prm, ids, jnp.zeros_like(ids), ids, positions),
        params)
    formula = pretraining.training_flops_per_example(c, t, p) / 3 * b
    assert flops[cut] == pytest.approx(formula, rel=0.03), (cut, formula)
  per_layer = b * t * (8 * 128 ** 2 + 4 * 128 * 512 + 4 * t * 128)
  saved = flops[False] - flops[True]
  assert 0.6 * per_layer < saved < per_layer


@pytest.mark.parametrize('pooling', ['pooler', 'cls'])
def test_classification_heads_equal_the_uncut_model(pooling):
  ids, types, mask, _ = _inputs()
  logits = {}
  for cut in (True, False):
    model = heads.BertForSequenceClassification(
        CONFIG.replace(last_layer_at_outputs=cut), num_labels=3,
        pooling=pooling)
    params = model.init(jax.random.PRNGKey(1), ids, types, mask)
    logits[cut] = model.apply(params, ids, types, mask)
  np.testing.assert_allclose(logits[True], logits[False], atol=2e-6)


@pytest.mark.parametrize('method', ['entity_markers', 'entity_embeddings'])
def test_relation_heads_equal_the_uncut_model(method):
  ids, types, mask, _ = _inputs()
  kw = dict(head_start=jnp.array([1, 2, 3]), tail_start=jnp.array([5, 9, 0]),
            entity_ids=jnp.zeros((B, T), jnp.int32).at[:, 2:4].set(1))
  if method == 'entity_markers':
    kw.pop('entity_ids')
  logits = {}
  for cut in (True, False):
    config = CONFIG.replace(last_layer_at_outputs=cut, num_entity_types=3)
    model = heads.BertForRelation(config, num_labels=4, method=method)
    params = model.init(jax.random.PRNGKey(1), ids, types, mask, **kw)
    logits[cut] = model.apply(params, ids, types, mask, **kw)
  np.testing.assert_allclose(logits[True], logits[False], atol=2e-6)
