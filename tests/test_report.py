"""experiments.report: grouping, mean ± std, the paired bootstrap, plots,
on constructed runs whose answers are known by hand."""

import json
import math
import pathlib

import numpy as np
import pytest

from bert_jax import metrics as metrics_lib
from experiments import report
from experiments import sweep

CLASSES = ('neg', 'neu', 'pos')
COUNTS = (30, 10, 60)          # training counts: 'neu' is the minority


def _write_run(root, name, overrides, labels, preds, *, tau=0.0, loss=None,
               adjusted=None):
  """A classification run as bert_jax.train writes it, its final_eval
  computed by bert_jax.metrics from (labels, preds)."""
  d = pathlib.Path(root) / name
  d.mkdir(parents=True)
  idx = {c: i for i, c in enumerate(CLASSES)}
  m = metrics_lib.classification_metrics(
      np.array([idx[p] for p in preds]), np.array([idx[l] for l in labels]),
      len(CLASSES), class_names=CLASSES)
  rarest = CLASSES[int(np.argmin(COUNTS))]
  final = dict(ce_loss=0.5, accuracy=m['accuracy'], macro_f1=m['macro_f1'],
               micro_f1=m['micro_f1'], weighted_f1=m['weighted_f1'],
               minority_f1=m['per_class'][rarest]['f1'], minority_class=rarest,
               per_class=m['per_class'], report='...')
  for c in CLASSES:
    final[f'f1/{c}'] = m['per_class'][c]['f1']
  if tau:
    final['adjusted_accuracy'] = m['accuracy']
  history = [dict(step=s, loss=(loss or 1.0) / s) for s in (10, 20, 30)]
  config = dict(task='classification', seed=overrides.get('seed', 0),
                eval_logit_adjustment_tau=tau,
                data={'sampling_q': overrides.get('data.sampling_q')},
                loss={'name': overrides.get('loss.name', 'ce'),
                      'gamma': overrides.get('loss.gamma')})
  _write_labelled_run(d, 'classification', final, history, config, labels,
                      preds, adjusted)
  return d


def _write_labelled_run(d, task, final, history, config, labels, preds,
                        adjusted):
  """results.json and predictions.jsonl (label / prediction rows, with
  adjusted_prediction when given) of a classification or relation run."""
  (d / 'results.json').write_text(json.dumps(dict(
      task=task, final_step=30, final_eval=final, best=None,
      train_history=history, config=config)))
  with open(d / 'predictions.jsonl', 'w') as f:
    for i, (l, p) in enumerate(zip(labels, preds)):
      row = dict(guid=f'g{i}', label=l, prediction=p)
      if adjusted is not None:
        row['adjusted_prediction'] = adjusted[i]
      f.write(json.dumps(row) + '\n')


def _sweep(root, runs):
  """runs: [(overrides, labels, preds, kwargs)] -> sweep dir with sweep.json."""
  named = sweep.name_runs([o for o, *_ in runs])
  for r, (o, labels, preds, kw) in zip(named, runs):
    _write_run(root, r.name, o, labels, preds, **kw)
  (pathlib.Path(root) / 'sweep.json').write_text(json.dumps(dict(
      config='c.py:x', runs=[dict(index=r.index, name=r.name,
                                  overrides=r.overrides) for r in named])))
  return pathlib.Path(root)


LABELS = ['neg'] * 6 + ['neu'] * 4 + ['pos'] * 10


def _shift(labels):
  """A wrong prediction for every example."""
  nxt = {'neg': 'neu', 'neu': 'pos', 'pos': 'neg'}
  return [nxt[l] for l in labels]


# ------------------------------------------------------------ statistics
def test_mean_std_by_hand():
  assert report.mean_std([0.5, 0.7, 0.9]) == pytest.approx((0.7, 0.2, 3))
  m, s, n = report.mean_std([0.25])
  assert (m, n) == (0.25, 1) and math.isnan(s)


def test_identical_systems_have_a_zero_ci(tmp_path):
  preds = LABELS[:]
  preds[:3] = ['pos'] * 3
  root = _sweep(tmp_path, [
      ({'loss.name': 'ce', 'seed': 0}, LABELS, preds, {}),
      ({'loss.name': 'ce', 'seed': 1}, LABELS, LABELS, {}),
      ({'loss.name': 'focal', 'seed': 0}, LABELS, preds, {}),
      ({'loss.name': 'focal', 'seed': 1}, LABELS, LABELS, {}),
  ])
  report.write_report(root)
  out = json.loads((root / 'report.json').read_text())
  cmp = out['groups']['loss=focal']['vs_baseline']
  for metric in ('accuracy', 'macro_f1', 'minority_f1'):
    assert cmp[metric] == dict(diff=0.0, lo=0.0, hi=0.0, excludes_zero=False)
  text = (root / 'report.md').read_text()
  assert '| `loss=focal` | 2 | +0.0000 [+0.0000, +0.0000] |' in text


def test_always_right_vs_always_wrong(tmp_path):
  root = _sweep(tmp_path, [
      ({'loss.name': 'ce', 'seed': 0}, LABELS, _shift(LABELS), {}),
      ({'loss.name': 'dsc', 'seed': 0}, LABELS, LABELS, {}),
  ])
  report.write_report(root)
  cmp = json.loads((root / 'report.json').read_text())['groups'][
      'loss=dsc']['vs_baseline']
  for metric in ('accuracy', 'macro_f1', 'minority_f1'):
    assert cmp[metric] == dict(diff=1.0, lo=1.0, hi=1.0, excludes_zero=True)
  assert '**+1.0000 [+1.0000, +1.0000]**' in (root / 'report.md').read_text()


def test_bootstrap_equals_a_direct_resampling():
  """The vectorised bootstrap equals resampling the examples and scoring
  each resample with bert_jax.metrics (present-class macro-F1 included)."""
  rng = np.random.default_rng(1)
  n, b = 40, 200
  y = rng.integers(0, 3, n)
  pa = np.where(rng.random(n) < 0.6, y, rng.integers(0, 3, n))
  pb = np.where(rng.random(n) < 0.8, y, rng.integers(0, 3, n))
  stats, score = report.classification_scorer(CLASSES, 'neu')
  rows = lambda p: [dict(label=CLASSES[i], prediction=CLASSES[j])
                    for i, j in zip(y, p)]
  counts = report.resample_counts(n, b, seed=7)
  got = {k: score(counts @ stats(rows(pb)))[k] - score(counts @ stats(rows(pa)))[k]
         for k in ('accuracy', 'macro_f1', 'minority_f1')}

  draw = np.random.default_rng(7)        # the same draws, made explicitly
  want = {k: [] for k in got}
  for _ in range(b):
    i = draw.integers(0, n, n)
    ma, mb = (metrics_lib.classification_metrics(p[i], y[i], 3,
                                                 class_names=CLASSES)
              for p in (pa, pb))
    want['accuracy'].append(mb['accuracy'] - ma['accuracy'])
    want['macro_f1'].append(mb['macro_f1'] - ma['macro_f1'])
    want['minority_f1'].append(mb['per_class']['neu']['f1']
                               - ma['per_class']['neu']['f1'])
  for k in got:
    np.testing.assert_allclose(got[k], want[k], atol=1e-12)


def test_relation_scorer_equals_relation_metrics_on_resamples():
  """Bootstrapped relation metrics (macro-F1 without 'Other' included) equal
  bert_jax's own relation metrics on each explicit resample."""
  from bert_jax.tasks import relation
  names = ['Other', 'Cause-Effect(e1,e2)', 'Cause-Effect(e2,e1)', 'Member(e1,e2)']
  rng = np.random.default_rng(3)
  n, b = 30, 50
  y = rng.choice(4, n, p=[0.5, 0.2, 0.2, 0.1])
  p = np.where(rng.random(n) < 0.6, y, rng.integers(0, 4, n))
  stats, score = report.relation_scorer(names, 'Other')
  rows = [dict(label=names[i], prediction=names[j]) for i, j in zip(y, p)]
  counts = report.resample_counts(n, b, seed=5)
  got = score(counts @ stats(rows))
  assert set(got) == {'accuracy', 'macro_f1', 'macro_f1_excl_other'}
  draw = np.random.default_rng(5)
  for r in range(b):
    i = draw.integers(0, n, n)
    want = relation.relation_metrics(p[i], y[i], names, 'Other')
    for k in got:
      assert got[k][r] == pytest.approx(want[k], abs=1e-12), (k, r)


def test_tagging_scorer_matches_span_f1():
  gold = [['B-PER', 'I-PER', 'O'], ['O', 'B-LOC'], ['B-ORG', 'O', 'B-PER']]
  pred = [['B-PER', 'I-PER', 'O'], ['O', 'O'], ['B-ORG', 'O', 'B-LOC']]
  stats, score = report.tagging_scorer('IOB2')
  s = stats([dict(gold=g, pred=p) for g, p in zip(gold, pred)])
  got = score(np.ones((1, 3)) @ s)['span_f1'][0]
  assert got == pytest.approx(metrics_lib.span_f1(gold, pred, 'IOB2')['micro_f1'])


def test_tagging_scorer_scores_segmentation_and_pos_as_the_task_does():
  # Segmentation: word F1 as the SIGHAN scorer (metrics.segmentation_scores).
  gold = [list('BES'), list('BMES'), list('SS')]
  pred = [list('BES'), list('BEBE'), list('BE')]
  stats, score = report.tagging_scorer('seg_BMES')
  s = stats([dict(gold=g, pred=p) for g, p in zip(gold, pred)])
  want = metrics_lib.segmentation_scores(gold, pred, 'BMES',
                                         [list('abc'), list('defg'), list('hi')],
                                         train_words=set())
  assert s.sum(0).tolist() == [want['num_true'], want['num_pred'],
                               want['num_correct']] == [6, 5, 2]
  assert score(s.sum(0, keepdims=True))['seg_f1'][0] == pytest.approx(want['f1'])
  # POS (scheme none): token accuracy, 3 of 5 words here.
  stats, score = report.tagging_scorer('none')
  s = stats([dict(gold=['NN', 'VB', 'DT'], pred=['NN', 'NN', 'DT']),
             dict(gold=['JJ', 'NN'], pred=['JJ', 'VB'])])
  assert score(s.sum(0, keepdims=True))['token_accuracy'][0] == pytest.approx(0.6)


# ------------------------------------------------------------ the report
def _ablation(tmp_path):
  wrong = _shift(LABELS)
  half = LABELS[:10] + wrong[10:]
  return _sweep(tmp_path, [
      ({'loss.name': 'ce', 'seed': 0}, LABELS, half, {}),
      ({'loss.name': 'ce', 'seed': 1}, LABELS, LABELS, {}),
      ({'loss.name': 'focal', 'loss.gamma': 1.0, 'seed': 0}, LABELS, half, {}),
      ({'loss.name': 'focal', 'loss.gamma': 1.0, 'seed': 1}, LABELS, wrong, {}),
      ({'loss.name': 'focal', 'loss.gamma': 2.0, 'seed': 0}, LABELS, LABELS, {}),
      ({'loss.name': 'focal', 'loss.gamma': 2.0, 'seed': 1}, LABELS, LABELS, {}),
      ({'loss.name': 'ce', 'eval_logit_adjustment_tau': 1.0, 'seed': 0},
       LABELS, half, dict(tau=1.0)),
      ({'loss.name': 'ce', 'data.sampling_q': 0.0, 'seed': 0}, LABELS, half, {}),
  ])


def test_report_tables_by_hand(tmp_path):
  root = _ablation(tmp_path)
  report.write_report(root)
  text = (root / 'report.md').read_text()
  # ce: accuracy 0.5 (half right) and 1.0 -> 0.75 ± 0.3536 (ddof=1).
  assert '| `loss=ce` (baseline) | 2 | 0.7500 ± 0.3536 |' in text
  # focal gamma=1: 0.5 and 0.0 -> 0.25 ± 0.3536; one seed: no ±.
  assert '| `loss=focal,gamma=1` | 2 | 0.2500 ± 0.3536 |' in text
  assert '| `loss=ce,sampling_q=0` | 1 | 0.5000 |' in text
  assert 'minority_f1 is the F1 of `neu`' in text
  assert 'Groups have different numbers of seeds' in text
  # Post-hoc adjustment: the unadjusted predictions would mislead.
  assert 'n/a (1)' in text
  assert ('(1) `loss=ce,eval_logit_adjustment_tau=1`: post-hoc adjusted '
          'predictions are not in predictions.jsonl') in text
  assert 'adjusted_accuracy' in text
  out = json.loads((root / 'report.json').read_text())
  acc = out['groups']['loss=focal,gamma=2']['vs_baseline']['accuracy']
  assert acc['diff'] == pytest.approx(0.25) and acc['lo'] >= 0
  assert out['groups']['loss=ce']['metrics']['accuracy'] == pytest.approx(
      dict(mean=0.75, std=math.sqrt(0.125), n=2))
  for png in ('per_class_f1.png', 'train_loss.png', 'vs_loss_gamma.png'):
    assert (root / png).stat().st_size > 5000, png
  assert '![Metrics vs loss.gamma](vs_loss_gamma.png)' in text


def test_families_for_hyperparameter_plots(tmp_path):
  runs, _ = report.load_runs(_ablation(tmp_path))
  families = report.swept_numeric_keys(report.group_runs(runs))
  assert list(families) == ['loss.gamma']
  assert [g.name for g in families['loss.gamma'][0]] == [
      'loss=focal,gamma=1', 'loss=focal,gamma=2']


def test_adjusted_predictions_are_used_when_present(tmp_path):
  root = _sweep(tmp_path, [
      ({'loss.name': 'ce', 'seed': 0}, LABELS, _shift(LABELS), {}),
      ({'loss.name': 'ce', 'eval_logit_adjustment_tau': 1.0, 'seed': 0},
       LABELS, _shift(LABELS), dict(tau=1.0, adjusted=LABELS)),
  ])
  report.write_report(root)
  cmp = json.loads((root / 'report.json').read_text())['groups'][
      'loss=ce,eval_logit_adjustment_tau=1']['vs_baseline']
  assert cmp['accuracy']['diff'] == 1.0


def _write_tagging_run(root, name, overrides, gold, pred, *, tau=0.0,
                       adjusted=None):
  """A tagging run as bert_jax.train writes it (final_eval from
  bert_jax.metrics.span_f1)."""
  d = pathlib.Path(root) / name
  d.mkdir(parents=True)
  spans = metrics_lib.span_f1(gold, pred, 'IOB2')
  final = dict(span_f1=spans['micro_f1'], token_accuracy=0.9)
  if tau:
    final['adjusted_span_f1'] = metrics_lib.span_f1(gold, adjusted,
                                                    'IOB2')['micro_f1']
  config = dict(task='tagging', seed=overrides.get('seed', 0),
                eval_logit_adjustment_tau=tau, data={'scheme': 'IOB2'},
                loss={'name': 'ce'})
  (d / 'results.json').write_text(json.dumps(dict(
      task='tagging', final_step=30, final_eval=final, best=None,
      train_history=[dict(step=30, loss=0.1)], config=config)))
  with open(d / 'predictions.jsonl', 'w') as f:
    for i, (g, p) in enumerate(zip(gold, pred)):
      row = dict(guid=f's{i}', words=['w'] * len(g), gold=g, pred=p)
      if adjusted is not None:
        row['adjusted_pred'] = adjusted[i]
      f.write(json.dumps(row) + '\n')


def _report_posthoc_vs_ce(tmp_path, named):
  """Writes sweep.json for these runs and the report; returns the post-hoc
  group's comparison with CE from report.json."""
  (tmp_path / 'sweep.json').write_text(json.dumps(dict(
      config='c.py:x', runs=[dict(index=r.index, name=r.name,
                                  overrides=r.overrides) for r in named])))
  report.write_report(tmp_path)
  out = json.loads((tmp_path / 'report.json').read_text())
  return out['groups']['loss=ce,eval_logit_adjustment_tau=1']['vs_baseline']


def test_tagging_adjusted_predictions_are_bootstrapped(tmp_path):
  gold = [['B-PER', 'I-PER', 'O'], ['O', 'B-LOC'], ['B-ORG', 'O', 'B-PER']] * 4
  missed = [['O'] * len(g) for g in gold]
  runs = [({'loss.name': 'ce', 'seed': 0}, dict()),
          ({'loss.name': 'ce', 'eval_logit_adjustment_tau': 1.0, 'seed': 0},
           dict(tau=1.0, adjusted=gold))]
  named = sweep.name_runs([o for o, _ in runs])
  for r, (o, kw) in zip(named, runs):
    _write_tagging_run(tmp_path, r.name, o, gold, missed, **kw)
  cmp = _report_posthoc_vs_ce(tmp_path, named)
  # Raw predictions find no entity (F1 0); the adjusted ones are all right.
  assert cmp['span_f1'] == dict(diff=1.0, lo=1.0, hi=1.0, excludes_zero=True)
  text = (tmp_path / 'report.md').read_text()
  assert 'adjusted_span_f1' in text and 'disagrees' not in text


def test_relation_runs_are_bootstrapped_adjusted_included(tmp_path):
  from bert_jax.tasks import relation
  names = ['Other', 'Cause-Effect(e1,e2)', 'Member(e1,e2)']
  gold = [names[i] for i in [0, 1, 2, 0, 1, 0, 2, 0] * 3]
  wrong = ['Other'] * len(gold)
  index = {n: i for i, n in enumerate(names)}
  runs = [({'loss.name': 'ce', 'seed': 0}, wrong, None),
          ({'loss.name': 'ce', 'eval_logit_adjustment_tau': 1.0, 'seed': 0},
           wrong, gold)]
  named = sweep.name_runs([o for o, _, _ in runs])
  for r, (o, pred, adjusted) in zip(named, runs):
    d = tmp_path / r.name
    d.mkdir()
    m = relation.relation_metrics(np.asarray([index[x] for x in pred]),
                                  np.asarray([index[x] for x in gold]),
                                  names, 'Other')
    final = {k: v for k, v in m.items() if k != 'report'}
    config = dict(task='relation', other_label='')
    if adjusted is not None:
      config['eval_logit_adjustment_tau'] = 1.0
    _write_labelled_run(d, 'relation', final, [dict(step=30, loss=0.1)],
                        config, gold, pred, adjusted)
  cmp = _report_posthoc_vs_ce(tmp_path, named)
  # Raw: all 'Other' (no relation found, F1 excl. Other 0); adjusted: right.
  assert cmp['macro_f1_excl_other'] == dict(diff=1.0, lo=1.0, hi=1.0,
                                            excludes_zero=True)
  assert 'disagrees' not in (tmp_path / 'report.md').read_text()


def test_baseline_choice(tmp_path):
  runs, _ = report.load_runs(_ablation(tmp_path))
  groups = report.group_runs(runs)
  assert report.find_baseline(groups, 'ce').name == 'loss=ce'
  assert report.find_baseline(groups, 'loss=focal,gamma=2').name == (
      'loss=focal,gamma=2')
  with pytest.raises(ValueError, match='matches 2 groups'):
    report.find_baseline(groups, 'focal')


def test_missing_and_inconsistent_runs_are_reported(tmp_path):
  root = _ablation(tmp_path)
  data = json.loads((root / 'sweep.json').read_text())
  data['runs'].append(dict(index=8, name='loss=dsc,seed=0',
                           overrides={'loss.name': 'dsc', 'seed': 0}))
  (root / 'sweep.json').write_text(json.dumps(data))
  (root / 'sweep_status.json').write_text(json.dumps([dict(
      name='loss=dsc,seed=0', status='failed', returncode=1,
      log='x/train.log')]))
  # predictions.jsonl no longer matches results.json for one run.
  p = root / 'loss=ce,seed=1' / 'predictions.jsonl'
  rows = [json.loads(l) for l in p.read_text().splitlines()]
  rows[0]['prediction'] = 'pos'
  p.write_text('\n'.join(json.dumps(r) for r in rows) + '\n')
  report.write_report(root)
  text = (root / 'report.md').read_text()
  assert '- `loss=dsc,seed=0`: failed (exit 1, log x/train.log)' in text
  assert 'predictions.jsonl disagrees with results.json' in text
  assert 'loss=ce,seed=1: accuracy from predictions.jsonl 0.9500' in text


def test_without_sweep_json_groups_by_differing_config(tmp_path):
  root = _ablation(tmp_path)
  (root / 'sweep.json').unlink()
  runs, _ = report.load_runs(root)
  groups = report.group_runs(runs)
  assert len(groups) == 5 and sorted(len(g.runs) for g in groups) == [1, 1, 2, 2, 2]
  focal = [g for g in groups if g.overrides['loss.gamma'] == 2.0]
  assert focal[0].overrides == {'data.sampling_q': None,
                                'eval_logit_adjustment_tau': 0.0,
                                'loss.gamma': 2.0, 'loss.name': 'focal'}
  base = [g.name for g in groups if g.overrides['loss.name'] == 'ce'
          and g.overrides['data.sampling_q'] is None
          and g.overrides['eval_logit_adjustment_tau'] == 0][0]
  assert report.main([str(root), f'--baseline={base}']) == 0
