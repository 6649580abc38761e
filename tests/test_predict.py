"""Generic task presets, and `bert_jax.predict` on finished tiny runs.

The runs are tiny BERTs (MiniLM vocab) trained a few steps on registry data
written out as the local files a user would bring (TSV, CoNLL, relation
JSONL) or on a registry split; `predict` must reproduce each run's own
`predictions.jsonl` on the same data.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from bert_jax import predict
from bert_jax import runs
from bert_jax import train
from bert_jax.data import batching
from bert_jax.data import datasets
from bert_jax.data import readers
from configs import finetune

REPO = pathlib.Path(__file__).resolve().parents[1]
TASK_PRESETS = ('classification', 'pair_classification', 'tagging', 'span_qa',
                'relation')


def tiny(preset, **overrides):
  """A task preset with a tiny fresh BERT, a few steps."""
  c = finetune.get_config(preset)
  c.model.init_from = ''
  c.data.vocab = 'minilm'
  c.model.update(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                 intermediate_size=64, max_position_embeddings=128)
  c.data.max_seq_length = 64
  c.batch_size, c.eval_batch_size = 8, 16
  c.total_steps, c.num_epochs = 8, 0.0
  c.log_every, c.checkpoint_every = 4, 1000
  c.optim.update(lr=3e-3)
  c.update_from_flattened_dict(overrides)   # 'data.max_seq_length': 32, ...
  return c


def write_tsv(path, examples, pair=False):
  with open(path, 'w') as f:
    f.write('text\ttext_pair\tlabel\n' if pair else 'text\tlabel\n')
    for e in examples:
      clean = lambda s: ' '.join(s.split())   # no tabs or newlines in cells
      cells = [clean(e.text)] + ([clean(e.text_pair)] if pair else [])
      f.write('\t'.join(cells + [e.label]) + '\n')


def write_conll(path, examples, tags=True):
  with open(path, 'w') as f:
    for e in examples:
      for i, w in enumerate(e.words):
        f.write(f'{w} {e.tags[i]}\n' if tags else f'{w}\n')
      f.write('\n')


def write_relations(path, n, seed):
  """Constructed relation JSONL (no relation data ships): the label is which
  of two verbs links the entities."""
  rng = np.random.default_rng(seed)
  names = ['alice', 'bob', 'paris', 'london', 'acme', 'google']
  with open(path, 'w') as f:
    for _ in range(n):
      a, b = rng.choice(names, 2, replace=False)
      verb, label = [('founded', 'founder_of'), ('visited', 'visited')][
          int(rng.integers(2))]
      f.write(json.dumps(dict(tokens=[a, verb, b, 'yesterday', '.'],
                              head=[0, 1], tail=[2, 3], relation=label)) + '\n')


@pytest.fixture(scope='module')
def files(tmp_path_factory):
  d = tmp_path_factory.mktemp('data')
  rng = np.random.default_rng(0)
  drug = {s: datasets.load('drug_reviews', s) for s in ('train', 'test')}
  pick = lambda ds, n: [ds.examples[i] for i in
                        sorted(rng.choice(len(ds), n, replace=False))]
  write_tsv(d / 'train.tsv', pick(drug['train'], 96))
  write_tsv(d / 'test.tsv', pick(drug['test'], 40))
  conll = {s: datasets.load('conll_sample', s) for s in ('train', 'test')}
  write_conll(d / 'train.conll', conll['train'].examples)
  write_conll(d / 'test.conll', conll['test'].examples)
  write_relations(d / 'train.jsonl', 64, 0)
  write_relations(d / 'test.jsonl', 24, 1)
  return d


@pytest.fixture(scope='module')
def cls_run(files, tmp_path_factory):
  w = tmp_path_factory.mktemp('cls_run')
  c = tiny('classification', **{'data.train': str(files / 'train.tsv'),
                                 'data.eval': str(files / 'test.tsv')})
  return w, train.run(c, w)


@pytest.fixture(scope='module')
def tag_run(files, tmp_path_factory):
  w = tmp_path_factory.mktemp('tag_run')
  c = tiny('tagging', **{'data.train': str(files / 'train.conll'),
                         'data.eval': str(files / 'test.conll')})
  return w, train.run(c, w)


def _rows(path):
  return [json.loads(l) for l in pathlib.Path(path).read_text().splitlines()]


# ------------------------------------------------------------------ presets
def test_task_presets_are_documented_and_bucketed():
  for name in TASK_PRESETS:
    c = finetune.get_config(name)
    assert c.data.train == '' and c.model.init_from == 'minilm'
    assert c.num_epochs > 0 and c.optim.lr > 0
    assert name in finetune.__doc__
  assert finetune.get_config('classification').optim.lr == 2e-4
  assert (finetune.get_config('pair_classification')
          .data.reader_options.text_pair_field == 'text_pair')
  assert finetune.get_config('tagging').data.scheme == 'auto'
  assert (finetune.get_config('relation').data.reader_options.format
          == 'relation_jsonl')
  # The fast path is the default for every preset, the main job included.
  for name in finetune.PRESETS:
    c = finetune.get_config(name)
    buckets = batching.length_buckets(c)
    assert len(buckets) == 4 and buckets[-1] == c.data.max_seq_length, name
  c = finetune.get_config('drug_reviews')
  assert batching.length_buckets(c) == (64, 128, 192, 256)
  c.data.length_bucket_count = 0
  assert batching.length_buckets(c) == ()
  c.data.length_bucket_count = -1
  with pytest.raises(ValueError, match='length_bucket_count'):
    batching.length_buckets(c)
  with pytest.raises(ValueError, match='unknown preset.*classification'):
    finetune.get_config('clasification')


def test_task_preset_without_data_names_the_flag():
  from bert_jax.tasks.classification import ClassificationTask  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match='--config.data.train=train.tsv'):
    ClassificationTask(tiny('classification'))


def test_empty_text_error_names_line_and_how_to_skip(files, tmp_path):
  from bert_jax.tasks.classification import ClassificationTask  # pylint: disable=g-import-not-at-top
  bad = tmp_path / 'bad.tsv'
  bad.write_text('text\tlabel\ngood one\tpositive\n \tnegative\n')
  c = tiny('classification', **{'data.train': str(files / 'train.tsv'),
                                 'data.eval': str(bad)})
  with pytest.raises(readers.DataError,
                     match=r"bad.tsv:3: field 'text': empty text.*"
                     r'--config\.data\.on_error=skip'):
    ClassificationTask(c)
  c.data.on_error = 'skip'
  assert len(ClassificationTask(c).eval_ds) == 1


@pytest.mark.slow
@pytest.mark.parametrize('preset', TASK_PRESETS)
def test_task_preset_trains_through_main(preset, files, tmp_path):
  """Every task preset through `python -m bert_jax.main` on real data."""
  data = {'classification': ('train.tsv', 'test.tsv'),
          'pair_classification': ('pairs.tsv', 'pairs.tsv'),
          'tagging': ('train.conll', 'test.conll'),
          'span_qa': ('qa.json', 'qa.json'),
          'relation': ('train.jsonl', 'test.jsonl')}[preset]
  if preset == 'pair_classification':
    write_tsv(files / 'pairs.tsv',
              datasets.load('boolq', 'dev').examples[:48], pair=True)
  if preset == 'span_qa':
    _write_squad(files / 'qa.json', datasets.load('disfl_qa', 'dev'))
  args = [f'--config={REPO}/configs/finetune.py:{preset}',
          f'--workdir={tmp_path}', f'--config.data.train={files / data[0]}',
          f'--config.data.eval={files / data[1]}',
          '--config.model.init_from=', '--config.data.vocab=minilm',
          '--config.model.hidden_size=32', '--config.model.num_hidden_layers=1',
          '--config.model.num_attention_heads=2',
          '--config.model.intermediate_size=64',
          '--config.data.max_seq_length=128', '--config.total_steps=3',
          '--config.batch_size=8']
  out = subprocess.run([sys.executable, '-m', 'bert_jax.main', *args],
                       cwd=REPO, capture_output=True, text=True, check=False,
                       env=dict(os.environ, CI='1'))
  assert out.returncode == 0, out.stderr[-3000:]
  assert (tmp_path / 'results.json').exists()
  assert (f'python -m bert_jax.predict --workdir={tmp_path} '
          f'--input={files / data[1]}') in out.stdout


def _write_squad(path, ds):
  """A QA dataset as SQuAD v1.1 JSON (answerable questions only)."""
  paragraphs = [dict(context=e.context, qas=[dict(
      id=e.guid, question=e.question,
      answers=[dict(text=t, answer_start=s) for t, s in e.answers])])
                for e in ds.examples if not e.is_impossible]
  path.write_text(json.dumps(dict(data=[dict(title='t',
                                             paragraphs=paragraphs)])))


def test_main_prints_the_predict_command(cls_run):
  w, results = cls_run
  config = runs.load_run_config(w)
  cmd = runs.predict_command(config, str(w), results)
  assert cmd == (f'python -m bert_jax.predict --workdir={w} '
                 f'--input={config.data.eval} --output=-')
  config.data.eval, config.data.eval_split = 'drug_reviews', 'test'
  assert '--input=drug_reviews:test' in runs.predict_command(
      config, str(w), results)


# ------------------------------------------------------------------ predict
def test_predict_classification_equals_the_runs_predictions(cls_run, files):
  w, _ = cls_run
  rows, summary = predict.predict(w, str(files / 'test.tsv'))
  saved = _rows(w / 'predictions.jsonl')
  assert [r['guid'] for r in rows] == [r['guid'] for r in saved]
  assert [r['label'] for r in rows] == [r['prediction'] for r in saved]
  for r in rows:
    assert set(r['probs']) == {'negative', 'neutral', 'positive'}
    assert abs(sum(r['probs'].values()) - 1) < 1e-5
    assert r['label'] == max(r['probs'], key=r['probs'].get)
  # Labelled input: the run's own eval metrics.
  final = json.loads((w / 'results.json').read_text())['final_eval']
  assert summary['accuracy'] == pytest.approx(final['accuracy'])
  assert summary['macro_f1'] == pytest.approx(final['macro_f1'])


def test_predict_tagging_equals_the_runs_predictions(tag_run, files):
  w, _ = tag_run
  rows, summary = predict.predict(w, str(files / 'test.conll'))
  saved = _rows(w / 'predictions.jsonl')
  assert [r['tags'] for r in rows] == [r['pred'] for r in saved]
  assert [r['tokens'] for r in rows] == [r['words'] for r in saved]
  final = json.loads((w / 'results.json').read_text())['final_eval']
  assert summary['span_f1'] == pytest.approx(final['span_f1'])
  from bert_jax import metrics  # pylint: disable=g-import-not-at-top
  for r in rows:
    want = metrics.extract_spans(r['tags'], 'IOB2')
    assert [(s['type'], s['start'], s['end']) for s in r['spans']] == want
    for s in r['spans']:
      assert s['text'] == ' '.join(r['tokens'][s['start']:s['end']])
  # Unlabelled input (tokens only): the same tags, no metrics.
  words = files / 'words.conll'
  write_conll(words, datasets.load('conll_sample', 'test').examples,
              tags=False)
  unlabelled, none = predict.predict(w, str(words))
  assert none is None
  assert [r['tags'] for r in unlabelled] == [r['tags'] for r in rows]


def test_predict_reads_stdin_and_writes_stdout(cls_run, files):
  w, _ = cls_run
  saved = _rows(w / 'predictions.jsonl')
  lines = (files / 'test.tsv').read_text().splitlines()
  # Unlabelled: a text column only.
  text = 'text\n' + '\n'.join(l.split('\t')[0] for l in lines[1:]) + '\n'
  out = subprocess.run(
      [sys.executable, '-m', 'bert_jax.predict', f'--workdir={w}',
       '--input=-', '--output=-'], input=text, cwd=REPO, capture_output=True,
      text=True, check=False, env=dict(os.environ, CI='1'))
  assert out.returncode == 0, out.stderr[-3000:]
  rows = [json.loads(l) for l in out.stdout.splitlines()]
  assert [r['label'] for r in rows] == [r['prediction'] for r in saved]
  assert 'accuracy' not in out.stderr   # no labels, no metrics


def test_no_checkpoint_is_a_clear_error(tmp_path, cls_run, files):
  w, _ = cls_run
  (tmp_path / 'config.json').write_text((w / 'config.json').read_text())
  with pytest.raises(FileNotFoundError, match='no checkpoint'):
    predict.predict(tmp_path, str(files / 'test.tsv'))
  with pytest.raises(FileNotFoundError, match='no config.json'):
    predict.predict(tmp_path / 'nowhere', str(files / 'test.tsv'))


@pytest.mark.slow
def test_predict_relation_and_span_qa_equal_the_runs_predictions(
    files, tmp_path):
  w = tmp_path / 'rel'
  train.run(tiny('relation', **{'data.train': str(files / 'train.jsonl'),
                                'data.eval': str(files / 'test.jsonl')}), w)
  rows, _ = predict.predict(w, str(files / 'test.jsonl'))
  saved = _rows(w / 'predictions.jsonl')
  assert [r['label'] for r in rows] == [r['prediction'] for r in saved]
  w = tmp_path / 'qa'
  train.run(tiny('disfl_qa', **{'data.max_train_examples': 64,
                                'data.max_eval_examples': 24,
                                'data.max_seq_length': 128}), w)
  rows, _ = predict.predict(w, 'disfl_qa:dev')
  by_guid = {r['guid']: r for r in rows}
  for s in _rows(w / 'predictions.jsonl'):
    assert by_guid[s['guid']]['answer'] == s['prediction']
  contexts = {e.guid: e.context for e in datasets.load('disfl_qa',
                                                       'dev').examples}
  for r in rows:
    if r['answer']:
      assert contexts[r['guid']][r['start']:r['end']] == r['answer']
