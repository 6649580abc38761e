"""Tests of bert_jax.data.batching: the order, position and per-host rows
that fine-tuning's ArrayIterator and pretraining's iterator share.

(Length bucketing and grouping: tests/test_length_bucketing.py.)
"""

import numpy as np
import pytest

from bert_jax.data import batching


def test_epoch_rng_depends_on_seed_epoch_and_stream():
  draw = lambda *key: batching.epoch_rng(*key).permutation(50)
  np.testing.assert_array_equal(draw(1, 0), draw(1, 0))
  np.testing.assert_array_equal(draw(3, 2),
                                np.random.default_rng([3, 2]).permutation(50))
  # Not seed + epoch: seed 1 epoch 0 and seed 0 epoch 1 differ.
  assert not np.array_equal(draw(1, 0), draw(0, 1))
  assert not np.array_equal(draw(1, 0), draw(1, 0, 1))


def test_host_rows_are_disjoint_and_concatenate_to_the_batch():
  rows = np.arange(100, 112)
  parts = [batching.host_rows(rows, h, 4) for h in range(3)]
  np.testing.assert_array_equal(parts[1], [104, 105, 106, 107])
  np.testing.assert_array_equal(np.concatenate(parts), rows)


def test_epoch_cursor_steps_rolls_over_and_builds_each_order_once():
  built = []

  def order(epoch):
    built.append(epoch)
    return np.arange(10) + 100 * epoch

  cursor = batching.EpochCursor(order, step_size=3, steps_per_epoch=3)
  steps = [cursor.next() for _ in range(4)]
  np.testing.assert_array_equal(steps[2], [6, 7, 8])   # row 9 never visited
  np.testing.assert_array_equal(steps[3], [100, 101, 102])
  assert built == [0, 1]
  assert (cursor.epoch, cursor.step) == (1, 1)


def test_epoch_cursor_seek_resumes_and_refuses_a_step_out_of_range():
  make = lambda: batching.EpochCursor(lambda e: np.arange(12) * (e + 1),
                                      step_size=4, steps_per_epoch=3)
  cursor = make()
  for _ in range(5):
    cursor.next()
  expected = [cursor.next() for _ in range(4)]
  resumed = make()
  resumed.seek(1, 2)
  for x in expected:
    np.testing.assert_array_equal(resumed.next(), x)
  with pytest.raises(ValueError, match='step 3 out of range'):
    make().seek(0, 3)


def test_check_state_names_the_first_key_that_differs():
  state = dict(epoch=2, step=1, seed=5, n=100)
  batching.check_state(state, dict(seed=5, n=100))
  with pytest.raises(ValueError, match=r'for n=100, this run has 99'):
    batching.check_state(state, dict(seed=5, n=99))
  with pytest.raises(ValueError, match=r'seed=5, this run has 6'):
    batching.check_state(state, dict(seed=6, n=99))


def test_eval_batches_cover_every_row_once_and_weight_padding_zero():
  features = dict(x=np.arange(10) * 10)
  hosts = [list(batching.eval_batches_from(features, 2, h, 2))
           for h in range(2)]
  assert len(hosts[0]) == len(hosts[1]) == 3
  weights = np.concatenate([b['weights'] for h in hosts for b in h])
  rows = np.concatenate([b['x'] for h in hosts for b in h])
  assert sorted(rows[weights > 0]) == list(range(0, 100, 10))
  assert weights.sum() == 10
  # The last global batch: host 0 holds rows 8, 9; host 1 only padding.
  np.testing.assert_array_equal(hosts[1][2]['weights'], [0, 0])


def test_pad_to():
  out = batching.pad_to([5, 6], 4, value=9)
  np.testing.assert_array_equal(out, [5, 6, 9, 9])
  assert out.dtype == np.int32
