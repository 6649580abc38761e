"""Classification task: features, tiny runs with several losses, bad input."""

import json

import jax
import numpy as np
import pytest

from bert_jax import train
from bert_jax.tasks.classification import ClassificationTask
from configs import finetune


def tiny(preset='drug_reviews', **overrides):
  c = finetune.get_config(preset)
  c.model.init_from = ''
  c.data.vocab = 'minilm'
  c.model.update(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                 intermediate_size=64, max_position_embeddings=64)
  c.data.max_seq_length = 64
  c.data.max_train_examples = 128
  c.data.max_eval_examples = 64
  c.batch_size, c.eval_batch_size = 16, 32
  c.total_steps, c.num_epochs = 40, 0.0
  c.log_every, c.eval_every, c.checkpoint_every = 10, 0, 1000
  c.optim.update(lr=3e-3, warmup_fraction=None, warmup_steps=None)
  c.update_from_flattened_dict(overrides)   # 'data.max_seq_length': 32, ...
  return c


def test_pair_features_have_segments_and_truncation_is_counted():
  c = tiny('boolq')
  task = ClassificationTask(c)
  f = task.train_features
  assert f['input_ids'].shape == (128, 64)
  # [CLS] question [SEP] passage [SEP]: token types 0 then 1, padding 0.
  row = 0
  types = f['token_type_ids'][row][f['attention_mask'][row] > 0]
  assert types[0] == 0 and types[-1] == 1 and set(types) == {0, 1}
  assert np.all(np.diff(types) >= 0)
  # BoolQ passages are long: most pairs are truncated to 64, and counted.
  assert task.truncated['train'] > 64
  assert set(task.label_names) == {'False', 'True'}


@pytest.mark.parametrize('loss', [dict(name='ce'), dict(name='focal', gamma=2.0),
                                  dict(name='ghm')])
def test_tiny_run_loss_falls(tmp_path, loss):
  overrides = {f'loss.{k}': v for k, v in loss.items()}
  c = tiny(**overrides)
  results = train.run(c, tmp_path)
  losses = [h['loss'] for h in results['train_history'] if 'loss' in h]
  final = results['final_eval']
  if loss['name'] != 'ghm':
    assert losses[-1] < losses[0], losses
  # GHM's value is renormalised by the batch's gradient density at every
  # step, so its curve need not fall; what it trains must still beat the
  # uniform prediction (CE ln 3) on held-out data.
  assert final['ce_loss'] < 0.9 * np.log(3), (losses, final['ce_loss'])
  assert set(final['per_class']) == {'negative', 'neutral', 'positive'}
  for key in ('accuracy', 'macro_f1', 'minority_f1', 'f1/neutral'):
    assert key in final
  on_disk = json.loads((tmp_path / 'results.json').read_text())
  assert on_disk['config']['loss']['name'] == loss['name']
  rows = (tmp_path / 'predictions.jsonl').read_text().splitlines()
  assert len(rows) == 64 and set(json.loads(rows[0])) == {
      'guid', 'label', 'prediction', 'probs'}
  names = list(final['per_class'])   # label_names order
  for row in map(json.loads, rows):  # probs: the softmax, in label order
    assert abs(sum(row['probs']) - 1) < 1e-4
    assert names[int(np.argmax(row['probs']))] == row['prediction']


@pytest.mark.parametrize('pooling', ['pooler', 'cls', 'mean', 'max', 'attention'])
def test_every_pooling_builds_and_runs(pooling):
  task = ClassificationTask(tiny(pooling=pooling))
  batch = {k: v[:4] for k, v in task.train_features.items()}
  params = task.init_params(jax.random.PRNGKey(0), batch)
  loss, _ = task.train_loss(params, batch, jax.random.PRNGKey(1), {})
  assert np.isfinite(float(loss))
  assert ('attention_pool' in str(jax.tree_util.tree_structure(params))) == (
      pooling == 'attention')


def test_q_power_sampling_and_post_hoc_adjustment(tmp_path):
  c = tiny(**{'data.sampling_q': 0.0, 'eval_logit_adjustment_tau': 1.0,
              'total_steps': 12})
  task = ClassificationTask(c)
  it = task.train_iterator(16, 0, 1, 0)
  labels = np.concatenate([next(it)['labels'] for _ in range(30)])
  # q = 0: classes drawn equally often although the data is imbalanced.
  frac = np.bincount(labels, minlength=3) / labels.size
  assert np.all(np.abs(frac - 1 / 3) < 0.06), frac
  results = train.run(c, tmp_path)
  assert 'adjusted_macro_f1' in results['final_eval']
  rows = [json.loads(r) for r in
          (tmp_path / 'predictions.jsonl').read_text().splitlines()]
  assert all('adjusted_prediction' in r for r in rows)


def test_bad_inputs_are_named():
  with pytest.raises(ValueError, match='config.data.train'):
    ClassificationTask(tiny(**{'data.train': 'no_such_dataset'}))
  with pytest.raises(ValueError, match='config.loss'):
    ClassificationTask(tiny(**{'loss.name': 'focall'}))
  with pytest.raises(ValueError, match='config.loss'):
    ClassificationTask(tiny(**{'loss.gamma': -1.0, 'loss.name': 'focal'}))
  with pytest.raises(ValueError, match='sampling_q'):
    ClassificationTask(tiny(**{'data.sampling_q': 1.5})).train_iterator(16, 0, 1, 0)


def test_example_limits_draw_a_seeded_sample_in_source_order():
  from bert_jax.data import datasets  # pylint: disable=g-import-not-at-top
  from bert_jax.tasks import finetune as finetune_task  # pylint: disable=g-import-not-at-top
  full = datasets.load('spam_assassin', 'train', seed=0).examples
  position = {e.guid: i for i, e in enumerate(full)}
  c = tiny('spam_assassin', **{'data.max_train_examples': 600})
  first = finetune_task.load_split(c, 'train').examples
  assert len(first) == 600 and len({e.guid for e in first}) == 600
  order = [position[e.guid] for e in first]
  assert order == sorted(order)                     # source order kept
  assert finetune_task.load_split(c, 'train').examples == first  # seeded
  # Not a prefix (all ham): about the split's 31% spam.
  spam = sum(e.label == 'spam' for e in first) / 600
  assert 0.25 < spam < 0.38
  c.data.split_seed = 1
  assert finetune_task.load_split(c, 'train').examples != first


def test_initial_state_loads_the_encoder_and_draws_only_the_head(tmp_path):
  """train.initial_state: encoder = the file's, head = the full init's."""
  import optax
  from bert_jax import hf_weights
  from bert_jax.heads import BertForPreTraining
  c = tiny()
  fresh_task = ClassificationTask(c)
  batch = next(fresh_task.train_iterator(16, 0, 1, seed=0))
  rng = jax.random.PRNGKey(7)
  reference = jax.device_get(jax.jit(fresh_task.init_params)(rng, batch))
  tx = optax.adamw(1e-3)
  # No init_from: everything drawn, equal to a plain init.
  state = train.initial_state(fresh_task, tx, rng, batch)
  jax.tree_util.tree_map(np.testing.assert_array_equal,
                         jax.device_get(state.params), reference)
  # An encoder with other weights, exported in HF format.
  ids = np.zeros((1, 4), np.int32)
  other = jax.device_get(BertForPreTraining(fresh_task.bert_config).init(
      jax.random.PRNGKey(123), ids, ids, ids + 1, ids[:, :2])['params'])
  hf_weights.export_hf(tmp_path / 'enc', fresh_task.bert_config, other)
  task = ClassificationTask(tiny(**{'model.init_from': str(tmp_path / 'enc')}))
  state = train.initial_state(task, tx, rng, batch)
  params = jax.device_get(state.params)
  jax.tree_util.tree_map(np.testing.assert_array_equal, params['bert'],
                         other['bert'])
  assert not np.array_equal(params['bert']['pooler']['dense']['kernel'],
                            reference['bert']['pooler']['dense']['kernel'])
  jax.tree_util.tree_map(np.testing.assert_array_equal, params['classifier'],
                         reference['classifier'])
  assert int(state.step) == 0 and int(state.nonfinite_step) == -1
  assert all(float(np.abs(x).max()) == 0 for x in
             jax.tree_util.tree_leaves(state.opt_state[0].mu))
  # A pretrained tree of the wrong shape is named before anything runs.
  task.pretrained_params = lambda p: jax.tree_util.tree_map(
      lambda s: np.zeros(s.shape[:-1] + (s.shape[-1] + 1,), s.dtype), p)
  with pytest.raises(ValueError, match=r"pretrained weight \['bert'\]"
                     r"\['embeddings'\]\['LayerNorm'\]\['bias'\] has shape "
                     r"\(33,\), the model expects \(32,\)"):
    train.initial_state(task, tx, rng, batch)
  task.pretrained_params = lambda p: {'bert': p['bert']}
  with pytest.raises(ValueError, match='tree unlike the parameters'):
    train.initial_state(task, tx, rng, batch)
