"""Tests of bert_jax.tasks.span_qa: windows, decoding, loss, a tiny run.

Windows and oracle decoding run on real Disfl-QA passages (the cached
registry copy) with short windows, so most passages span several windows.
The end-to-end run trains a tiny random BERT on a Disfl-QA subset written
as a SQuAD v2.0 JSON file, which also exercises the `squad` preset's path.
"""

import collections
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import metrics
from bert_jax import train
from bert_jax.data import datasets
from bert_jax.data import examples as ex
from bert_jax.data import readers
from bert_jax.tasks import finetune
from bert_jax.tasks import span_qa
from configs import finetune as finetune_configs
from tests import frozen_check

# Short windows: the question keeps 20 tokens, a window 64 - 20 - 3 = 41 or
# more passage tokens, advancing 24 at a time.
T, STRIDE, MAX_QUERY = 64, 24, 20


@pytest.fixture(scope='module')
def tokenizer():
  return finetune.tokenizer_for(finetune_configs.get_config('disfl_qa'))


@pytest.fixture(scope='module')
def dev():
  return datasets.load('disfl_qa', 'dev').examples


@pytest.fixture(scope='module')
def short_windows(tokenizer, dev):
  return span_qa.build_features(tokenizer, dev, max_seq_length=T,
                                doc_stride=STRIDE, max_query_length=MAX_QUERY)


def _oracle_logits(arrays):
  """Logits 10 at the labelled start/end of each window, 0 elsewhere."""
  f, t = arrays['input_ids'].shape
  start, end = np.zeros((f, t)), np.zeros((f, t))
  start[np.arange(f), arrays['start_positions']] = 10.0
  end[np.arange(f), arrays['end_positions']] = 10.0
  return start, end


# ---------------------------------------------------------------- windows
def test_window_starts():
  assert span_qa.window_starts(10, 4, 2) == [0, 2, 4, 6]
  # A stride longer than a window advances by the window: no token skipped.
  assert span_qa.window_starts(10, 4, 10) == [0, 4, 8]
  assert span_qa.window_starts(3, 4, 2) == [0]
  assert span_qa.window_starts(0, 4, 2) == [0]
  masks = span_qa.max_context_masks(10, [0, 2, 4, 6], 4)
  # Every token has its maximal context in exactly one window, and token 3
  # is best centred in the window starting at 2 (left 1, right 2 there).
  assert np.array_equal(np.sum([np.pad(m, (s, 10 - s - len(m)))
                                for s, m in zip([0, 2, 4, 6], masks)], 0),
                        np.ones(10))
  assert masks[1][1]


def test_windows_on_disfl_qa_passages(tokenizer, dev, short_windows):
  arrays, windows, stats = short_windows
  cls, sep = tokenizer.cls_id, tokenizer.sep_id
  per_example = collections.Counter(w.example_index for w in windows)
  assert len(per_example) == len(dev) == stats.examples
  assert sum(n >= 3 for n in per_example.values()) > len(dev) // 2
  # max_query_length=20 cuts some Disfl-QA questions (they run to ~36).
  assert stats.questions_truncated > 0
  assert stats.answers_without_tokens == 0
  checked = collections.Counter()
  previous = {}
  for f, w in enumerate(windows):
    e = dev[w.example_index]
    ids = arrays['input_ids'][f]
    n_tokens = w.passage_start + w.length + 1
    # [CLS] question [SEP] passage [SEP], then padding.
    assert ids[0] == cls and ids[w.passage_start - 1] == sep
    assert ids[n_tokens - 1] == sep and not ids[n_tokens:].any()
    assert w.passage_start <= MAX_QUERY + 2 and n_tokens <= T
    assert arrays['attention_mask'][f].sum() == n_tokens
    np.testing.assert_array_equal(
        arrays['token_type_ids'][f][:n_tokens],
        [0] * w.passage_start + [1] * (w.length + 1))
    allowed = np.flatnonzero(arrays['logit_mask'][f])
    np.testing.assert_array_equal(
        allowed, [0] + list(range(w.passage_start, n_tokens - 1)))
    # Consecutive windows of one passage start STRIDE tokens apart.
    if w.example_index in previous:
      p = previous[w.example_index]
      np.testing.assert_array_equal(p.offsets[STRIDE:], w.offsets[:p.length - STRIDE])
    previous[w.example_index] = w
    # The labels.
    s, t = arrays['start_positions'][f], arrays['end_positions'][f]
    if e.is_impossible:
      assert s == t == 0
      checked['impossible'] += 1
      continue
    text, a0 = e.answers[0]
    inside = w.length and w.offsets[0, 0] <= a0 and a0 + len(text) <= w.offsets[-1, 1]
    if not inside:
      assert s == t == 0, (e.guid, f)
      checked['outside'] += 1
      continue
    assert w.passage_start <= s <= t < n_tokens - 1
    c0 = w.offsets[s - w.passage_start, 0]
    c1 = w.offsets[t - w.passage_start, 1]
    span = e.context[c0:c1]
    assert metrics.normalize_answer(span) == metrics.normalize_answer(text), (
        e.guid, span, text)
    checked['inside'] += 1
  assert min(checked.values()) > 50, checked
  # Windows advancing by STRIDE hold whole every answer of at most
  # (window - STRIDE + 1) tokens; only longer answers may miss all windows.
  labelled = {w.example_index for f, w in enumerate(windows)
              if arrays['start_positions'][f] > 0}
  window = collections.Counter()
  for w in windows:
    window[w.example_index] = max(window[w.example_index], w.length)
  for i, e in enumerate(dev):
    if not e.is_impossible and i not in labelled:
      assert (len(tokenizer.tokenize(e.answers[0][0]))
              > window[i] - STRIDE + 1), e.guid
  assert len(labelled) >= sum(not e.is_impossible for e in dev) - 2


def test_windows_cover_every_passage_token_once_as_max_context(short_windows):
  _, windows, _ = short_windows
  by_example = collections.defaultdict(list)
  for w in windows:
    by_example[w.example_index].append(w)
  for ws in by_example.values():
    all_offsets = np.concatenate([w.offsets for w in ws])
    owners = np.concatenate([w.offsets[w.max_context] for w in ws])
    unique = np.unique(all_offsets, axis=0)
    # max_context picks each distinct passage token exactly once.
    assert len(owners) == len(unique)
    np.testing.assert_array_equal(np.unique(owners, axis=0), unique)


def test_question_too_long_for_the_window_is_an_error(tokenizer, dev):
  with pytest.raises(ValueError, match='no room for the passage'):
    span_qa.build_features(tokenizer, dev[:3], max_seq_length=20,
                           doc_stride=8, max_query_length=64)


# ---------------------------------------------------------------- decoding
CONTEXT = 'alpha beta gamma delta epsilon zeta'
EXAMPLE = ex.QAExample('q', 'which?', CONTEXT, (('gamma delta', 11),), False)


def _words(context, first, last):
  """Offsets of the whitespace words first..last of `context`."""
  spans, pos = [], 0
  for word in context.split(' '):
    spans.append((pos, pos + len(word)))
    pos += len(word) + 1
  return np.asarray(spans[first:last + 1], np.int32)


def _window(first, last, passage_start=3, example_index=0, max_context=None):
  offsets = _words(CONTEXT, first, last)
  mc = np.ones(len(offsets), bool) if max_context is None else max_context
  return span_qa.Window(example_index, passage_start, offsets, mc)


def _logits(window, starts, ends, null=(0.0, 0.0), t=12):
  """Row logits: passage token k at position passage_start + k."""
  s, e = np.full(t, -20.0), np.full(t, -20.0)
  s[0], e[0] = null
  for k, v in starts.items():
    s[window.passage_start + k] = v
  for k, v in ends.items():
    e[window.passage_start + k] = v
  return s, e


def _decode(windows, rows, **kw):
  start = np.stack([r[0] for r in rows])
  end = np.stack([r[1] for r in rows])
  return span_qa.decode(start, end, windows, [EXAMPLE], **kw)['q']


def test_decode_picks_the_best_valid_span():
  w = _window(0, 5)
  # The best end (token 0) precedes the best start (token 2): invalid; the
  # best valid pair is (2, 3) = 'gamma delta', score 5 + 4.
  row = _logits(w, {2: 5.0, 4: 1.0}, {0: 6.0, 3: 4.0, 5: 0.5})
  d = _decode([w], [row], n_best_size=5)
  assert d.text == 'gamma delta'
  assert d.nbest[0] == ('gamma delta', 9.0)
  # A backwards pair would slice to '' (or garbage) from the context.
  assert all(text and text in CONTEXT for text, _ in d.nbest)
  # With only the top start (2) and end (0), no valid span exists.
  d1 = _decode([w], [row], n_best_size=1)
  assert d1.best_span == '' and d1.nbest == []
  # Scores are sorted and texts distinct.
  scores = [s for _, s in d.nbest]
  assert scores == sorted(scores, reverse=True)
  assert len({t for t, _ in d.nbest}) == len(d.nbest)


def test_decode_respects_max_answer_length_and_n_best():
  w = _window(0, 5)
  row = _logits(w, {0: 5.0, 3: 1.0}, {4: 5.0, 3: 1.5})
  assert _decode([w], [row]).text == 'alpha beta gamma delta epsilon'
  # 5 tokens too long: the best pair of at most 2 tokens is (3, 4), 1 + 5.
  d = _decode([w], [row], max_answer_length=2)
  assert d.text == 'delta epsilon'
  assert all(len(t.split()) <= 2 for t, _ in d.nbest)
  # n_best_size=1 keeps only the top start (0) and end (4) per window.
  d = _decode([w], [row], n_best_size=1, max_answer_length=2)
  assert d.text == '' and d.nbest == [] and d.null_score_diff == np.inf


def test_null_threshold():
  w = _window(0, 5)
  row = _logits(w, {1: 1.0}, {2: 1.0}, null=(1.5, 1.5))   # null 3 vs span 2
  v1 = _decode([w], [row])
  assert v1.text == 'beta gamma' and v1.null_score_diff == pytest.approx(1.0)
  assert _decode([w], [row], version_2_with_negative=True).text == ''
  assert _decode([w], [row], version_2_with_negative=True,
                 null_score_diff_threshold=1.5).text == 'beta gamma'
  # The boundary: '' only when the difference exceeds the threshold.
  assert _decode([w], [row], version_2_with_negative=True,
                 null_score_diff_threshold=1.0).text == 'beta gamma'


def test_best_span_and_null_across_windows():
  a, b = _window(0, 3), _window(2, 5)
  # Window a: 'beta' scores 4; window b: 'epsilon zeta' scores 6.
  row_a = _logits(a, {1: 2.0}, {1: 2.0}, null=(4.0, 4.0))
  row_b = _logits(b, {2: 3.0}, {3: 3.0}, null=(1.0, 1.0))
  d = _decode([a, b], [row_a, row_b], version_2_with_negative=True)
  assert d.text == 'epsilon zeta'
  # Null score = min over windows (2, from b), not the first window's 8.
  assert d.null_score_diff == pytest.approx(2.0 - 6.0)
  # A start outside its maximal context is not a candidate.
  b_no_mc = _window(2, 5, max_context=np.array([True, True, False, True]))
  d = _decode([a, b_no_mc], [row_a, row_b], version_2_with_negative=True,
              null_score_diff_threshold=10.0)
  assert d.text == 'beta'
  d = _decode([a, b_no_mc], [row_a, row_b], require_max_context=False)
  assert d.text == 'epsilon zeta'


def test_best_threshold():
  gold = {'a': ['x'], 'b': [], 'c': [], 'd': ['v'], 'e': ['u']}
  dec = {'a': span_qa.Decoded('x', 'x', -1.0, []),      # answer
         'b': span_qa.Decoded('', 'y', 2.0, []),        # abstain
         'c': span_qa.Decoded('', 'w', 3.0, []),        # abstain
         'd': span_qa.Decoded('', 'v', 0.5, []),        # answer
         'e': span_qa.Decoded('', 'u v', 2.0, [])}      # tie with b
  best = span_qa.best_threshold(dec, gold)
  # Answering a, d (threshold in [0.5, 2)) is right on 4 of 5; e (F1 2/3)
  # cannot be answered without b, which shares its diff.
  assert best['best_exact'] == pytest.approx(80.0)
  assert best['best_f1'] == pytest.approx(80.0)
  assert 0.5 <= best['best_f1_thresh'] < 2.0
  thr = best['best_f1_thresh']
  preds = {g: ('' if d.null_score_diff > thr else d.best_span)
           for g, d in dec.items()}
  assert metrics.squad_scores(preds, gold)['f1'] == pytest.approx(80.0)


def test_oracle_logits_decode_to_gold(tokenizer, dev, short_windows):
  gold = span_qa.gold_answers(dev)
  # The preset's windows, with the default decoding.
  arrays, windows, _ = span_qa.build_features(
      tokenizer, dev, max_seq_length=256, doc_stride=128, max_query_length=64)
  start, end = _oracle_logits(arrays)
  dec = span_qa.decode(start, end, windows, dev, max_answer_length=256,
                       version_2_with_negative=True)
  scores = metrics.squad_scores({g: d.text for g, d in dec.items()}, gold)
  assert scores['has_ans_total'] > 50 and scores['no_ans_total'] > 10
  assert scores['has_ans_exact'] == 100.0 and scores['no_ans_exact'] == 100.0
  # Short windows: an answer can straddle the window where its start has
  # most context, so keep every window's spans. Every question with a
  # labelled window decodes to its gold (one long answer fits no window).
  arrays, windows, _ = short_windows
  start, end = _oracle_logits(arrays)
  dec = span_qa.decode(start, end, windows, dev, max_answer_length=T,
                       version_2_with_negative=True, require_max_context=False)
  labelled = {dev[w.example_index].guid for f, w in enumerate(windows)
              if arrays['start_positions'][f] > 0}
  kept = {g: a for g, a in gold.items() if a == [] or g in labelled}
  assert len(kept) == len(gold) - 1
  scores = metrics.squad_scores({g: dec[g].text for g in kept}, kept)
  assert scores['exact_match'] == 100.0


# ---------------------------------------------------------------- baselines
def test_baselines():
  examples = [
      ex.QAExample('1', 'q?', 'Paris is the capital. It is big.',
                   (('Paris is the capital.', 0),)),
      ex.QAExample('2', 'q?', 'Rome is old! Very old.', (('old', 8),)),
      ex.QAExample('3', 'q?', 'No answer here. Really.', (), True),
      ex.QAExample('4', 'q?', 'No sentence end', (), True),
  ]
  empty = span_qa.empty_answer_baseline(examples)
  assert empty['exact_match'] == 50.0 and empty['has_ans_exact'] == 0.0
  assert empty['no_ans_exact'] == 100.0
  assert span_qa.first_sentence('Rome is old! Very old.') == 'Rome is old!'
  assert span_qa.first_sentence('Pi is 3.14 today. Yes.') == 'Pi is 3.14 today.'
  first = span_qa.first_sentence_baseline(examples)
  # 1: exact; 2: 'rome is old' vs 'old' F1 = 2 * (1/3) * 1 / (4/3) = 0.5;
  # 3, 4: a non-empty prediction on an unanswerable question scores 0.
  assert first['has_ans_exact'] == 50.0
  assert first['has_ans_f1'] == pytest.approx(75.0)
  assert first['no_ans_f1'] == 0.0
  assert first['f1'] == pytest.approx(37.5)


# ---------------------------------------------------------------- loss/config
def _config(**loss):
  c = finetune_configs.get_config('disfl_qa')
  c.loss = finetune_configs.loss_config(**loss)
  return c


def test_loss_choice():
  spec = span_qa.qa_loss_spec(_config(name='ce'), T)
  logits = jnp.zeros((2, T))
  loss, _ = spec(logits, jnp.array([0, 5]), weights=jnp.ones(2))
  assert loss == pytest.approx(np.log(T), rel=1e-5)
  for name in ('class_balanced_ce', 'logit_adjusted_ce'):
    with pytest.raises(ValueError, match='token positions'):
      span_qa.qa_loss_spec(_config(name=name), T)
  with pytest.raises(ValueError, match='token positions'):
    span_qa.qa_loss_spec(_config(name='focal', alpha='inverse_freq'), T)
  with pytest.raises(ValueError, match='softmax loss'):
    span_qa.qa_loss_spec(_config(name='bce'), T)


def test_presets():
  c = finetune_configs.get_config('disfl_qa')
  assert (c.task, c.data.train, c.data.max_seq_length, c.data.doc_stride,
          c.data.version_2_with_negative, c.model.init_from, c.best_metric) == (
              'span_qa', 'disfl_qa', 256, 128, True, 'minilm', 'f1')
  s = finetune_configs.get_config('squad')
  assert s.task == 'span_qa' and not s.data.version_2_with_negative
  with pytest.raises(ValueError, match='SQuAD JSON'):
    span_qa.SpanQATask(s)
  # Positions have no class prior: post-hoc logit adjustment is refused
  # before any data is read.
  c.eval_logit_adjustment_tau = 1.0
  with pytest.raises(ValueError, match='eval_logit_adjustment_tau.*positions'):
    span_qa.SpanQATask(c)


# ---------------------------------------------------------------- task
def _squad_json(path, examples):
  """Writes `examples` as SQuAD v2.0 JSON, one paragraph per context."""
  paragraphs = collections.OrderedDict()
  for e in examples:
    paragraphs.setdefault(e.context, []).append(dict(
        id=e.guid, question=e.question, is_impossible=e.is_impossible,
        answers=[dict(text=t, answer_start=s) for t, s in e.answers]))
  doc = dict(version='v2.0', data=[dict(title='disfl_qa', paragraphs=[
      dict(context=c, qas=q) for c, q in paragraphs.items()])])
  path.write_text(json.dumps(doc))
  return str(path)


@pytest.fixture(scope='module')
def squad_files(tmp_path_factory):
  d = tmp_path_factory.mktemp('squad')
  train_ds = datasets.load('disfl_qa', 'train').examples
  return (_squad_json(d / 'train.json', train_ds[:96]),
          _squad_json(d / 'dev.json', datasets.load('disfl_qa', 'dev').examples[:24]))


def tiny_config(train_path, eval_path, **loss):
  c = finetune_configs.get_config('squad')
  c.data.update(train=train_path, eval=eval_path, vocab='minilm',
                max_seq_length=96, doc_stride=48, max_query_length=24,
                version_2_with_negative=True)
  c.model.update(init_from='', hidden_size=32, num_hidden_layers=2,
                 num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=96)
  c.loss = finetune_configs.loss_config(**(loss or dict(name='ce')))
  c.batch_size, c.eval_batch_size = 16, 32
  c.num_epochs, c.total_steps = 0.0, 30
  c.log_every, c.checkpoint_every = 5, 1000
  c.optim.update(lr=2e-3, warmup_fraction=None, warmup_steps=3)
  return c


def test_reader_rejects_mismatched_answer_start(tmp_path):
  e = ex.QAExample('x', 'q?', 'the cat sat', (('cat', 4),))
  path = _squad_json(tmp_path / 'bad.json', [e])
  doc = json.loads(pathlib.Path(path).read_text())
  doc['data'][0]['paragraphs'][0]['qas'][0]['answers'][0]['answer_start'] = 3
  pathlib.Path(path).write_text(json.dumps(doc))
  with pytest.raises(readers.DataError, match='not at offset 3'):
    datasets.load(path, 'train')


def test_v1_mode_refuses_unanswerable_questions(squad_files):
  c = tiny_config(*squad_files)
  c.data.version_2_with_negative = False
  with pytest.raises(ValueError, match='version_2_with_negative'):
    span_qa.SpanQATask(c)


def test_ghm_keeps_a_state_per_head(squad_files):
  task = span_qa.SpanQATask(tiny_config(*squad_files, name='ghm'))
  state = task.init_loss_state()
  assert set(state) == {'start', 'end'}
  batch = next(task.train_iterator(4, 0, 1, 0))
  # Jitted: op-by-op dispatch of even a tiny BERT is slow on CPU.
  params = jax.jit(task.init_params)(jax.random.PRNGKey(0), batch)
  loss, (m, new) = jax.jit(task.train_loss)(params, batch,
                                            jax.random.PRNGKey(1), state)
  assert np.isfinite(loss) and set(m) == {'start_accuracy', 'end_accuracy'}
  for head in ('start', 'end'):
    assert int(new[head]['updates'].sum()) > 0


def test_summarize_eval_maps_shuffled_and_padded_outputs(squad_files):
  task = span_qa.SpanQATask(tiny_config(*squad_files))
  feats = task.eval_features
  start, end = _oracle_logits(feats)
  order = np.random.default_rng(0).permutation(len(start))
  pad = 5   # padding rows (weight 0) carrying junk logits
  outputs = dict(
      start_logits=np.concatenate([start[order], np.full((pad, start.shape[1]), 99.0)]),
      end_logits=np.concatenate([end[order], np.full((pad, start.shape[1]), 99.0)]),
      feature_index=np.concatenate([order, np.zeros(pad, int)]),
      weights=np.concatenate([np.ones(len(order)), np.zeros(pad)]))
  task.config.max_answer_length = 96
  out = task.summarize_eval({'ce_loss': 1.0}, outputs)
  assert out['exact_match'] == 100.0 and out['best_f1'] == 100.0
  rows = out['_predictions']
  assert [r['guid'] for r in rows] == [e.guid for e in task.eval_ds.examples]
  assert set(rows[0]) == {'guid', 'question', 'prediction', 'gold'}
  assert 'EM 100.00' in out['report']


def test_the_span_head_reads_cached_encoder_outputs(squad_files):
  config = tiny_config(*squad_files)
  config.model.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
  frozen_check.assert_cache_replays(span_qa.SpanQATask(config))


def test_tiny_run_loss_falls(squad_files, tmp_path, capsys):
  config = tiny_config(*squad_files)
  results = train.run(config, tmp_path / 'run')
  losses = [h['loss'] for h in results['train_history'] if 'loss' in h]
  assert len(losses) == 6
  assert losses[-1] < 0.8 * losses[0], losses
  final = json.loads((tmp_path / 'run' / 'results.json').read_text())['final_eval']
  for key in ('exact_match', 'f1', 'has_ans_f1', 'no_ans_f1', 'best_f1'):
    assert 0.0 <= final[key] <= 100.0
  rows = [json.loads(l) for l in
          (tmp_path / 'run' / 'predictions.jsonl').read_text().splitlines()]
  assert len(rows) == 24
  assert 'span QA (SQuAD v2.0)' in capsys.readouterr().out
  print('tiny run losses', losses, 'EM/F1', final['exact_match'], final['f1'])
