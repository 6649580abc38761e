"""Tests of bert_jax.data.sampling: q-power resampling."""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from bert_jax.data import sampling

# 1000 examples over four classes, heavily imbalanced.
COUNTS = (700, 200, 80, 20)
LABELS = np.repeat(np.arange(4), COUNTS)


def test_q_power_probs_known_values():
  np.testing.assert_allclose(sampling.q_power_probs(COUNTS, 1.0),
                             np.array(COUNTS) / 1000)
  np.testing.assert_allclose(sampling.q_power_probs(COUNTS, 0.0), [0.25] * 4)
  root = np.sqrt(COUNTS)
  np.testing.assert_allclose(sampling.q_power_probs(COUNTS, 0.5),
                             root / root.sum())
  # An absent class (id 1 unused) gets probability 0, even at q=0.
  np.testing.assert_allclose(sampling.q_power_probs([5, 0, 5], 0.0),
                             [0.5, 0, 0.5])
  # Large counts and powers do not overflow.
  assert np.isfinite(sampling.q_power_probs([10**9, 1], 50.0)).all()


@pytest.mark.parametrize('q', [0.0, 0.5, 1.0])
@pytest.mark.parametrize('replacement', [True, False])
def test_empirical_class_frequencies_match_p(q, replacement):
  """Over 300 epochs (300k draws) the class frequencies match p_j.

  Tolerance: per epoch each class gets floor or ceil of N p_j slots, so the
  long-run frequency is within 1/N = 0.001 of p_j; we allow 0.002.
  """
  sampler = sampling.QPowerSampler(LABELS, q, seed=3, replacement=replacement)
  p = sampling.q_power_probs(COUNTS, q)
  draws = np.concatenate([sampler.epoch_indices(e) for e in range(300)])
  freq = np.bincount(LABELS[draws], minlength=4) / draws.size
  np.testing.assert_allclose(freq, p, atol=0.002)
  for e in range(5):  # every epoch: quotas within one slot of N p_j
    counts = np.bincount(LABELS[sampler.epoch_indices(e)], minlength=4)
    assert np.all(np.abs(counts - 1000 * p) < 1)


def test_examples_within_a_class_are_uniform():
  sampler = sampling.QPowerSampler(LABELS, 0.0, seed=0)
  draws = np.concatenate([sampler.epoch_indices(e) for e in range(200)])
  rare = np.flatnonzero(LABELS == 3)  # 20 examples, 250 slots per epoch
  hits = np.array([(draws == i).sum() for i in rare])
  expected = 200 * 250 / 20
  assert np.all(np.abs(hits - expected) < 0.1 * expected)


def test_q1_without_replacement_is_a_permutation_each_epoch():
  sampler = sampling.QPowerSampler(LABELS, 1.0, seed=1, replacement=False)
  for e in range(3):
    assert sorted(sampler.epoch_indices(e)) == list(range(1000))
  assert not np.array_equal(sampler.epoch_indices(0), sampler.epoch_indices(1))


def test_oversampling_without_replacement_cycles_the_class():
  sampler = sampling.QPowerSampler(LABELS, 0.0, seed=1, replacement=False)
  draws = sampler.epoch_indices(0)
  rare = draws[LABELS[draws] == 3]  # 250 slots for 20 examples
  per_example = np.bincount(rare, minlength=1000)[LABELS == 3]
  assert set(per_example) <= {12, 13}


def test_determinism_and_seed_dependence():
  a = sampling.QPowerSampler(LABELS, 0.5, seed=7)
  b = sampling.QPowerSampler(LABELS, 0.5, seed=7)
  c = sampling.QPowerSampler(LABELS, 0.5, seed=8)
  batches_a = [a.next_batch(64) for _ in range(40)]
  batches_b = [b.next_batch(64) for _ in range(40)]
  batches_c = [c.next_batch(64) for _ in range(40)]
  assert all(np.array_equal(x, y) for x, y in zip(batches_a, batches_b))
  assert not all(np.array_equal(x, y) for x, y in zip(batches_a, batches_c))
  # Epoch e does not depend on what was drawn before.
  fresh = sampling.QPowerSampler(LABELS, 0.5, seed=7)
  np.testing.assert_array_equal(fresh.epoch_indices(2), a.epoch_indices(2))


def test_batches_run_across_epoch_boundaries():
  sampler = sampling.QPowerSampler(LABELS, 0.5, seed=2)
  stream = np.concatenate([sampler.next_batch(300) for _ in range(10)])
  expected = np.concatenate([sampler.epoch_indices(e) for e in range(3)])
  np.testing.assert_array_equal(stream, expected)
  assert sampler.epoch == 3 and sampler.position == 3000


def test_state_round_trip_resumes_the_stream():
  sampler = sampling.QPowerSampler(LABELS, 0.5, seed=11)
  for _ in range(17):  # stop mid-epoch
    sampler.next_batch(48)
  state = json.loads(json.dumps(sampler.get_state()))  # checkpointable
  expected = [sampler.next_batch(48) for _ in range(30)]
  restored = sampling.QPowerSampler(LABELS, 0.5, seed=11)
  restored.set_state(state)
  got = [restored.next_batch(48) for _ in range(30)]
  assert all(np.array_equal(x, y) for x, y in zip(expected, got))


def test_state_of_another_sampler_is_refused():
  state = sampling.QPowerSampler(LABELS, 0.5, seed=11).get_state()
  for other in (sampling.QPowerSampler(LABELS, 0.5, seed=12),
                sampling.QPowerSampler(LABELS, 1.0, seed=11),
                sampling.QPowerSampler(LABELS[::-1].copy(), 0.5, seed=11)):
    with pytest.raises(ValueError, match='does not match'):
      other.set_state(state)
  with pytest.raises(ValueError, match='version'):
    sampling.QPowerSampler(LABELS, 0.5, seed=11).set_state({'position': 3})


def test_shards_split_each_global_batch():
  hosts = [sampling.QPowerSampler(LABELS, 0.0, seed=5, num_shards=4,
                                  shard_index=i) for i in range(4)]
  reference = sampling.QPowerSampler(LABELS, 0.0, seed=5)
  for _ in range(20):
    parts = [h.next_batch(64) for h in hosts]
    assert all(p.shape == (16,) for p in parts)
    np.testing.assert_array_equal(np.concatenate(parts),
                                  reference.next_global_batch(64))
  # The state is host-independent: host 0's state restores host 3.
  state = hosts[0].get_state()
  host3 = sampling.QPowerSampler(LABELS, 0.0, seed=5, num_shards=4,
                                 shard_index=3)
  host3.set_state(state)
  np.testing.assert_array_equal(host3.next_batch(64), hosts[3].next_batch(64))
  with pytest.raises(ValueError, match='divisible'):
    hosts[0].next_batch(30)


def test_bad_arguments():
  with pytest.raises(ValueError):
    sampling.QPowerSampler([], 1.0)
  with pytest.raises(ValueError):
    sampling.QPowerSampler([0, -1], 1.0)
  with pytest.raises(ValueError):
    sampling.QPowerSampler([0.5, 1.0], 1.0)
  with pytest.raises(ValueError):
    sampling.QPowerSampler([0, 1], 1.0, num_shards=2, shard_index=2)
  with pytest.raises(ValueError):
    sampling.QPowerSampler([0, 1], float('nan'))


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(counts=st.lists(st.integers(0, 50), min_size=1, max_size=8).filter(
    lambda c: sum(c) > 0),
       q=st.floats(-1, 2), seed=st.integers(0, 2**31),
       epoch_size=st.one_of(st.none(), st.integers(1, 300)))
def test_quota_properties(counts, q, seed, epoch_size):
  labels = np.repeat(np.arange(len(counts)), counts)
  sampler = sampling.QPowerSampler(labels, q, seed=seed,
                                   epoch_size=epoch_size,
                                   num_classes=len(counts))
  n = sampler.epoch_size
  quota = sampler.class_quota(np.random.default_rng(seed))
  assert quota.sum() == n
  assert np.all(np.abs(quota - n * sampler.class_probs) < 1)
  assert np.all(quota[np.array(counts) == 0] == 0)
  indices = sampler.epoch_indices(0)
  assert indices.shape == (n,)
  np.testing.assert_array_equal(
      np.bincount(labels[indices], minlength=len(counts)),
      sampler.class_quota(np.random.default_rng([seed, 0])))


def test_entity_type_and_sentence_classes():
  assert sampling.entity_type('B-PER') == 'PER'
  assert sampling.entity_type('S-LOC') == 'LOC'
  assert sampling.entity_type('O') is None
  assert sampling.entity_type('MISC') == 'MISC'
  tags = [('B-PER', 'I-PER', 'O'),    # PER
          ('B-LOC', 'O', 'B-PER'),    # LOC is rarer than PER
          ('O', 'O'),                 # no entity
          ('B-PER',),
          ('S-LOC', 'B-ORG', 'E-ORG')]  # ORG (1 sentence) is the rarest
  ids, names = sampling.sentence_classes(tags)
  assert names == ['O', 'LOC', 'ORG', 'PER']
  assert [names[i] for i in ids] == ['PER', 'LOC', 'O', 'PER', 'ORG']
  # Usable directly with the sampler.
  sampler = sampling.QPowerSampler(ids, 0.0, seed=0, epoch_size=400)
  freq = np.bincount(ids[sampler.epoch_indices(0)], minlength=4) / 400
  np.testing.assert_allclose(freq, [0.25] * 4)
