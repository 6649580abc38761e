"""Frozen encoder (bert_jax.frozen): no encoder backward, cached outputs.

References outside the code under test: the number of matrix products in
the traced forward pass (a backward that skips the encoder adds only the
head's), a direct `BertModel.apply` on the encoder's own parameters (what
the cache must hold), and a run that executes the encoder at every step
(what a run on the cache must equal).
"""

import json

import jax
import numpy as np
import pytest

from bert_jax import frozen
from bert_jax import optim
from bert_jax import sharding
from bert_jax import train
from bert_jax.model import BertModel
from bert_jax.tasks.classification import ClassificationTask
from configs import finetune
from tests import frozen_check


def tiny(preset='drug_reviews', **overrides):
  """A random-init 1-layer BERT, encoder frozen, dropout 0. hidden_size ==
  max_seq_length, so a pooled [N, H] output would look like a sequence to
  length bucketing (4 buckets by default) if the cache stored it as one."""
  c = finetune.get_config(preset)
  c.model.init_from = ''
  c.data.vocab = 'minilm'
  c.model.update(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                 intermediate_size=64, max_position_embeddings=64,
                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
  c.data.max_seq_length = 32
  c.data.max_train_examples = 48
  c.data.max_eval_examples = 24
  c.batch_size, c.eval_batch_size = 8, 16
  c.total_steps, c.num_epochs = 12, 0.0
  c.log_every, c.eval_every, c.checkpoint_every = 4, 0, 1000
  c.optim.update(lr=1e-2, warmup_fraction=None, warmup_steps=None,
                 freeze='^bert/')
  c.update_from_flattened_dict(overrides)   # 'data.max_seq_length': 32, ...
  return c


def _params_and_batch(task):
  batch = {k: v[:8] for k, v in task.train_features.items()}
  params = task.init_params(jax.random.PRNGKey(0), batch)
  return params, batch


def test_frozen_mask_on_real_parameter_paths():
  task = ClassificationTask(tiny())
  params, _ = _params_and_batch(task)
  mask = optim.frozen_mask(task.config.optim, params)
  assert all(jax.tree.leaves(mask['bert']))
  assert not any(jax.tree.leaves(mask['classifier']))
  assert frozen.encoder_frozen(mask)
  partial = optim.frozen_mask(dict(freeze='^bert/encoder/'), params)
  assert not frozen.encoder_frozen(partial)
  assert not frozen.encoder_frozen(None)


def test_stop_gradients_removes_the_encoder_backward():
  task = ClassificationTask(tiny(pooling='mean'))
  params, batch = _params_and_batch(task)
  mask = optim.frozen_mask(task.config.optim, params)
  rng = jax.random.PRNGKey(1)
  loss = lambda p: task.train_loss(p, batch, rng, {})[0]
  stopped = lambda p: loss(frozen.stop_gradients(p, mask))
  forward = frozen_check.dots(loss, params)
  # The full backward multiplies twice per forward product (input and weight
  # gradients); with the encoder frozen only the classifier's weight gradient
  # is added to the forward.
  assert frozen_check.dots(jax.grad(loss), params) >= 2 * forward
  assert frozen_check.dots(jax.grad(stopped), params) <= forward + 1
  g_full, g_stop = jax.grad(loss)(params), jax.grad(stopped)(params)
  for leaf in jax.tree.leaves(g_stop['bert']):
    assert not np.any(leaf)
  np.testing.assert_allclose(g_stop['classifier']['kernel'],
                             g_full['classifier']['kernel'], rtol=1e-6)


def test_cache_holds_the_encoder_outputs():
  task = ClassificationTask(tiny(pooling='mean'))
  params, _ = _params_and_batch(task)
  assert frozen.cache_encoder_outputs(task, params, task.config,
                                      sharding.make_mesh(None))
  f = task.train_features
  n, t = f['input_ids'].shape
  assert f[frozen.SEQUENCE].shape == (n, t, 32)
  assert f[frozen.POOLED].shape == (n, 1, 32)
  seq, pooled = BertModel(task.bert_config).apply(
      {'params': params['bert']}, f['input_ids'], f['token_type_ids'],
      f['attention_mask'])
  real = f['attention_mask'] > 0
  np.testing.assert_allclose(f[frozen.SEQUENCE][real], np.asarray(seq)[real],
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(f[frozen.POOLED][:, 0], pooled, rtol=1e-5,
                             atol=1e-5)
  assert len(task.eval_features[frozen.SEQUENCE]) == len(
      task.eval_features['input_ids'])
  # A batch that carries the cache skips the encoder: its loss traces only
  # the classifier's product, and equals the loss of the encoder's run.
  rng = jax.random.PRNGKey(1)
  cached = {k: v[:8] for k, v in f.items()}
  plain = {k: v for k, v in cached.items() if not k.startswith('encoder_out/')}
  loss = lambda batch: task.train_loss(params, batch, rng, {})[0]
  assert frozen_check.dots(loss, cached) == 1 < frozen_check.dots(loss, plain)
  np.testing.assert_allclose(loss(cached), loss(plain), rtol=1e-5)


def test_a_cache_over_its_size_limit_is_not_made():
  task = ClassificationTask(tiny(pooling='mean',
                                 cache_frozen_encoder_max_gib=1e-4))
  params, _ = _params_and_batch(task)
  # 48 train + 24 eval rows of [32, 32] + [1, 32] float32: 0.28 MB > 0.1 MB.
  assert not frozen.cache_encoder_outputs(task, params, task.config,
                                          sharding.make_mesh(None))
  assert frozen.SEQUENCE not in task.train_features
  task.config.cache_frozen_encoder_max_gib = 1e-3
  assert frozen.cache_encoder_outputs(task, params, task.config,
                                      sharding.make_mesh(None))


def test_should_cache_only_when_exact():
  def decide(**overrides):
    task = ClassificationTask(tiny(**overrides))
    params, _ = _params_and_batch(task)
    return frozen.should_cache(task.config, task, optim.frozen_mask(
        task.config.optim, params))
  assert decide()
  assert not decide(**{'model.hidden_dropout_prob': 0.1})
  assert not decide(**{'model.attention_probs_dropout_prob': 0.1})
  assert not decide(**{'optim.freeze': '^bert/encoder/'})
  assert not decide(cache_frozen_encoder=False)


def _run(tmp_path, name, config, monkeypatch):
  """train.run, counting the calls that fill the cache."""
  calls = []
  real = frozen.cache_encoder_outputs
  monkeypatch.setattr(frozen, 'cache_encoder_outputs',
                      lambda *a: calls.append(1) or real(*a))
  results = train.run(config, tmp_path / name)
  rows = [json.loads(line) for line in
          (tmp_path / name / 'predictions.jsonl').read_text().splitlines()]
  return results, calls, rows


def _numbers(row):
  """The floats of a predictions.jsonl row, flattened."""
  if isinstance(row, dict):
    return [x for k in sorted(row) for x in _numbers(row[k])]
  if isinstance(row, (list, tuple)):
    return [x for v in row for x in _numbers(v)]
  return [row] if isinstance(row, float) else []


@pytest.mark.parametrize('preset,overrides', [
    ('drug_reviews', {}),                          # pooled output
    ('drug_reviews', {'pooling': 'mean'}),         # sequence output, buckets
    ('drug_reviews', {'pooling': 'attention'}),    # a head with its own params
    ('conll_sample', {'crf': True}),               # tagging with a CRF
])
def test_run_on_the_cache_equals_the_run_without(tmp_path, monkeypatch,
                                                 preset, overrides):
  on, calls_on, rows_on = _run(tmp_path, 'on', tiny(preset, **overrides),
                               monkeypatch)
  off, calls_off, rows_off = _run(
      tmp_path, 'off', tiny(preset, cache_frozen_encoder=False, **overrides),
      monkeypatch)
  assert calls_on == [1] and calls_off == []
  loss_on = [h['loss'] for h in on['train_history'] if 'loss' in h]
  loss_off = [h['loss'] for h in off['train_history'] if 'loss' in h]
  np.testing.assert_allclose(loss_on, loss_off, rtol=1e-5)
  assert loss_on[-1] < loss_on[0]   # the head does train
  for key, value in off['final_eval'].items():
    if isinstance(value, float):
      assert on['final_eval'][key] == pytest.approx(value, rel=1e-5,
                                                    abs=1e-6), key
  assert len(rows_on) == len(rows_off)
  for a, b in zip(rows_on, rows_off):
    np.testing.assert_allclose(_numbers(a), _numbers(b), rtol=1e-4, atol=1e-5)
    assert {k: v for k, v in a.items() if not _numbers(v)} == {
        k: v for k, v in b.items() if not _numbers(v)}
