"""Token tagging task: sub-token alignment, word-level reconstruction, span
metrics, bad input, and tiny end-to-end runs through `train.run`.

The runs use a random-init 2-layer BERT (hidden 32) on a few dozen real
sentences, so they check plumbing and that the loss falls, not accuracy.
"""

import json
import types

import ml_collections
import numpy as np
import pytest

from bert_jax import metrics as metrics_lib
from bert_jax import tokenization
from bert_jax import train
from bert_jax.data import datasets
from bert_jax.data import examples as ex
from bert_jax.data import registry
from bert_jax.data import sampling
from bert_jax.tasks import finetune
from bert_jax.tasks import tagging
from configs import finetune as finetune_configs


@pytest.fixture(scope='module')
def minilm_tok():
  return tokenization.BertTokenizer.from_pretrained_dir(
      registry.fetch('minilm'))


@pytest.fixture(scope='module')
def chinese_tok():
  return tokenization.BertTokenizer.from_vocab(
      registry.fetch('bert_chinese_vocab') / 'vocab.txt')


def tiny_config(preset, **data):
  """A preset shrunk to a random-init 2-layer BERT on a few sentences."""
  c = finetune_configs.get_config(preset)
  c.model.init_from = ''
  if not c.data.vocab:
    c.data.vocab = 'minilm'
  c.model.update(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=64, max_position_embeddings=64,
                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
  c.data.update(dict(max_seq_length=48, max_train_examples=64,
                     max_eval_examples=32), **data)
  c.batch_size, c.eval_batch_size = 8, 16
  c.total_steps, c.log_every, c.checkpoint_every = 40, 5, 1000
  c.optim.update(lr=3e-3, warmup_fraction=0.05)
  return c


def expected_first_positions(tokenizer, words, max_seq_length):
  """Reference alignment from tokenising each word on its own: the position
  of each word's first piece after [CLS], -1 if cut off or piece-less."""
  out, pos = [], 1
  for w in words:
    n = len(tokenizer.tokenize(w))
    out.append(pos if n and pos < max_seq_length - 1 else -1)
    pos += n
  return np.asarray(out), pos - 1   # and the number of body pieces


def check_alignment(tokenizer, exs, tag_index, max_seq_length):
  feats, first, stats = tagging.encode_tagging(tokenizer, exs, tag_index,
                                               max_seq_length)
  truncated_words = truncated_sentences = 0
  for i, e in enumerate(exs):
    want, n_pieces = expected_first_positions(tokenizer, e.words,
                                              max_seq_length)
    np.testing.assert_array_equal(first[i], want, err_msg=e.guid)
    kept = want[want >= 0]
    # Weight 1 exactly on the first pieces of kept words; 0 on continuation
    # pieces, [CLS], [SEP] and padding.
    w = np.zeros(max_seq_length, np.float32)
    w[kept] = 1
    np.testing.assert_array_equal(feats['label_weights'][i], w, err_msg=e.guid)
    labels = np.zeros(max_seq_length, np.int32)
    labels[kept] = [tag_index[t] for t, p in zip(e.tags, want) if p >= 0]
    np.testing.assert_array_equal(feats['labels'][i], labels, err_msg=e.guid)
    # The first piece is the word's own first piece (not a '##' piece).
    for word, p in zip(e.words, want):
      if p >= 0:
        assert feats['input_ids'][i, p] == tokenizer.token_to_id(
            tokenizer.tokenize(word)[0])
    length = min(n_pieces, max_seq_length - 2) + 2
    assert feats['attention_mask'][i].sum() == length
    assert feats['input_ids'][i, 0] == tokenizer.cls_id
    assert feats['input_ids'][i, length - 1] == tokenizer.sep_id
    truncated_sentences += n_pieces > max_seq_length - 2
    truncated_words += sum(
        1 for word, p in zip(e.words, want)
        if p < 0 and tokenizer.tokenize(word))
  assert stats['truncated_sentences'] == truncated_sentences
  assert stats['truncated_words'] == truncated_words
  return feats, first, stats


def test_hand_example_labels_first_piece_only(minilm_tok):
  words = ['Johanson', 'visited', 'Hamburg-Altona', 'yesterday', '.']
  tags = ['B-PER', 'O', 'B-LOC', 'O', 'O']
  e = ex.TaggingExample('hand-1', words, tags)
  index = {'O': 0, 'B-PER': 1, 'I-PER': 2, 'B-LOC': 3, 'I-LOC': 4}
  feats, first, _ = tagging.encode_tagging(minilm_tok, [e], index, 16)
  pieces = [minilm_tok.tokenize(w) for w in words]
  assert len(pieces[0]) > 1 and len(pieces[2]) >= 3   # multi-piece words
  # [CLS] johan ##son visited hamburg - alto ##na yesterday . [SEP]
  starts = 1 + np.cumsum([0] + [len(p) for p in pieces[:-1]])
  np.testing.assert_array_equal(first[0], starts)
  assert np.flatnonzero(feats['label_weights'][0]).tolist() == starts.tolist()
  assert feats['labels'][0, starts].tolist() == [1, 0, 3, 0, 0]
  # Continuation pieces of 'Hamburg-Altona' carry no label and no weight.
  rest = np.arange(starts[2] + 1, starts[3])
  assert rest.size >= 2 and not feats['label_weights'][0, rest].any()
  assert not feats['labels'][0, rest].any()


def test_real_conll_and_msra_alignment(minilm_tok, chinese_tok):
  conll = datasets.load('conll_sample', 'train')
  index = {t: i for i, t in enumerate(conll.label_names)}
  _, _, stats = check_alignment(minilm_tok, conll.examples[:60], index, 64)
  assert stats['truncated_sentences'] > 0   # the cut is exercised too
  check_alignment(minilm_tok, conll.examples[:60], index, 256)
  msra = datasets.load('msra_ner', 'train')
  index = {t: i for i, t in enumerate(msra.label_names)}
  some = msra.examples[:40] + msra.examples[-40:]
  _, _, stats = check_alignment(chinese_tok, some, index, 64)
  assert stats['truncated_sentences'] > 0
  # Every MSRA character is one piece ([UNK] for 170 rare ones), so there the
  # alignment is one label per non-special position.
  feats, _, _ = tagging.encode_tagging(chinese_tok, some, index, 128)
  np.testing.assert_array_equal(feats['label_weights'].sum(1),
                                [len(e.words) for e in some])


def one_hot_outputs(task, scale=10.0):
  """Eval outputs whose logits predict every sub-token's gold label."""
  f = task.eval_features
  logits = np.eye(len(task.tag_names), dtype=np.float32)[f['labels']] * scale
  return dict(logits=logits, weights=f['weights'],
              example_index=f['example_index'])


@pytest.mark.parametrize('preset', ['conll_sample', 'msra_ner'])
def test_gold_logits_reconstruct_gold_tags(preset):
  task = tagging.TaggingTask(tiny_config(preset, max_seq_length=256,
                                         max_eval_examples=80))
  assert task.scheme == {'conll_sample': 'IOB2', 'msra_ner': 'BMES'}[preset]
  assert task.stats['eval']['truncated_words'] == 0
  out = task.summarize_eval({'ce_loss': 0.0, 'accuracy': 1.0},
                            one_hot_outputs(task))
  rows = out['_predictions']
  assert [r['guid'] for r in rows] == [e.guid for e in task.eval_ds.examples]
  assert all(r['pred'] == r['gold'] == list(e.tags)
             for r, e in zip(rows, task.eval_ds.examples))
  assert out['span_f1'] == out['span_precision'] == out['span_recall'] == 1.0
  assert out['token_accuracy'] == 1.0
  assert out['num_gold_spans'] > 0
  assert all(out[f'f1/{k}'] == 1.0 for k in out['per_type'])
  assert 'micro avg' in out['report']


def test_rows_out_of_order_and_padding_rows():
  task = tagging.TaggingTask(tiny_config('conll_sample', max_seq_length=256))
  outputs = one_hot_outputs(task)
  # Shuffled rows plus weight-0 padding rows (as the trainer pads batches).
  order = np.random.default_rng(0).permutation(len(outputs['weights']))
  shuffled = {k: v[order] for k, v in outputs.items()}
  pad = {k: np.zeros_like(v[:3]) for k, v in outputs.items()}
  merged = {k: np.concatenate([shuffled[k], pad[k]]) for k in outputs}
  out = task.summarize_eval({'ce_loss': 0.0, 'accuracy': 1.0}, merged)
  assert out['span_f1'] == 1.0 and out['token_accuracy'] == 1.0


def test_truncated_words_are_predicted_O():
  task = tagging.TaggingTask(tiny_config('conll_sample', max_seq_length=16))
  stats = task.stats['eval']
  assert stats['truncated_sentences'] > 0 and stats['truncated_words'] > 0
  out = task.summarize_eval({'ce_loss': 0.0, 'accuracy': 1.0},
                            one_hot_outputs(task))
  cut = 0
  for row, first in zip(out['_predictions'], task.eval_first):
    for g, p, pos in zip(row['gold'], row['pred'], first):
      assert p == (g if pos >= 0 else 'O')
      cut += pos < 0
  assert cut == stats['truncated_words'] == out['truncated_words']
  assert out['truncated_sentences'] == stats['truncated_sentences']
  assert out['span_f1'] < 1.0          # entities past the cut are missed
  assert 'cut off' in out['report']


def test_gold_probs_are_the_gold_tags_softmax_at_each_first_piece():
  """Each eval row's `gold_probs` (the tune report's histogram): per word,
  softmax(logits at its first sub-token)[gold tag]; None for a cut word.
  Checked on random logits, with rows shuffled as the trainer gathers them."""
  task = tagging.TaggingTask(tiny_config('conll_sample', max_seq_length=16))
  f = task.eval_features
  rng = np.random.default_rng(0)
  logits = 3 * rng.normal(size=f['labels'].shape + (len(task.tag_names),))
  outputs = dict(logits=logits.astype(np.float32), weights=f['weights'],
                 example_index=f['example_index'])
  order = rng.permutation(len(logits))
  shuffled = {k: v[order] for k, v in outputs.items()}
  # A weight-0 padding row that repeats example 0 with other logits, after
  # the real one (as the trainer pads the last batch): it must be ignored.
  pad = dict(logits=shuffled['logits'][:1] + 5, weights=np.zeros(1, np.float32),
             example_index=np.zeros(1, f['example_index'].dtype))
  out = task.summarize_eval({'ce_loss': 0.0, 'accuracy': 0.0}, {
      k: np.concatenate([shuffled[k], pad[k].astype(shuffled[k].dtype)])
      for k in outputs})
  row_of = {int(i): r for r, i in enumerate(f['example_index'])
            if f['weights'][r] > 0}
  cut = 0
  for i, (row, e) in enumerate(zip(out['_predictions'], task.eval_ds.examples)):
    z = logits[row_of[i]]
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    first = task.eval_first[i]
    assert len(row['gold_probs']) == len(e.words)
    for w, (pos, tag) in enumerate(zip(first, e.tags)):
      if pos < 0:
        assert row['gold_probs'][w] is None
        cut += 1
      else:
        assert row['gold_probs'][w] == pytest.approx(
            p[pos, task.tag_names.index(tag)], abs=1e-6)
  assert cut == task.stats['eval']['truncated_words'] > 0


def test_a_crf_run_records_no_gold_probs():
  """A CRF's emissions are not probabilities: no `gold_probs` in its rows."""
  c = tiny_config('conll_sample', max_seq_length=24, max_eval_examples=8)
  c.crf = True
  task = tagging.TaggingTask(c)
  f = task.eval_features
  outputs = dict(one_hot_outputs(task), crf_tags=f['word_labels'])
  rows = task.summarize_eval({'ce_loss': 0.0, 'accuracy': 1.0},
                             outputs)['_predictions']
  assert rows and all('gold_probs' not in r for r in rows)


def test_posthoc_logit_adjustment_per_token():
  """adjusted_* metrics and adjusted_pred come from argmax(z - tau log pi)
  per token, pi the training tag frequencies (a NumPy reference)."""
  c = tiny_config('conll_sample', max_seq_length=256)
  plain = tagging.TaggingTask(c)
  rng = np.random.default_rng(0)
  outputs = one_hot_outputs(plain, scale=1.0)
  outputs['logits'] = outputs['logits'] + rng.normal(
      0, 0.7, outputs['logits'].shape).astype(np.float32)
  raw = plain.summarize_eval({'ce_loss': 0.0, 'accuracy': 1.0}, outputs)
  assert not any(k.startswith('adjusted_') for k in raw)
  assert 'adjusted_pred' not in raw['_predictions'][0]

  c.eval_logit_adjustment_tau = 1.0
  task = tagging.TaggingTask(c)
  out = task.summarize_eval({'ce_loss': 0.0, 'accuracy': 1.0}, outputs)
  counts = np.asarray(task.class_counts, np.float64)
  ref_logits = outputs['logits'] - np.log(counts / counts.sum())
  ref = [tagging.word_tags(task.eval_first[i], np.argmax(ref_logits[i], -1),
                           task.tag_names)
         for i in range(len(task.eval_ds))]
  rows = out['_predictions']
  assert [r['adjusted_pred'] for r in rows] == ref
  # The unadjusted metrics are those of the plain run.
  assert out['span_f1'] == raw['span_f1']
  assert [r['pred'] for r in rows] == [r['pred'] for r in raw['_predictions']]
  gold = [r['gold'] for r in rows]
  want = metrics_lib.span_f1(gold, ref, 'IOB2')
  assert out['adjusted_span_f1'] == want['micro_f1']
  assert out['adjusted_span_recall'] == want['micro_recall']
  # 'O', the most frequent tag, gains least from -tau log pi: a token can
  # only move away from it (and some do, or this test would not notice).
  count_o = lambda tags: sum(t == 'O' for s in tags for t in s)
  assert count_o(ref) < count_o([r['pred'] for r in rows])


def test_posthoc_tau_is_checked_before_training(tmp_path):
  c = tiny_config('conll_sample')
  c.eval_logit_adjustment_tau = -1.0
  with pytest.raises(ValueError, match=r'config\.eval_logit_adjustment_tau=-1'):
    tagging.TaggingTask(c)
  for bad in (float('nan'), float('inf')):
    c.eval_logit_adjustment_tau = bad
    with pytest.raises(ValueError, match='must be a finite number'):
      tagging.TaggingTask(c)


def test_posthoc_never_predicts_the_O_the_task_added(tmp_path):
  # No 'O' in this tag set: the task adds one for cut-off words. It is never
  # a training target, so it has no prior; the adjusted logits never pick it
  # and adjust the real tags by their training counts (2 B-PER, 1 I-PER).
  train_file = write_conll(tmp_path / 'train.conll', [
      [('John', 'B-PER'), ('Smith', 'I-PER')], [('Mary', 'B-PER')]])
  c = tiny_config('conll_sample', train=train_file, eval=train_file)
  c.eval_logit_adjustment_tau = 1.0
  task = tagging.TaggingTask(c)
  assert task.tag_names == ['B-PER', 'I-PER', 'O']
  assert task.class_counts == [2, 1, 0]
  logits = np.random.default_rng(0).normal(size=(4, 6, 3)).astype(np.float32)
  logits[..., 2] += 10.0            # 'O' would win every raw argmax
  adjusted = task.adjusted_logits(logits)
  assert (adjusted.argmax(-1) != 2).all()
  log_prior = np.log(np.array([2.0, 1.0]) / 3.0)
  np.testing.assert_allclose(adjusted[..., :2], logits[..., :2] - log_prior,
                             rtol=1e-6)


def test_word_tags_cut_words_are_O_whatever_its_id():
  # 'O' is not class 0 here (local files sort their tags).
  names = ['B-LOC', 'I-LOC', 'O']
  got = tagging.word_tags(np.array([1, -1, 3]), np.array([2, 0, 2, 1]), names)
  assert got == ['B-LOC', 'O', 'I-LOC']


def test_scheme_inference_and_validation():
  assert tagging.infer_scheme(['O', 'B-X', 'I-X']) == 'IOB2'
  assert tagging.infer_scheme(['O', 'B-X']) == 'IOB2'
  assert tagging.infer_scheme(['O', 'B-X', 'I-X', 'E-X', 'S-X']) == 'BIOES'
  assert tagging.infer_scheme(['O', 'B-X', 'M-X', 'E-X', 'S-X']) == 'BMES'
  assert tagging.infer_scheme(['B', 'M', 'E', 'S']) == 'seg_BMES'
  assert tagging.infer_scheme(['B', 'I', 'E', 'S']) == 'seg_BIES'
  assert tagging.infer_scheme(['B', 'I']) == 'seg_BIO'
  assert tagging.infer_scheme(['NN', 'VBZ', 'DT', ',']) == 'none'
  assert tagging.infer_scheme(['O', 'NN', 'VB']) == 'none'
  # Ambiguous: nothing tells BMES from BIES / BIOES.
  for tags, fits in ((['B', 'E', 'S'], 'seg_BMES and seg_BIES'),
                     (['O', 'B-X', 'E-X', 'S-X'], 'BMES and BIOES')):
    with pytest.raises(ValueError, match=f'fits both {fits}.*one of auto'):
      tagging.infer_scheme(tags)
  # Inconsistent sets name the tags.
  with pytest.raises(ValueError, match=r"mixes scheme tags \['B-X'\] with "
                     r"other labels \['NN'\]"):
    tagging.infer_scheme(['B-X', 'NN', 'O'])
  with pytest.raises(ValueError, match=r"mixes bare tags \['B'\] with typed"):
    tagging.infer_scheme(['B', 'B-X'])
  with pytest.raises(ValueError, match='has both M and I'):
    tagging.infer_scheme(['B-X', 'I-X', 'M-X'])
  with pytest.raises(ValueError, match="has 'O' with bare tags"):
    tagging.infer_scheme(['B', 'I', 'O'])
  with pytest.raises(ValueError, match=r"d: config.data.scheme=auto: the tag "
                     r"set \['B', 'E', 'S'\]"):
    tagging.resolve_scheme('auto', ['B', 'E', 'S'], 'd')
  assert tagging.resolve_scheme('seg_bmes', ['B', 'E', 'S'], 'd') == 'seg_BMES'
  assert tagging.resolve_scheme('NONE', ['B-X', 'NN'], 'd') == 'none'
  with pytest.raises(ValueError, match='is not seg_BIES'):
    tagging.resolve_scheme('seg_BIES', ['B', 'M', 'E'], 'd')
  with pytest.raises(ValueError, match='is not BMES'):
    tagging.resolve_scheme('BMES', ['B', 'M', 'E', 'S'], 'd')   # bare: seg_
  assert tagging.resolve_scheme('iobes', ['O', 'S-X'], 'd') == 'BIOES'
  with pytest.raises(ValueError, match='config.data.scheme'):
    tagging.resolve_scheme('IOB1', ['O', 'B-X'], 'd')
  with pytest.raises(ValueError, match='is not BMES'):
    tagging.resolve_scheme('BMES', ['O', 'B-X', 'I-X'], 'd')
  with pytest.raises(ValueError, match='is not IOB2'):
    tagging.TaggingTask(tiny_config('msra_ner', scheme='IOB2'))


def write_conll(path, sentences):
  path.write_text('\n\n'.join('\n'.join(f'{w} {t}' for w, t in s)
                              for s in sentences) + '\n', encoding='utf-8')
  return str(path)


def test_bad_input(tmp_path):
  train_file = write_conll(tmp_path / 'train.conll', [
      [('John', 'B-PER'), ('runs', 'O')], [('Mary', 'B-PER'), ('sings', 'O')]])
  eval_file = write_conll(tmp_path / 'eval.conll', [
      [('Paris', 'B-LOC'), ('sleeps', 'O')]])
  c = tiny_config('conll_sample', train=train_file, eval=eval_file)
  with pytest.raises(ValueError, match=r"eval\.conll.*'eval\.conll:1'.*'B-LOC'"
                     r".*not in the training tag set"):
    tagging.TaggingTask(c)
  # A sentence whose words all normalise to nothing (zero-width spaces are
  # removed as format characters) is an empty sentence.
  eval_file = write_conll(tmp_path / 'empty.conll', [
      [('\u200b', 'O'), ('\u200b\u200b', 'O')]])
  c = tiny_config('conll_sample', train=train_file, eval=eval_file)
  with pytest.raises(ValueError, match=r"'empty\.conll:1'.*empty sentence"):
    tagging.TaggingTask(c)
  with pytest.raises(ValueError, match='at least one word'):
    ex.TaggingExample('x', [], [])
  c = tiny_config('conll_sample', train='drug_reviews')
  with pytest.raises(ValueError, match='not tagging'):
    tagging.TaggingTask(c)


def test_msra_preset_trains_from_scratch_with_chinese_vocab():
  c = finetune_configs.get_config('msra_ner')
  assert c.model.init_from == '' and c.data.vocab == 'bert_chinese_vocab'
  tok = finetune.tokenizer_for(c)
  assert tok.vocab_size == 21128
  assert finetune.bert_config(c, tok.vocab_size).vocab_size == 21128
  assert c.best_metric == 'span_f1'


def test_sampling_by_rarest_entity_type():
  # q = 0: class-balanced over each sentence's rarest entity type. Of the 64
  # sentences, 34 have PER as rarest type and 1 ORG; balanced draws give each
  # of the 5 classes about a fifth.
  task = tagging.TaggingTask(tiny_config('conll_sample', sampling_q=0.0))
  classes, names = sampling.sentence_classes(
      [e.tags for e in task.train_ds.examples])
  it = task.train_iterator(8, 0, 1, seed=0)
  drawn = np.concatenate([next(it)['example_index'] for _ in range(40)])
  share = np.bincount(classes[drawn], minlength=len(names)) / drawn.size
  assert share == pytest.approx(np.full(len(names), 0.2), abs=0.05)
  assert it.get_state()['sampler'] is not None


def losses_of(results):
  return [h['loss'] for h in results['train_history'] if 'loss' in h]


@pytest.mark.parametrize('preset,loss', [('msra_ner', 'ghm'),
                                         ('conll_sample', 'dice')])
def test_tiny_run_loss_falls(tmp_path, preset, loss):
  c = tiny_config(preset)
  c.loss.name = loss
  results = train.run(c, tmp_path / 'run')
  written = json.loads((tmp_path / 'run' / 'results.json').read_text())
  final = written['final_eval']
  for key in ('span_f1', 'span_precision', 'span_recall', 'span_macro_f1',
              'token_accuracy', 'truncated_words'):
    assert key in final, key
  assert any(k.startswith('f1/') for k in final)
  history = losses_of(results)
  assert len(history) == 8
  assert history[-1] < 0.8 * history[0], history
  rows = [json.loads(l) for l in
          (tmp_path / 'run' / 'predictions.jsonl').read_text().splitlines()]
  assert len(rows) == 32
  assert set(rows[0]) == {'guid', 'words', 'gold', 'pred', 'gold_probs'}
  assert len(rows[0]['pred']) == len(rows[0]['gold_probs']) == len(
      rows[0]['words'])
  assert written['best']['step'] == 40   # best_metric = span_f1 is a key


# ---------------------------------------------------------------------------
# Any tag set, the CRF head, bad gold sequences.


def test_first_violation_hand_examples():
  from bert_jax import crf
  names = ['O', 'B-LOC', 'I-LOC', 'B-PER', 'I-PER']
  allowed = crf.allowed_transitions(names, 'IOB2')
  ids = lambda tags: [names.index(t) for t in tags]
  assert tagging.first_violation(ids(['B-LOC', 'I-LOC', 'O']), allowed) is None
  assert tagging.first_violation(ids(['O', 'I-LOC']), allowed)[0] == 1
  assert tagging.first_violation(ids(['B-PER', 'I-LOC']), allowed)[0] == 1
  assert tagging.first_violation(ids(['I-PER']), allowed) == (
      0, 'cannot start a sentence')
  seg = ['B', 'M', 'E', 'S']
  allowed = crf.allowed_transitions(seg, 'BMES')
  ids = lambda tags: [seg.index(t) for t in tags]
  assert tagging.first_violation(ids('BMES'), allowed) is None
  assert tagging.first_violation(ids('SE'), allowed)[0] == 1     # E with no B
  assert tagging.first_violation(ids('SB'), allowed) == (
      1, 'leaves a span open at the end of the sentence')


def test_ill_formed_gold_is_counted_or_raised(tmp_path):
  train_file = write_conll(tmp_path / 'train.conll', [
      [('John', 'B-PER'), ('runs', 'O')],
      [('in', 'O'), ('Paris', 'I-LOC'), ('now', 'O')],   # I-LOC after O
      [('Mary', 'B-LOC'), ('Ann', 'I-LOC')]])
  c = tiny_config('conll_sample', train=train_file, eval=train_file,
                  scheme='IOB2')
  task = tagging.TaggingTask(c)
  assert task.ill_formed == {'train': 1, 'eval': 1}
  c.data.ill_formed_tags = 'raise'
  # The sentence starts on line 4; 'Paris' is its second word, line 5.
  with pytest.raises(ValueError, match=r"train\.conll:5: tag 'I-LOC' \(word "
                     r"'Paris'\) after 'O' cannot follow the tag before it in "
                     r"IOB2"):
    tagging.TaggingTask(c)
  c.data.ill_formed_tags = 'warn'
  with pytest.raises(ValueError, match=r"ill_formed_tags='warn'; choices"):
    tagging.TaggingTask(c)


def test_eval_only_tag_is_an_error(tmp_path):
  train_file = write_conll(tmp_path / 'train.conll', [
      [('the', 'DT'), ('dog', 'NN')], [('a', 'DT'), ('cat', 'NN')]])
  eval_file = write_conll(tmp_path / 'eval.conll', [
      [('dogs', 'NNS'), ('bark', 'VBP')]])
  c = tiny_config('conll_pos', train=train_file, eval=eval_file)
  c.data.reader_options = ml_collections.ConfigDict()
  with pytest.raises(ValueError, match=r"'eval\.conll:1' has tag 'NNS', which "
                     r"is not in the training tag set \['DT', 'NN'\]"):
    tagging.TaggingTask(c)


def test_crf_and_loss_config_errors():
  c = tiny_config('conll_sample')
  c.crf_emission_loss_weight = 0.5
  with pytest.raises(ValueError, match='needs config.crf=True'):
    tagging.TaggingTask(c)
  c.crf = True
  c.crf_emission_loss_weight = 0.0
  c.loss.name = 'focal'
  with pytest.raises(ValueError, match=r"config.loss.name='focal' with "
                     r"config.crf=True.*crf_emission_loss_weight > 0"):
    tagging.TaggingTask(c)
  c.loss.name = 'ce'
  c.loss.label_smoothing = 0.1
  with pytest.raises(ValueError, match=r'config.loss.label_smoothing is set '
                     'but has no effect'):
    tagging.TaggingTask(c)
  c.loss.label_smoothing = None
  c.eval_logit_adjustment_tau = 1.0
  with pytest.raises(ValueError, match='Viterbi path'):
    tagging.TaggingTask(c)
  c.eval_logit_adjustment_tau = 0.0
  c.best_metric = 'seg_f1'
  with pytest.raises(ValueError, match=r"config.best_metric='seg_f1' is not "
                     r"reported by the IOB2 tagging eval; choices: \[.*span_f1"):
    tagging.TaggingTask(c)


def _gather_reference(logits, feats):
  """Word-level emissions by hand: each kept word's first sub-token, found
  from label_weights (not from word_positions), packed to the left."""
  n, t, k = logits.shape
  out = np.zeros((n, t, k), np.float32)
  tags = np.zeros((n, t), np.int32)
  mask = np.zeros((n, t), bool)
  for i in range(n):
    pos = np.flatnonzero(feats['label_weights'][i])
    out[i, :len(pos)] = logits[i, pos]
    tags[i, :len(pos)] = feats['labels'][i, pos]
    mask[i, :len(pos)] = True
  return out, tags, mask


def test_crf_loss_is_crf_nll_of_word_emissions_and_decoding_is_valid():
  import jax
  from bert_jax import crf
  c = tiny_config('conll_sample', max_seq_length=24, max_eval_examples=16)
  c.model.update(hidden_size=16, num_hidden_layers=1, intermediate_size=32)
  c.crf = True
  task = tagging.TaggingTask(c)
  feats = {k: v[:8] for k, v in task.train_features.items()}
  params = task.init_params(jax.random.PRNGKey(0), feats)
  assert set(params['crf']) == {'transitions', 'start', 'end'}
  assert params['crf']['transitions'].shape == (9, 9)
  # Non-zero CRF scores, so that a wrong gather or order would show.
  rng = np.random.default_rng(0)
  params['crf'] = {k: rng.normal(size=v.shape).astype(np.float32)
                   for k, v in params['crf'].items()}
  feats['weights'] = np.array([1, 1, 1, 1, 1, 1, 0.5, 0], np.float32)
  # Dropout is 0 in tiny_config, so training and eval logits agree.
  loss, _ = jax.jit(task.train_loss)(params, feats, jax.random.PRNGKey(1), {})
  logits = np.asarray(jax.jit(
      lambda p, b: task._logits(p, b, deterministic=True))(params, feats))
  em, tags, mask = _gather_reference(logits, feats)
  p = params['crf']
  want = crf.nll(em, tags, mask, p['transitions'], p['start'], p['end'],
                 weights=feats['weights'])
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  # Mean over sentences, weighted: the per-sentence NLLs by hand.
  per = -np.asarray(crf.log_likelihood(em, tags, mask, p['transitions'],
                                       p['start'], p['end']))
  np.testing.assert_allclose(
      loss, np.sum(per * feats['weights']) / feats['weights'].sum(), rtol=1e-5)
  # Eval: constrained Viterbi never yields an ill-formed IOB2 sentence, even
  # with transitions that favour I-X after O.
  trans = np.asarray(p['transitions']).copy()
  o = task.tag_index['O']
  for name, i in task.tag_index.items():
    if name.startswith('I-'):
      trans[o, i] += 50.0
  params['crf'] = dict(p, transitions=trans)
  batch = dict(task.eval_features)
  _, outputs = jax.jit(task.eval_step)(params, batch)
  outputs = {k: np.asarray(v) for k, v in outputs.items()}
  preds = task.word_predictions(outputs)
  assert all(datasets.ill_formed_entities(s, 'iob2') == 0 for s in preds)
  task.constrained = False
  _, free = jax.jit(task.eval_step)(params, batch)
  free_preds = task.word_predictions({k: np.asarray(v) for k, v in free.items()})
  assert sum(datasets.ill_formed_entities(s, 'iob2') for s in free_preds) > 0


def _train_steps(task, steps=12, lr=3e-3):
  """Plain Adam steps on the task's loss; returns the losses."""
  import jax
  import optax
  feats = task.train_features
  n = len(feats['weights'])
  params = task.init_params(jax.random.PRNGKey(0),
                            {k: v[:8] for k, v in feats.items()})
  tx = optax.adam(lr)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, batch, rng):
    (loss, _), grads = jax.value_and_grad(task.train_loss, has_aux=True)(
        params, batch, rng, {})
    updates, opt = tx.update(grads, opt)
    return optax.apply_updates(params, updates), opt, loss

  out = []
  for i in range(steps):
    idx = np.arange(i * 8, i * 8 + 8) % n
    params, opt, loss = step(params, opt, {k: v[idx] for k, v in feats.items()},
                             jax.random.PRNGKey(i))
    out.append(float(loss))
  return out, params


@pytest.mark.parametrize('preset,crf', [('hkcancor_cws', False),
                                        ('conll_pos', False),
                                        ('conll_sample', True)])
def test_tiny_real_data_loss_falls(preset, crf):
  """Segmentation, POS and CRF-NER on a few real sentences: the loss of the
  first batch falls well below where it started, and the eval runs."""
  import jax
  c = tiny_config(preset, max_seq_length=32, max_train_examples=16,
                  max_eval_examples=8)
  c.model.update(hidden_size=16, num_hidden_layers=1, intermediate_size=32)
  c.crf = crf
  task = tagging.TaggingTask(c)
  assert task.scheme == {'hkcancor_cws': 'seg_BMES', 'conll_pos': 'none',
                         'conll_sample': 'IOB2'}[preset]
  history, params = _train_steps(task, steps=16, lr=1e-2)
  # Steps alternate between the two batches of 8 sentences.
  assert history[-2] < 0.7 * history[0], history
  _, outputs = jax.jit(task.eval_step)(params, task.eval_features)
  out = task.summarize_eval({'ce_loss': 0.0, 'accuracy': 0.0,
                             'crf_nll': 0.0},
                            {k: np.asarray(v) for k, v in outputs.items()})
  key = {'hkcancor_cws': 'seg_f1', 'conll_pos': 'macro_f1',
         'conll_sample': 'span_f1'}[preset]
  assert 0.0 <= out[key] <= 1.0 and key in task.metric_keys()
  if preset == 'hkcancor_cws':
    row = out['_predictions'][0]
    assert row['gold_text'].replace(' ', '') == ''.join(row['words'])
    assert row['pred_text'].replace(' ', '') == ''.join(row['words'])
    assert out['oov_rate'] > 0 and 'OOV recall' in out['report']


def test_segmentation_eval_from_gold_logits():
  """Gold logits give seg F1 1; the gold text is the corpus's words."""
  task = tagging.TaggingTask(tiny_config('hkcancor_cws', max_seq_length=128,
                                         max_eval_examples=40))
  out = task.summarize_eval({'ce_loss': 0.0, 'accuracy': 1.0},
                            one_hot_outputs(task))
  assert task.stats['eval']['truncated_words'] == 0
  assert out['seg_f1'] == out['seg_precision'] == out['seg_recall'] == 1.0
  assert out['iv_recall'] == 1.0 and out['oov_recall'] == 1.0
  row = out['_predictions'][0]
  ex0 = task.eval_ds.examples[0]
  want = ' '.join(''.join(ex0.words[s:e]) for s, e in
                  metrics_lib.segment_words(ex0.tags, 'BMES'))
  assert row['gold_text'] == row['pred_text'] == want and ' ' in want


@pytest.mark.slow
@pytest.mark.parametrize('preset,args', [
    ('hkcancor_cws', ['--config.crf=True']),
    ('conll_sample', ['--config.data.scheme=IOB2', '--config.crf=True']),
    ('conll_pos', ['--config.data.scheme=none'])])
def test_documented_command_line(tmp_path, preset, args):
  import subprocess
  import sys
  cmd = [sys.executable, '-m', 'bert_jax.main',
         f'--config=configs/finetune.py:{preset}', f'--workdir={tmp_path}',
         '--config.model.init_from=', '--config.data.vocab=' + (
             str(registry.fetch('bert_chinese_vocab') / 'vocab.txt')
             if preset.startswith('hkcancor') else 'minilm'),
         '--config.model.hidden_size=16', '--config.model.num_hidden_layers=1',
         '--config.model.num_attention_heads=2',
         '--config.model.intermediate_size=32',
         '--config.data.max_seq_length=32', '--config.data.max_train_examples=16',
         '--config.data.max_eval_examples=8', '--config.batch_size=8',
         '--config.eval_batch_size=8', '--config.total_steps=2'] + args
  proc = subprocess.run(cmd, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-3000:]
  final = json.loads((tmp_path / 'results.json').read_text())['final_eval']
  assert {'hkcancor_cws': 'seg_f1', 'conll_sample': 'span_f1',
          'conll_pos': 'token_accuracy'}[preset] in final


@pytest.mark.parametrize('scheme,tags,spans,extra', [
    ('IOB2', ['B-LOC', 'I-LOC', 'O', 'B-PER'],
     [dict(type='LOC', start=0, end=2, text='a b'),
      dict(type='PER', start=3, end=4, text='d')], {}),
    ('seg_BMES', ['B', 'E', 'S', 'S'],
     [dict(start=0, end=2, text='ab'), dict(start=2, end=3, text='c'),
      dict(start=3, end=4, text='d')], {'text': 'ab c d'}),
    ('none', ['NN', 'VB', 'DT', 'NN'], [], {}),
])
def test_prediction_rows_per_scheme_kind(scheme, tags, spans, extra):
  """What `bert_jax.predict` writes per sentence, worked by hand: entity
  spans, the words and segmented text of a segmentation, tags alone for
  POS."""
  from bert_jax.data import examples as examples_lib  # pylint: disable=g-import-not-at-top
  task = object.__new__(tagging.TaggingTask)
  task.scheme, task.kind = scheme, tagging.scheme_kind(scheme)
  task.eval_ds = types.SimpleNamespace(examples=[
      examples_lib.TaggingExample('s1', ('a', 'b', 'c', 'd'), tuple(tags))])
  task.word_predictions = lambda outputs: [list(tags)]
  (row,) = task.prediction_rows({})
  assert row == dict(guid='s1', tokens=['a', 'b', 'c', 'd'], tags=tags,
                     spans=spans, **extra)
