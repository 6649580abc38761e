"""Length bucketing and grouping: same data, fewer padded columns."""

import jax
import numpy as np
import pytest

from bert_jax import train
from bert_jax.data import batching
from bert_jax.tasks.classification import ClassificationTask

from test_task_classification import tiny  # pylint: disable=g-bad-import-order

T = 64


def _features(n=200, seed=0):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(2, T + 1, n)
  mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.int32)
  ids = rng.integers(5, 100, (n, T)).astype(np.int32) * mask
  return dict(input_ids=ids, attention_mask=mask,
              labels=rng.integers(0, 3, n).astype(np.int32),
              example_index=np.arange(n, dtype=np.int32)), lengths


def test_batches_are_cut_to_the_smallest_bucket_holding_them():
  features, lengths = _features()
  buckets = (16, 32, 48, 64)
  plain = batching.ArrayIterator(features, global_batch_size=8, seed=3)
  cut = batching.ArrayIterator(features, global_batch_size=8, seed=3,
                               lengths=lengths, buckets=buckets)
  seen = set()
  for _ in range(60):
    a, b = next(plain), next(cut)
    width = b['input_ids'].shape[1]
    longest = lengths[a['example_index']].max()
    assert width == min(x for x in buckets if x >= longest)
    seen.add(width)
    np.testing.assert_array_equal(b['input_ids'], a['input_ids'][:, :width])
    np.testing.assert_array_equal(b['attention_mask'],
                                  a['attention_mask'][:, :width])
    assert not a['attention_mask'][:, width:].any()   # only padding cut
    np.testing.assert_array_equal(b['labels'], a['labels'])
  assert len(seen) > 1


def test_two_hosts_cut_alike_and_together_make_the_one_host_batch():
  features, lengths = _features()
  kw = dict(global_batch_size=8, seed=1, lengths=lengths, buckets=(24, 64),
            group_by_length=True)
  one = batching.ArrayIterator(features, **kw)
  hosts = [batching.ArrayIterator(features, shard_index=h, num_shards=2, **kw)
           for h in range(2)]
  for _ in range(30):
    whole, parts = next(one), [next(h) for h in hosts]
    assert parts[0]['input_ids'].shape == parts[1]['input_ids'].shape
    np.testing.assert_array_equal(
        np.concatenate([p['input_ids'] for p in parts]), whole['input_ids'])


def test_grouping_keeps_the_epoch_and_sorts_within_windows():
  features, lengths = _features(n=1000)
  kw = dict(global_batch_size=10, seed=5, lengths=lengths)
  plain = batching.ArrayIterator(features, **kw)
  grouped = batching.ArrayIterator(features, group_by_length=True, **kw)
  steps = plain.steps_per_epoch
  a = [next(plain)['example_index'] for _ in range(steps)]
  b = [next(grouped)['example_index'] for _ in range(steps)]
  # The same examples per epoch, each once; batches now length-homogeneous.
  assert sorted(np.concatenate(a)) == sorted(np.concatenate(b)) == list(
      range(1000))
  spread = lambda bs: np.mean([np.ptp(lengths[x]) for x in bs])
  assert spread(b) < spread(a) / 5
  # Batch order is shuffled (not longest-first over the epoch).
  firsts = [lengths[x].max() for x in b]
  assert firsts != sorted(firsts, reverse=True)
  # Another epoch, another grouping; same seed, same grouping.
  c = [next(grouped)['example_index'] for _ in range(steps)]
  assert any(not np.array_equal(x, y) for x, y in zip(b, c))
  again = batching.ArrayIterator(features, group_by_length=True, **kw)
  for x in b:
    np.testing.assert_array_equal(next(again)['example_index'], x)


def test_grouped_iterator_resumes_mid_epoch():
  features, lengths = _features()
  kw = dict(global_batch_size=8, seed=2, lengths=lengths, buckets=(32, 64),
            group_by_length=True)
  it = batching.ArrayIterator(features, **kw)
  for _ in range(7):
    next(it)
  state = it.get_state()
  expected = [next(it)['example_index'] for _ in range(40)]
  resumed = batching.ArrayIterator(features, **kw)
  resumed.set_state(state)
  for x in expected:
    np.testing.assert_array_equal(next(resumed)['example_index'], x)


@pytest.mark.parametrize('buckets, message', [
    ((32, 16), 'increasing'), ((0, 32), 'increasing'), ((32, 128), 'increasing'),
    ((16.5,), 'whole numbers')])
def test_bad_buckets_are_named(buckets, message):
  c = tiny()
  c.data.length_buckets = buckets
  with pytest.raises(ValueError, match=f'length_buckets.*{message}'):
    batching.length_buckets(c)


def test_buckets_end_at_max_seq_length_and_exclude_sampling():
  c = tiny()
  c.data.length_buckets = (16, 32)
  assert batching.length_buckets(c) == (16, 32, T)
  c.data.group_by_length = True
  c.data.sampling_q = 0.5
  task = ClassificationTask(c)
  with pytest.raises(ValueError, match='group_by_length.*sampling_q'):
    task.train_iterator(16, 0, 1, seed=0)


def test_cut_batches_give_the_same_loss_gradient_and_eval():
  """Real drug_reviews features: a step on a bucketed batch equals the step
  on the same batch padded to max_seq_length, and so does evaluation."""
  t = 256   # drug_reviews: median 111 tokens, so many batches are short
  c = tiny(**{'data.group_by_length': True, 'data.max_seq_length': t,
              'model.max_position_embeddings': t,
              'data.length_bucket_count': 0})   # 'full': no default buckets
  task = ClassificationTask(c)
  full_it = task.train_iterator(16, 0, 1, seed=0)
  c.data.length_buckets = buckets = (64, 128, 192)
  cut_it = task.train_iterator(16, 0, 1, seed=0)
  full, cut = next(full_it), next(cut_it)
  while cut['input_ids'].shape[1] == t:
    full, cut = next(full_it), next(cut_it)
  params = task.init_params(jax.random.PRNGKey(0), full)
  loss_state = task.init_loss_state()

  def value_and_grad(batch):
    f = lambda p: task.train_loss(p, batch, jax.random.PRNGKey(1),
                                  loss_state)[0]
    return jax.jit(jax.value_and_grad(f))(params)

  # Dropout masks depend on the shape: compare without dropout.
  task.model = task.model.clone(config=task.bert_config.replace(
      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
  (v_full, g_full), (v_cut, g_cut) = value_and_grad(full), value_and_grad(cut)
  np.testing.assert_allclose(v_cut, v_full, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4,
                                                       atol=1e-6),
               g_cut, g_full)

  def eval_logits(buckets):
    c.data.length_buckets = buckets
    batches = list(task.eval_batches(4, 0, 1))   # small: some are short
    widths = {b['input_ids'].shape[1] for b in batches}
    logits = np.concatenate([task.eval_step(params, b)[1]['logits']
                             for b in batches])
    return logits, widths

  full_logits, full_widths = eval_logits(())
  cut_logits, cut_widths = eval_logits(buckets)
  assert full_widths == {t} and cut_widths - {t}
  np.testing.assert_allclose(cut_logits, full_logits, rtol=1e-4, atol=1e-5)


def test_run_with_buckets_trains_and_counts_padded_tokens(tmp_path):
  t = 256
  c = tiny(**{'data.length_buckets': (64, 128), 'data.group_by_length': True,
              'data.max_seq_length': t, 'model.max_position_embeddings': t})
  results = train.run(c, tmp_path)
  losses = [h['loss'] for h in results['train_history'] if 'loss' in h]
  assert losses[-1] < losses[0]
  logged = [h for h in results['train_history'] if 'tokens_per_sec' in h]
  # Tokens/s counts the columns really fed (<= 256 per example), not 256.
  per_example = [h['tokens_per_sec'] / h['examples_per_sec'] for h in logged]
  assert all(64 <= x <= t for x in per_example)
  assert np.mean(per_example) < 0.9 * t


def test_bucketed_run_equals_unbucketed_run(tmp_path):
  """The default (buckets at max_seq_length / 4 steps) against no cutting:
  the same losses, eval metrics and predictions from a whole tiny run (no
  dropout, whose masks depend on the shape)."""
  t = 256   # drug_reviews: median 111 tokens, so many batches are cut

  def run(count, name):
    c = tiny(**{'data.length_bucket_count': count, 'total_steps': 8,
                'log_every': 2, 'model.hidden_dropout_prob': 0.0,
                'model.attention_probs_dropout_prob': 0.0,
                'data.max_seq_length': t, 'model.max_position_embeddings': t})
    assert batching.length_buckets(c) == ((64, 128, 192, t) if count else ())
    return train.run(c, tmp_path / name)

  plain, cut = run(0, 'plain'), run(4, 'cut')
  # Tokens fed per example: fewer with buckets (the columns were cut).
  fed = lambda r: [h['tokens_per_sec'] / h['examples_per_sec']
                   for h in r['train_history'] if 'tokens_per_sec' in h]
  assert min(fed(plain)) == t and min(fed(cut)) < t
  losses = lambda r: [h['loss'] for h in r['train_history'] if 'loss' in h]
  np.testing.assert_allclose(losses(cut), losses(plain), rtol=1e-4)
  a, b = plain['final_eval'], cut['final_eval']
  for key in ('accuracy', 'macro_f1', 'micro_f1', 'minority_f1'):
    assert a[key] == b[key], key
  np.testing.assert_allclose(b['ce_loss'], a['ce_loss'], rtol=1e-4)
  read = lambda name: (tmp_path / name / 'predictions.jsonl').read_text()
  assert read('cut') == read('plain')
