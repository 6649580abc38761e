"""Tests for bert_jax.pretraining_data on the real SOTU corpus.

The statistics are measured over the whole SOTU corpus (233 speeches,
~2.1M WordPiece tokens, ~20k instances at T=128) with the uncased MiniLM
vocabulary; tokenising it takes a few seconds, so the default run covers it.
`-m slow` adds the command line at dupe_factor 5 with whole-word masking and
the dynamic masks of several epochs.
"""

import functools
import json
import math

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tokenizers

from bert_jax import pretraining_data as pd
from bert_jax.data import corpora
from bert_jax.data import registry

T = 128
P = 20


@pytest.fixture(scope='module')
def vocab_path():
  return registry.fetch('minilm') / 'vocab.txt'


@pytest.fixture(scope='module')
def vocab(vocab_path):
  with open(vocab_path, encoding='utf-8') as f:
    return [line.rstrip('\n') for line in f]


@pytest.fixture(scope='module')
def ids(vocab):
  return {t: vocab.index(t) for t in ('[PAD]', '[UNK]', '[CLS]', '[SEP]',
                                      '[MASK]')}


@pytest.fixture(scope='module')
def special(ids):
  return tuple(sorted(ids.values()))


@pytest.fixture(scope='module')
def masking(vocab, ids, special):
  return pd.MaskingConfig(vocab_size=len(vocab), mask_id=ids['[MASK]'],
                          special_ids=special, max_predictions_per_seq=P,
                          is_continuation=pd.continuation_mask(vocab))


@pytest.fixture(scope='module')
def sotu_docs(vocab_path):
  tok = tokenizers.BertWordPieceTokenizer(str(vocab_path), lowercase=True)
  encode = lambda s: [e.ids for e in tok.encode_batch(
      s, add_special_tokens=False)]
  return pd.tokenize_documents(corpora.load_documents('sotu'), encode)


@pytest.fixture(scope='module')
def instances(sotu_docs, ids):
  return pd.create_nsp_instances(
      sotu_docs, max_seq_length=T, dupe_factor=1,
      rng=np.random.default_rng(0), cls_id=ids['[CLS]'], sep_id=ids['[SEP]'])


def _maskable(x: np.ndarray, special) -> np.ndarray:
  return ~np.isin(x, np.asarray(special))


def _check_and_count(original, mask, masked, positions, lm_ids, weights, *,
                     mask_id, special):
  """Checks one batch of masking outputs; returns category counts.

  Args: original/mask/masked [B, T]; positions/lm_ids/weights [B, P].
  Returns: dict of totals (maskable, masked, mask, random, unchanged).
  """
  maskable = _maskable(original, special) & (mask > 0)
  real = weights > 0
  k = real.sum(-1)
  n = maskable.sum(-1)
  # The number masked per example is min(P, max(1, round(0.15 n))).
  expected = np.where(n > 0, np.minimum(P, np.maximum(
      1, np.round(0.15 * n))), 0)
  np.testing.assert_array_equal(k, expected)
  # Real predictions come first, then padding (position 0, id 0, weight 0).
  np.testing.assert_array_equal(real, np.arange(P)[None] < k[:, None])
  assert (positions[~real] == 0).all() and (lm_ids[~real] == 0).all()
  assert set(np.unique(weights)) <= {0.0, 1.0}
  rows = np.arange(len(original))[:, None]
  # Positions ascending and unique.
  diffs = np.diff(positions, axis=-1)
  assert (diffs[real[:, 1:]] > 0).all()
  # Never a special or padding token; lm ids are the original tokens.
  assert maskable[rows, positions][real].all()
  np.testing.assert_array_equal(lm_ids[real],
                                original[rows, positions][real])
  # Nothing else changes.
  changed = masked != original
  hit = np.zeros_like(changed)
  hit[np.broadcast_to(rows, positions.shape)[real], positions[real]] = True
  assert not (changed & ~hit).any()
  new = masked[rows, positions][real]
  old = lm_ids[real]
  # Random replacements are never special tokens.
  assert not np.isin(new[new != mask_id], np.asarray(special)).any()
  return {'maskable': int(n.sum()), 'masked': int(k.sum()),
          'mask': int((new == mask_id).sum()),
          'unchanged': int((new == old).sum()),
          'random': int(((new != mask_id) & (new != old)).sum())}


def _assert_statistics(c, label):
  frac = c['masked'] / c['maskable']
  shares = {k: c[k] / c['masked'] for k in ('mask', 'random', 'unchanged')}
  print(f'\n{label}: maskable={c["maskable"]} masked={c["masked"]} '
        f'fraction={frac:.4f} mask/random/unchanged='
        f'{shares["mask"]:.4f}/{shares["random"]:.4f}/'
        f'{shares["unchanged"]:.4f}')
  assert abs(frac - 0.15) <= 0.005
  assert abs(shares['mask'] - 0.8) <= 0.01
  assert abs(shares['random'] - 0.1) <= 0.01
  assert abs(shares['unchanged'] - 0.1) <= 0.01


def _pad_stack(instances):
  feats = [pd.to_features(x, T) for x in instances]
  return (np.stack([f['input_ids'] for f in feats]),
          np.stack([f['input_mask'] for f in feats]))


# --------------------------------------------------------------------------
# NSP instances.
# --------------------------------------------------------------------------


def test_nsp_random_next_fraction_sotu(instances, sotu_docs, ids):
  frac = np.mean([x.is_random_next for x in instances])
  print(f'\nSOTU dupe 1: {len(instances)} instances, random next {frac:.4f}')
  assert len(instances) > 15000
  assert abs(frac - 0.5) <= 0.01
  # Tighter over more draws (std ~0.13%): catches a systematic skew such as
  # the original script's forced random next for one-sentence chunks.
  more = pd.create_nsp_instances(
      sotu_docs, max_seq_length=T, dupe_factor=8,
      rng=np.random.default_rng(1), cls_id=ids['[CLS]'], sep_id=ids['[SEP]'])
  frac8 = np.mean([x.is_random_next for x in more])
  print(f'SOTU dupe 8: {len(more)} instances, random next {frac8:.4f}')
  assert abs(frac8 - 0.5) <= 0.005


def test_nsp_prob_is_respected(sotu_docs, ids):
  inst = pd.create_nsp_instances(
      sotu_docs[:100], max_seq_length=64, nsp_prob=0.2, dupe_factor=2,
      rng=np.random.default_rng(3), cls_id=ids['[CLS]'], sep_id=ids['[SEP]'])
  assert abs(np.mean([x.is_random_next for x in inst]) - 0.2) < 0.015


def _find(haystack: np.ndarray, needle: np.ndarray) -> list[int]:
  """Start indices of `needle` in `haystack` (both int32)."""
  h, n = haystack.tobytes(), needle.tobytes()
  out, at = [], h.find(n)
  while at >= 0:
    if at % 4 == 0:
      out.append(at // 4)
    at = h.find(n, at + 1)
  return out


def test_segment_structure(instances, sotu_docs, ids):
  cls, sep = ids['[CLS]'], ids['[SEP]']
  streams = [np.asarray([t for s in d for t in s], np.int32)
             for d in sotu_docs]
  lengths = []
  for k, x in enumerate(instances):
    seq, seg = x.input_ids, x.segment_ids
    assert seq.dtype == np.int32 and seg.dtype == np.int32
    assert seq.shape == seg.shape and len(seq) <= T
    assert seq[0] == cls and seq[-1] == sep
    seps = np.flatnonzero(seq == sep)
    assert len(seps) == 2 and (seq == cls).sum() == 1
    a, b = seq[1:seps[0]], seq[seps[0] + 1:-1]
    assert len(a) >= 1 and len(b) >= 1
    np.testing.assert_array_equal(
        seg, np.r_[np.zeros(len(a) + 2, int), np.ones(len(b) + 1, int)])
    lengths.append(len(seq))
    if x.is_random_next:
      assert x.b_document != x.a_document
    else:
      assert x.b_document == x.a_document
    if k < 1500:  # Content check on a subset (substring search is slowish).
      a_at = _find(streams[x.a_document], a)
      b_at = _find(streams[x.b_document], b)
      assert a_at and b_at, 'segments are contiguous text of their document'
      if not x.is_random_next:
        # B follows A in the document (up to truncation of A's tail / B's
        # head): some occurrence of B starts after some occurrence of A.
        assert max(b_at) >= min(a_at) + len(a)
  lengths = np.asarray(lengths)
  # Most are full; short_seq_prob=0.1 gives some short ones (a short target
  # still takes whole sentences, so fewer than 10% end up short).
  assert 0.05 < np.mean(lengths < T) < 0.2
  no_short = pd.create_nsp_instances(
      sotu_docs, max_seq_length=T, short_seq_prob=0.0,
      rng=np.random.default_rng(0), cls_id=cls, sep_id=sep)
  assert np.mean([len(x.input_ids) < T for x in no_short]) < 0.03


def test_truncate_seq_pair():
  rng = np.random.default_rng(0)
  a, b = list(range(10)), list(range(100, 104))
  fronts = 0
  for _ in range(200):
    ta, tb = pd.truncate_seq_pair(a, b, 8, rng)
    assert len(ta) == 4 and tb == b  # The longer one is cut.
    assert ta == a[ta[0]:ta[0] + 4]
    fronts += ta[0]
  assert 0.4 < fronts / (200 * 6) < 0.6  # Front and back equally often.
  ta, tb = pd.truncate_seq_pair(a, b, 20, rng)
  assert ta == a and tb == b


def test_nsp_determinism(sotu_docs, ids):
  make = lambda seed: pd.create_nsp_instances(
      sotu_docs[:30], max_seq_length=T, dupe_factor=2,
      rng=np.random.default_rng(seed), cls_id=ids['[CLS]'],
      sep_id=ids['[SEP]'])
  x, y, z = make(7), make(7), make(8)
  assert len(x) == len(y)
  assert all(np.array_equal(p.input_ids, q.input_ids)
             and p.is_random_next == q.is_random_next for p, q in zip(x, y))
  assert not all(len(p.input_ids) == len(q.input_ids)
                 and np.array_equal(p.input_ids, q.input_ids)
                 for p, q in zip(x, z))


def test_nsp_errors(ids):
  kw = dict(rng=np.random.default_rng(0), cls_id=1, sep_id=2)
  with pytest.raises(ValueError, match='two documents'):
    pd.create_nsp_instances([[[5, 6]]], max_seq_length=16, **kw)
  with pytest.raises(ValueError, match='non-empty'):
    pd.create_nsp_instances([[[5]], [[]]], max_seq_length=16, **kw)


def test_one_sentence_documents_force_random_next():
  docs = [[[10 + i, 11 + i]] for i in range(20)]
  inst = pd.create_nsp_instances(docs, max_seq_length=16, dupe_factor=3,
                                 rng=np.random.default_rng(0), cls_id=1,
                                 sep_id=2)
  assert len(inst) == 60 and all(x.is_random_next for x in inst)


# --------------------------------------------------------------------------
# Masking: numpy (offline) and JAX (dynamic).
# --------------------------------------------------------------------------


def test_numpy_masking_statistics_sotu(instances, masking, ids, special):
  rng = np.random.default_rng(1)
  feats = [pd.to_features(x, T, masking=masking, rng=rng) for x in instances]
  original, mask = _pad_stack(instances)
  stack = lambda k: np.stack([f[k] for f in feats])
  counts = _check_and_count(
      original, mask, stack('input_ids'), stack('masked_lm_positions'),
      stack('masked_lm_ids'), stack('masked_lm_weights'),
      mask_id=ids['[MASK]'], special=special)
  _assert_statistics(counts, 'numpy SOTU')


def test_jax_masking_statistics_sotu(instances, ids, special, vocab):
  original, mask = _pad_stack(instances)
  batch = 2048
  fn = jax.jit(functools.partial(
      pd.mask_tokens_jax, vocab_size=len(vocab), mask_id=ids['[MASK]'],
      special_ids=special, max_predictions_per_seq=P))
  key = jax.random.key(0)
  totals = {}
  for start in range(0, len(original), batch):
    x = original[start:start + batch]
    m = mask[start:start + batch]
    pad = batch - len(x)  # Keep one shape: pad with all-padding rows.
    x = np.pad(x, ((0, pad), (0, 0)))
    m = np.pad(m, ((0, pad), (0, 0)))
    out = [np.asarray(o) for o in fn(jax.random.fold_in(key, start), x, m)]
    assert out[0].shape == (batch, T) and out[0].dtype == np.int32
    assert all(o.shape == (batch, P) for o in out[1:])
    assert out[3].dtype == np.float32
    assert not out[3][batch - pad:].any()  # Padding rows: nothing masked.
    c = _check_and_count(x, m, *out, mask_id=ids['[MASK]'], special=special)
    totals = {k: totals.get(k, 0) + v for k, v in c.items()}
  _assert_statistics(totals, 'JAX SOTU')


def test_jax_masking_in_jitted_step_is_deterministic(instances, ids, special):
  original, mask = _pad_stack(instances[:64])

  @jax.jit
  def step(key, input_ids, input_mask):
    key, sub = jax.random.split(key)
    masked, pos, lm_ids, w = pd.mask_tokens_jax(
        sub, input_ids, input_mask, vocab_size=30522, mask_id=ids['[MASK]'],
        special_ids=special, max_predictions_per_seq=P)
    return masked, pos, lm_ids, w

  a = step(jax.random.key(3), original, mask)
  b = step(jax.random.key(3), original, mask)
  c = step(jax.random.key(4), original, mask)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[1], c[1])
  with pytest.raises(ValueError, match='max_predictions_per_seq'):
    pd.mask_tokens_jax(jax.random.key(0), jnp.zeros((1, 8), jnp.int32),
                       jnp.ones((1, 8), jnp.int32), vocab_size=10, mask_id=3,
                       special_ids=(0,), max_predictions_per_seq=9)


def test_whole_word_masking(instances, masking, vocab, ids, special):
  ww = pd.MaskingConfig(**{**masking.__dict__, 'whole_word': True})
  cont = pd.continuation_mask(vocab)
  rng = np.random.default_rng(5)
  multi_piece_words = 0
  partial_without_ww = 0
  maskable_total = masked_total = 0
  for x in instances[:3000]:
    seq = x.input_ids
    maskable = _maskable(seq, special)
    # Word spans: a maskable piece plus the continuation pieces after it.
    starts = maskable & ~(cont[seq] & np.r_[False, maskable[:-1]])
    word = np.cumsum(starts)
    word[~maskable] = 0
    masked, pos, lm_ids, w = ww.mask(seq, rng)
    real = pos[w > 0]
    assert (np.diff(real) > 0).all() and maskable[real].all()
    np.testing.assert_array_equal(lm_ids[w > 0], seq[real])
    hit = set(word[real])
    for wd in hit:
      span = np.flatnonzero(word == wd)
      assert set(span) <= set(real), 'a word is masked in all its pieces'
      multi_piece_words += len(span) > 1
    assert len(real) <= min(P, max(1, round(0.15 * maskable.sum())))
    maskable_total += maskable.sum()
    masked_total += len(real)
    # Control: without whole-word, words do get split.
    _, pos2, _, w2 = masking.mask(seq, rng)
    real2 = set(pos2[w2 > 0])
    for wd in set(word[list(real2)]):
      span = set(np.flatnonzero(word == wd))
      partial_without_ww += not span <= real2
  assert multi_piece_words > 500
  assert partial_without_ww > 100
  assert abs(masked_total / maskable_total - 0.15) < 0.01


def test_whole_word_needs_continuation_table(special):
  with pytest.raises(ValueError, match='is_continuation'):
    pd.mask_tokens([101, 5, 6, 102], rng=np.random.default_rng(0),
                   vocab_size=200, mask_id=103, special_ids=special,
                   max_predictions_per_seq=2, whole_word=True)


def test_random_replacement_skips_specials():
  excluded = (0, 3, 4, 9)
  r = np.arange(10 - len(excluded))
  np.testing.assert_array_equal(pd._skip_excluded(r, excluded),
                                [1, 2, 5, 6, 7, 8])
  np.testing.assert_array_equal(
      np.asarray(pd._skip_excluded(jnp.asarray(r), excluded)),
      [1, 2, 5, 6, 7, 8])
  # With a tiny vocabulary, random replacements cover exactly the rest.
  seq = np.asarray([1] + [5] * 200 + [2], np.int32)
  seen = set()
  rng = np.random.default_rng(0)
  for _ in range(300):
    masked, pos, _, w = pd.mask_tokens(
        seq, rng=rng, vocab_size=8, mask_id=3, special_ids=(0, 1, 2),
        max_predictions_per_seq=40)
    seen |= set(masked[pos[w > 0]].tolist())
  assert seen == {3, 4, 5, 6, 7}  # [MASK], random in {4..7}, 5 unchanged.


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(
    seq=st.lists(st.integers(0, 49), min_size=0, max_size=40),
    p=st.integers(1, 12), seed=st.integers(0, 2**32 - 1),
    whole_word=st.booleans())
def test_mask_tokens_invariants(seq, p, seed, whole_word):
  special = (0, 1, 2, 3)  # PAD, CLS, SEP, MASK.
  cont = np.arange(50) >= 40
  ids = np.asarray([1, *seq, 2], np.int32)
  masked, pos, lm_ids, w = pd.mask_tokens(
      ids, rng=np.random.default_rng(seed), vocab_size=50, mask_id=3,
      special_ids=special, is_continuation=cont, max_predictions_per_seq=p,
      whole_word=whole_word)
  assert masked.shape == ids.shape and pos.shape == lm_ids.shape == (p,)
  assert masked.dtype == pos.dtype == lm_ids.dtype == np.int32
  assert w.dtype == np.float32
  n = int((~np.isin(ids, special)).sum())
  k = int(w.sum())
  expected = min(p, max(1, round(0.15 * n))) if n else 0
  assert k == expected if not whole_word else k <= expected
  real = pos[:k]
  assert (w[:k] == 1).all() and (w[k:] == 0).all() and (pos[k:] == 0).all()
  assert (np.diff(real) > 0).all()
  assert not np.isin(ids[real], special).any()
  np.testing.assert_array_equal(lm_ids[:k], ids[real])
  untouched = np.ones(len(ids), bool)
  untouched[real] = False
  np.testing.assert_array_equal(masked[untouched], ids[untouched])


def test_no_maskable_tokens():
  masked, pos, lm_ids, w = pd.mask_tokens(
      [1, 2, 0, 0], rng=np.random.default_rng(0), vocab_size=10, mask_id=3,
      special_ids=(0, 1, 2), max_predictions_per_seq=3)
  assert not w.any() and not pos.any() and not lm_ids.any()
  np.testing.assert_array_equal(masked, [1, 2, 0, 0])


# --------------------------------------------------------------------------
# Features, shards, iterator.
# --------------------------------------------------------------------------


def test_to_features(instances, masking):
  x = min(instances[:200], key=lambda i: len(i.input_ids))
  f = pd.to_features(x, T)
  assert set(f) == {'input_ids', 'input_mask', 'segment_ids',
                    'next_sentence_label'}
  assert all(v.dtype == np.int32 for v in f.values())
  assert f['input_ids'].shape == f['input_mask'].shape == (T,)
  assert f['next_sentence_label'].shape == ()
  n = len(x.input_ids)
  np.testing.assert_array_equal(f['input_ids'][:n], x.input_ids)
  assert not f['input_ids'][n:].any() and not f['segment_ids'][n:].any()
  assert f['input_mask'].sum() == n and f['input_mask'][:n].all()
  assert int(f['next_sentence_label']) == int(x.is_random_next)
  g = pd.to_features(x, T, masking=masking, rng=np.random.default_rng(0))
  assert g['masked_lm_positions'].shape == (P,)
  assert g['masked_lm_ids'].dtype == np.int32
  assert g['masked_lm_weights'].dtype == np.float32
  with pytest.raises(ValueError):
    pd.to_features(x, n - 1)


@pytest.fixture(scope='module')
def features(instances, masking):
  rng = np.random.default_rng(2)
  return [pd.to_features(x, T, masking=masking, rng=rng)
          for x in instances[:203]]


def _same(a, b):
  return set(a) == set(b) and all(
      a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


def test_shards_round_trip(features, tmp_path):
  paths = pd.write_shards(iter(features), str(tmp_path), 4)
  assert len(paths) == 4 and paths[0].endswith('-00000-of-00004.array_record')
  back = list(pd.read_shards(str(tmp_path / '*.array_record')))
  # Example i is record i // 4 of shard i % 4; files are read in order.
  expected = [features[i] for s in range(4)
              for i in range(s, len(features), 4)]
  assert len(back) == len(features)
  assert all(_same(a, b) for a, b in zip(back, expected))
  # A directory works as the pattern too.
  assert len(list(pd.read_shards(str(tmp_path)))) == len(features)


@pytest.mark.parametrize('num_hosts', [2, 3])
def test_shards_per_host(features, tmp_path, num_hosts):
  # 4 files: 2 hosts split by file, 3 hosts by record index.
  pd.write_shards(iter(features), str(tmp_path), 4)
  key = lambda f: f['input_ids'].tobytes() + f['masked_lm_ids'].tobytes()
  parts = [[key(f) for f in pd.read_shards(str(tmp_path), h, num_hosts)]
           for h in range(num_hosts)]
  flat = [k for p in parts for k in p]
  assert sorted(flat) == sorted(key(f) for f in features)
  assert len(flat) == len(set(flat)) == len(features)
  assert max(map(len, parts)) - min(map(len, parts)) <= 2


def _take(it, n):
  return [next(it) for _ in range(n)]


def _batches_equal(xs, ys):
  return len(xs) == len(ys) and all(_same(a, b) for a, b in zip(xs, ys))


def test_iterator_in_memory_state_restore(features):
  make = lambda: pd.PretrainingIterator(features, batch_size=16, seed=11)
  it = make()
  assert it.steps_per_epoch == len(features) // 16
  first = _take(it, 17)  # Crosses the epoch boundary (12 steps/epoch).
  state = it.get_state()
  json.dumps(state)  # Checkpointable as plain JSON.
  assert state['epoch'] == 1 and state['step'] == 5
  cont = _take(it, 15)
  fresh = make()
  fresh.set_state(state)
  assert _batches_equal(_take(fresh, 15), cont)
  # Same seed, same stream; batch shapes.
  assert _batches_equal(_take(make(), 17), first)
  assert first[0]['input_ids'].shape == (16, T)
  assert first[0]['next_sentence_label'].shape == (16,)
  assert first[0]['masked_lm_positions'].shape == (16, P)
  # Each epoch visits distinct examples, and epochs are reshuffled.
  key = lambda b: [r.tobytes() for r in b['input_ids']]
  epoch0 = [k for b in first[:12] for k in key(b)]
  epoch1 = [k for b in first[12:] + cont[:7] for k in key(b)]
  assert len(set(epoch0)) == len(epoch0) == 12 * 16
  assert epoch0[:16] != epoch1[:16]
  # A different seed gives a different order.
  other = pd.PretrainingIterator(features, batch_size=16, seed=12)
  assert not _batches_equal(_take(other, 1), first[:1])


def test_iterator_hosts_share_the_global_batch(features):
  single = _take(pd.PretrainingIterator(features, batch_size=12, seed=3), 20)
  hosts = [_take(pd.PretrainingIterator(features, batch_size=12, seed=3,
                                        num_hosts=3, host_index=h), 20)
           for h in range(3)]
  for step in range(20):
    joined = {k: np.concatenate([hosts[h][step][k] for h in range(3)])
              for k in single[step]}
    assert _same(joined, single[step])
    assert hosts[0][step]['input_ids'].shape == (4, T)


def test_iterator_in_memory_state_resumes_on_another_host_count(features):
  """A position saved by host 0 of 3 continues on 1 host with the global
  batches the 3 hosts would have made together (checkpoints move between
  process counts)."""
  hosts = [pd.PretrainingIterator(features, batch_size=12, seed=3,
                                  num_hosts=3, host_index=h) for h in range(3)]
  for it in hosts:
    _take(it, 15)   # crosses an epoch boundary
  state = hosts[0].get_state()
  after = [_take(it, 5) for it in hosts]
  one = pd.PretrainingIterator(features, batch_size=12, seed=3)
  one.set_state(state)
  for step, batch in enumerate(_take(one, 5)):
    joined = {k: np.concatenate([after[h][step][k] for h in range(3)])
              for k in batch}
    assert _same(joined, batch)
  # What must match still does.
  with pytest.raises(ValueError, match='seed'):
    pd.PretrainingIterator(features, batch_size=12, seed=4).set_state(state)


def test_iterator_from_shards_state_restore(features, tmp_path):
  pd.write_shards(iter(features), str(tmp_path), 4)
  make = lambda h: pd.PretrainingIterator.from_shards(
      str(tmp_path), batch_size=8, seed=5, num_hosts=2, host_index=h)
  it = make(1)
  _take(it, 9)
  state = it.get_state()
  cont = _take(it, 20)
  fresh = make(1)
  fresh.set_state(state)
  assert _batches_equal(_take(fresh, 20), cont)
  assert cont[0]['input_ids'].shape == (4, T)
  # Host 0 sees other examples than host 1.
  k0 = {r.tobytes() for b in _take(make(0), 10) for r in b['input_ids']}
  k1 = {r.tobytes() for b in cont for r in b['input_ids']}
  assert not k0 & k1
  with pytest.raises(ValueError, match='host_index'):
    make(0).set_state(state)


def test_iterator_from_instances(instances, masking):
  make = lambda: pd.PretrainingIterator.from_instances(
      instances[:100], max_seq_length=T, batch_size=10, seed=2,
      masking=masking)
  a, b = _take(make(), 3), _take(make(), 3)
  assert _batches_equal(a, b)
  assert a[0]['masked_lm_weights'].shape == (10, P)
  with pytest.raises(ValueError, match='no batch'):
    pd.PretrainingIterator(instances[:3], batch_size=8, seed=0)


# --------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------


def test_command_line_small(tmp_path, vocab_path, capsys):
  corpus = tmp_path / 'corpus'
  corpus.mkdir()
  docs = list(corpora.load_documents('bbc', shard_index=0, num_shards=100))
  for i, d in enumerate(docs):
    (corpus / f'{i:03d}.txt').write_text('\n'.join(d), encoding='utf-8')
  out = tmp_path / 'out'
  report = pd.main([f'--corpus={corpus}', f'--vocab={vocab_path}',
                    f'--out={out}', '--max_seq_length=64',
                    '--max_predictions_per_seq=10', '--dupe_factor=2',
                    '--num_shards=3', '--layout=file', '--whole_word'])
  printed = json.loads(capsys.readouterr().out)
  assert printed['examples'] == report['examples'] > 50
  assert report['documents'] == len(docs)
  assert len(report['shards']) == 3
  back = list(pd.read_shards(str(out)))
  assert len(back) == report['examples']
  assert back[0]['input_ids'].shape == (64,)
  assert back[0]['masked_lm_positions'].shape == (10,)
  assert abs(report['masked_fraction_of_maskable'] - 0.15) < 0.02


@pytest.mark.slow
def test_command_line_sotu_full(tmp_path, vocab_path, ids, special, capsys):
  """The documented command on all of SOTU, whole-word, dupe_factor 5."""
  out = tmp_path / 'sotu'
  report = pd.main(['--corpus=sotu', f'--vocab={vocab_path}', f'--out={out}',
                    '--max_seq_length=128', '--dupe_factor=5',
                    '--num_shards=8', '--whole_word'])
  print(json.dumps({k: v for k, v in report.items() if k != 'shards'}))
  assert report['documents'] == 233
  assert report['examples'] > 90000
  assert abs(report['random_next_fraction'] - 0.5) <= 0.005
  assert abs(report['masked_fraction_of_maskable'] - 0.15) <= 0.005
  back = list(pd.read_shards(str(out), 3, 8))
  assert len(back) in (report['examples'] // 8, report['examples'] // 8 + 1)
  for f in back[:2000]:
    w = f['masked_lm_weights'] > 0
    pos = f['masked_lm_positions'][w]
    assert (np.diff(pos) > 0).all()
    assert not np.isin(f['masked_lm_ids'][w], np.asarray(special)).any()


@pytest.mark.slow
def test_jax_dynamic_masking_many_epochs(sotu_docs, ids, special, vocab):
  """Dynamic masks over 5 passes of SOTU (dupe 5): tighter tolerances."""
  inst = pd.create_nsp_instances(
      sotu_docs, max_seq_length=T, dupe_factor=5,
      rng=np.random.default_rng(9), cls_id=ids['[CLS]'], sep_id=ids['[SEP]'])
  original, mask = _pad_stack(inst)
  fn = jax.jit(functools.partial(
      pd.mask_tokens_jax, vocab_size=len(vocab), mask_id=ids['[MASK]'],
      special_ids=special, max_predictions_per_seq=P))
  batch = 4096
  n = len(original) // batch * batch
  totals = {}
  for start in range(0, n, batch):
    out = [np.asarray(o) for o in fn(jax.random.key(start),
                                     original[start:start + batch],
                                     mask[start:start + batch])]
    c = _check_and_count(original[start:start + batch],
                         mask[start:start + batch], *out,
                         mask_id=ids['[MASK]'], special=special)
    totals = {k: totals.get(k, 0) + v for k, v in c.items()}
  _assert_statistics(totals, f'JAX SOTU dupe 5 ({n} examples)')
  assert math.isclose(totals['masked'] / totals['maskable'], 0.15,
                      abs_tol=0.003)
