"""Tune-then-test: selection, the held-out checks, the statistics, and the
smoke protocol end to end on real drug_reviews data."""

import json
import pathlib
import types

import numpy as np
import pytest

from bert_jax.data import datasets
from bert_jax.data import examples as ex
from experiments import stats
from experiments import sweep
from experiments import tune

REPO = pathlib.Path(__file__).resolve().parents[1]
ABLATION = str(REPO / 'configs/ablation.py')


# ------------------------------------------------------------ selection
def _rows(table):
  """{(variant, trial, seed): dev} -> the rows `tune.select` reads."""
  return [dict(variant=v, trial=t, seed=s, run=f'{v}-{t}-{s}', dev=d)
          for (v, t, s), d in table.items()]


def test_selection_is_the_argmax_of_the_seed_mean():
  rows = _rows({
      ('ce', 0, 0): 0.50, ('ce', 0, 1): 0.70,    # mean 0.60
      ('ce', 1, 0): 0.66, ('ce', 1, 1): 0.56,    # mean 0.61: the best mean
      ('ce', 2, 0): 0.80, ('ce', 2, 1): 0.30,    # best single run, mean 0.55
      ('focal', 0, 0): 0.2, ('focal', 0, 1): 0.2,
      ('focal', 1, 0): float('nan'), ('focal', 1, 1): 0.9,   # NaN never wins
  })
  got = tune.select(rows)
  assert got['ce']['trial'] == 1 and got['ce']['dev'] == pytest.approx(0.61)
  assert got['ce']['means'] == pytest.approx({0: 0.6, 1: 0.61, 2: 0.55})
  assert got['focal']['trial'] == 0


def test_selection_ties_go_to_the_earliest_trial_whatever_the_row_order():
  table = {('dsc', 0, 0): 0.3, ('dsc', 1, 0): 0.7, ('dsc', 2, 0): 0.7,
           ('dsc', 3, 0): 0.7 - 1e-15, ('dsc', 4, 0): 0.1}
  rows = _rows(table)
  for order in (rows, rows[::-1], rows[2:] + rows[:2]):
    assert tune.select(order)['dsc']['trial'] == 1
  # A real difference is not a tie.
  table[('dsc', 2, 0)] = 0.7 + 1e-9
  assert tune.select(_rows(table))['dsc']['trial'] == 2


def test_selection_ties_go_to_the_lower_dev_loss_then_the_earliest():
  # Trials 0-2 tie on the metric (all predict the majority class, say);
  # trial 2 fits dev best. Trial 3 is worse on the metric: its loss is moot.
  rows = _rows({('focal', t, 0): d for t, d in
                enumerate([0.263, 0.263, 0.263, 0.1])})
  for r, loss in zip(rows, [0.9, 0.8, 0.7, 0.1]):
    r['dev_loss'] = loss
  assert tune.select(rows)['focal']['trial'] == 2
  assert tune.select(rows[::-1])['focal']['trial'] == 2
  # Equal losses, or a tied trial without one: the earliest trial.
  rows[2]['dev_loss'] = 0.8
  assert tune.select(rows)['focal']['trial'] == 1
  rows[1]['dev_loss'] = None
  assert tune.select(rows)['focal']['trial'] == 0
  # Two tuning seeds: the mean loss decides (trial 1: 0.6 < trial 0: 0.65).
  rows = _rows({('ce', 0, 0): 0.5, ('ce', 0, 1): 0.5,
                ('ce', 1, 0): 0.4, ('ce', 1, 1): 0.6})
  for r, loss in zip(rows, [0.5, 0.8, 0.9, 0.3]):
    r['dev_loss'] = loss
  assert tune.select(rows)['ce']['trial'] == 1


def test_selection_refuses_missing_runs_and_uneven_seeds():
  with pytest.raises(tune.TuneError, match='no result'):
    tune.select(_rows({('ce', 0, 0): 0.5, ('ce', 1, 0): None}))
  with pytest.raises(tune.TuneError, match='different tuning seeds'):
    tune.select(_rows({('ce', 0, 0): 0.5, ('ce', 1, 1): 0.4}))


# ------------------------------------------------------------ the spec
def _spec(**changes):
  spec = dict(
      config_arg='drug_reviews,smoke', metric='macro_f1',
      dev={'data.eval_split': 'dev'}, test={'data.eval_split': 'test'},
      tuning_seeds=[0], final_seeds=[0, 1, 2], baseline='ce',
      variants={
          'ce': dict(fixed={'loss.name': 'ce'},
                     search=[[{'optim.lr': 1e-3}, {'optim.lr': 3e-3}]]),
          'focal': dict(fixed={'loss.name': 'focal'},
                        search=[[{'loss.gamma': 1.0}, {'loss.gamma': 2.0}]]),
      })
  spec.update(changes)
  return spec


@pytest.mark.parametrize('changes, message', [
    (dict(dev={'data.eval_split': 'test'}), 'dev split is the test split'),
    (dict(dev={'data.eval_split': 'test', 'data.eval': 'drug_reviews'}),
     "dev split 'test'"),
    (dict(final_seeds=[0, 1]), 'at least 3'),
    (dict(tuning_seeds=[0, 0]), 'distinct'),
    (dict(baseline='cee'), "baseline 'cee' is not a variant"),
])
def test_bad_specs_are_refused(changes, message):
  with pytest.raises(tune.TuneError, match=message):
    tune.check_spec(_spec(**changes), 'x.py:arg')


def test_unequal_trials_and_double_keys_are_refused():
  spec = _spec()
  spec['variants']['focal']['search'].append([{'optim.lr': 1e-3},
                                              {'optim.lr': 3e-3}])
  with pytest.raises(tune.TuneError, match='different numbers of trials'):
    tune.check_spec(spec, 'x.py:arg')
  spec = _spec()
  spec['variants']['ce']['fixed']['data.eval_split'] = 'test'
  with pytest.raises(tune.TuneError, match='set twice'):
    tune.check_spec(spec, 'x.py:arg')


def _plan_file(tmp_path, spec):
  """A config file: configs/ablation.py's get_config, this tune()."""
  path = tmp_path / 'cfg.py'
  path.write_text(
      'import importlib.util, json\n'
      f'_s = importlib.util.spec_from_file_location("abl", {ABLATION!r})\n'
      '_m = importlib.util.module_from_spec(_s); _s.loader.exec_module(_m)\n'
      'get_config = _m.get_config\n'
      f'def tune(arg):\n  return json.loads({json.dumps(json.dumps(spec))})\n')
  return path


def test_a_dev_split_that_reaches_the_test_data_is_refused(tmp_path):
  # The overrides differ, but both stages evaluate on drug_reviews/test...
  spec = _spec(dev={'data.eval_split': 'dev', 'data.eval': 'drug_reviews'},
               test={'data.eval_split': 'dev'})
  plan, module = tune.load_plan(f'{_plan_file(tmp_path, spec)}:drug_reviews,smoke')
  with pytest.raises(tune.TuneError, match='evaluate on the test data'):
    tune.validate(plan, module)
  # ...and the two stages of a point must train the same thing.
  spec = _spec(test={'data.eval_split': 'test', 'num_epochs': 9.0})
  plan, module = tune.load_plan(f'{_plan_file(tmp_path, spec)}:drug_reviews,smoke')
  with pytest.raises(tune.TuneError, match=r"differ in \['num_epochs'\]"):
    tune.validate(plan, module)


def test_typos_fail_before_anything_runs(tmp_path):
  spec = _spec()
  spec['variants']['focal']['fixed']['loss.gama'] = 1.0
  plan, module = tune.load_plan(f'{_plan_file(tmp_path, spec)}:drug_reviews,smoke')
  with pytest.raises(sweep.SweepError,
                     match=r"config.loss: Unknown hyperparameter\(s\) \['gama'\].*Did you mean 'gamma'"):
    tune.validate(plan, module)
  assert not list(tmp_path.glob('stage*'))


def test_ablation_presets_are_fair_and_validate():
  """Every tune preset: 6 trials per variant (3 lr x 2 key values), CE
  included, 1 tuning and 3 final seeds; a subset of drug_reviews with keys
  that exist on this branch expands and validates."""
  from configs import ablation  # pylint: disable=g-import-not-at-top
  for preset in ablation.TUNE_PRESETS:
    spec = ablation.tune(preset)
    tune.check_spec(spec, preset)
    assert {len(tune.expand_trials(v)) for v in spec['variants'].values()} == {6}
    assert spec['tuning_seeds'] == [0] and spec['final_seeds'] == [0, 1, 2]
    assert spec['dev']['data.eval_split'] != 'test'
  full = ablation.tune('drug_reviews')
  assert full['config_arg'] == 'drug_reviews,max_len=64,epochs=2'
  assert set(full['variants']) == set(ablation.TUNE_VARIANTS)
  assert full['variants']['ce_posthoc_la']['metric'] == 'adjusted_macro_f1'
  assert ablation.tune('msra_ner,max_len=32')['config_arg'] == (
      'msra_ner,max_len=32,model=tiny,train_examples=2000,eval_examples=1000,'
      'epochs=6')
  # A pretrained encoder replaces the budget's fresh tiny model.
  arg = ablation.tune('msra_ner,init_from=/enc')['config_arg']
  assert 'init_from=/enc' in arg and 'model=' not in arg
  tiny = ablation.get_config('hkcancor_cws,model=tiny').model
  assert (tiny.init_from, tiny.hidden_size, tiny.num_hidden_layers) == (
      '', 128, 2)
  with pytest.raises(ValueError, match='fresh model'):
    ablation.get_config('msra_ner,model=tiny,init_from=/enc')
  with pytest.raises(ValueError, match=r"unknown item 'model=huge'"):
    ablation.get_config('msra_ner,model=huge')
  # Word segmentation has no entity types to resample sentences by (the
  # tagging task refuses data.sampling_q there): its ablation leaves out
  # q-power resampling, and only that; msra_ner's keeps it.
  from bert_jax.tasks import tagging  # pylint: disable=g-import-not-at-top
  for preset in ablation.TUNE_PRESETS:
    config = ablation.get_config(preset)
    if config.task != 'tagging':
      continue
    canonical = tagging.SCHEMES.get(config.data.scheme.upper(), 'auto')
    segmentation = tagging.scheme_kind(canonical) == 'segmentation'
    trials = [t for v in ablation.tune(preset)['variants'].values()
              for t in tune.expand_trials(v)]
    assert any('data.sampling_q' in t for t in trials) != segmentation, preset
  cws = ablation.tune('hkcancor_cws')['variants']
  assert set(ablation.TUNE_VARIANTS) - set(cws) == {'ce_qpower'}
  assert set(ablation.tune('msra_ner')['variants']) == set(ablation.TUNE_VARIANTS)
  swept = []
  ablation.sweep(lambda **o: swept.append(o), 'hkcancor_cws,seeds=1')
  assert len(swept) == len(ablation.VARIANTS) - 2
  assert not any('data.sampling_q' in o for o in swept)
  with pytest.raises(ValueError, match=r"cannot run \['ce_qpower'\]"):
    ablation.tune('hkcancor_cws,variants=ce+ce_qpower')
  have = list(ablation.TUNE_VARIANTS)
  plan, module = tune.load_plan(
      f'{ABLATION}:drug_reviews,variants={"+".join(have)}')
  stage1 = tune.validate(plan, module)
  assert len(stage1) == 6 * len(have)
  names = [e.run.name for e in stage1]
  assert 'loss=focal,lr=0.0002,gamma=2,seed=0' in names
  assert all(e.run.overrides['data.eval_split'] == 'dev' for e in stage1)


# ------------------------------------------------------------ statistics
def _mean_metric(sums):
  """Stats [.., (value, 1)] -> the mean value."""
  return {'mean': sums[:, 0] / sums[:, 1]}


def _values(per_seed):
  """[S, n] per-example values -> stats [S, n, 2] for `_mean_metric`."""
  v = np.asarray(per_seed, np.float64)
  return np.stack([v, np.ones_like(v)], -1)


def test_bootstrap_with_one_possible_value():
  a = _values([[1, 1, 1, 1]] * 3)    # always right, every seed
  b = _values([[0, 0, 0, 0]] * 3)    # always wrong
  d = stats.two_level_bootstrap(a, b, _mean_metric, num_resamples=500)['mean']
  assert np.all(d == 1.0)
  assert stats.percentile_interval(d) == (1.0, 1.0)
  assert stats.bootstrap_p(d) == pytest.approx(2 / 501)
  # Identical systems: the same seed and example draws give exactly 0.
  c = _values([[1, 0, 1, 1], [0, 0, 1, 0], [1, 1, 1, 0]])
  d = stats.two_level_bootstrap(c, c, _mean_metric, num_resamples=500)['mean']
  assert np.all(d == 0.0) and stats.bootstrap_p(d) == 1.0


def test_two_level_distribution_enumerated_by_hand():
  """A: seed 0 scores the 2 examples (1, 0), seed 1 scores (1, 1); B: 0.

  A replicate draws 2 seed slots (each seed 0 or 1, 1/2) and one draw of
  the 2 examples for both slots: seed 0 then scores m = 1, 1/2, 0 w.p.
  1/4, 1/2, 1/4, seed 1 always 1. With k slots on seed 0: k = 0 (1/4) gives
  1; k = 1 (1/2) gives (m + 1) / 2 = 1, 3/4, 1/2 w.p. 1/4, 1/2, 1/4; k = 2
  (1/4) gives m. So 1, 3/4, 1/2, 0 w.p. 7, 4, 4, 1 (/16).
  """
  a = _values([[1, 0], [1, 1]])
  b = _values([[0, 0], [0, 0]])
  kw = dict(num_resamples=40_000, seed=1)

  def check(d, want):
    values, counts = np.unique(d, return_counts=True)
    assert list(values) == sorted(want)
    for v, c in zip(values, counts):
      assert c / len(d) == pytest.approx(want[v], abs=0.008), v

  check(stats.two_level_bootstrap(a, b, _mean_metric, **kw)['mean'],
        {1.0: 7 / 16, 0.75: 4 / 16, 0.5: 4 / 16, 0.0: 1 / 16})
  # Only the examples: seeds 0 and 1 once each -> (m + 1) / 2.
  check(stats.two_level_bootstrap(a, b, _mean_metric, levels='examples',
                                  **kw)['mean'],
        {1.0: 1 / 4, 0.75: 1 / 2, 0.5: 1 / 4})
  # Only the seeds: m = 1/2 always; k = 0, 1, 2 -> 1, 3/4, 1/2.
  check(stats.two_level_bootstrap(a, b, _mean_metric, levels='seeds',
                                  **kw)['mean'],
        {1.0: 1 / 4, 0.75: 1 / 2, 0.5: 1 / 4})
  # Nested (an example draw per slot): a slot is 1 w.p. 1/2 + 1/8 = 5/8,
  # 1/2 w.p. 1/4, 0 w.p. 1/8, the two slots independent.
  check(stats.two_level_bootstrap(a, b, _mean_metric, levels='nested',
                                  **kw)['mean'],
        {1.0: 25 / 64, 0.75: 20 / 64, 0.5: 14 / 64, 0.25: 4 / 64,
         0.0: 1 / 64})


def test_two_level_interval_is_wider_when_seeds_disagree():
  rng = np.random.default_rng(0)
  n = 200
  # Per seed, A is right on a different share of the examples (0.5 .. 0.9):
  # seed variance the example-only bootstrap cannot see.
  a = _values([rng.random(n) < p for p in (0.5, 0.7, 0.9)])
  b = _values([rng.random(n) < 0.6 for _ in range(3)])
  kw = dict(num_resamples=2000, seed=0)
  both = stats.percentile_interval(
      stats.two_level_bootstrap(a, b, _mean_metric, **kw)['mean'])
  only = stats.percentile_interval(stats.two_level_bootstrap(
      a, b, _mean_metric, levels='examples', **kw)['mean'])
  assert both[1] - both[0] > 1.5 * (only[1] - only[0])
  # When every seed agrees the two intervals are about the same.
  a1 = _values([rng.random(n) < 0.7] * 3)
  b1 = _values([rng.random(n) < 0.6] * 3)
  both = stats.percentile_interval(
      stats.two_level_bootstrap(a1, b1, _mean_metric, **kw)['mean'])
  only = stats.percentile_interval(stats.two_level_bootstrap(
      a1, b1, _mean_metric, levels='examples', **kw)['mean'])
  assert both[1] - both[0] == pytest.approx(only[1] - only[0], rel=0.2)
  # The nested design would average the example noise over 3 slots.
  nested = stats.percentile_interval(stats.two_level_bootstrap(
      a1, b1, _mean_metric, levels='nested', **kw)['mean'])
  assert nested[1] - nested[0] < 0.75 * (only[1] - only[0])


def test_bootstrap_rejects_mismatched_inputs():
  with pytest.raises(ValueError, match='same n'):
    stats.two_level_bootstrap(_values([[1, 0]]), _values([[1, 0, 1]]),
                              _mean_metric)
  with pytest.raises(ValueError, match='paired_seeds'):
    stats.two_level_bootstrap(_values([[1, 0]] * 2), _values([[1, 0]] * 3),
                              _mean_metric)
  d = stats.two_level_bootstrap(_values([[1, 0]] * 2), _values([[1, 0]] * 3),
                                _mean_metric, paired_seeds=False,
                                num_resamples=10)
  assert d['mean'].shape == (10,)


def test_bootstrap_p_by_hand():
  assert stats.bootstrap_p(np.array([1.0, 1.0, 1.0])) == pytest.approx(0.5)
  # below 0: 1 of 4 -> (1+1)/5; at or above 0: 3 -> (1+3)/5; p = 2 * 0.4.
  assert stats.bootstrap_p(np.array([-1.0, 1, 2, 3])) == pytest.approx(0.8)
  assert stats.bootstrap_p(np.array([0.0, 0.0])) == 1.0


def test_holm_by_hand():
  # sorted: 0.005 x4 = 0.02; 0.01 x3 = 0.03; 0.03 x2 = 0.06; 0.04 x1 = 0.04
  # -> running max 0.06.
  np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03, 0.005]),
                             [0.03, 0.06, 0.06, 0.02])
  np.testing.assert_allclose(stats.holm([0.5, 0.6]), [1.0, 1.0])
  got = stats.holm([0.02, np.nan, 0.04])   # NaN: not compared, not counted
  np.testing.assert_allclose(got, [0.04, np.nan, 0.04])
  with pytest.raises(ValueError, match=r'\[0, 1\]'):
    stats.holm([1.5])


# ------------------------------------------------------------ dev from train
def test_hold_out_is_stratified_disjoint_and_seeded():
  labels = ['a'] * 80 + ['b'] * 20
  exs = tuple(ex.ClassificationExample(f'g{i}', f'text {i}', None, l)
              for i, l in enumerate(labels))
  ds = datasets.Dataset('x', 'train', exs, ('a', 'b'), 'classification', None)
  dev = datasets.hold_out(ds, 0.1, 0, 'held_out')
  rest = datasets.hold_out(ds, 0.1, 0, 'rest')
  assert sorted(e.label for e in dev.examples) == ['a'] * 8 + ['b'] * 2
  assert len(rest) == 90
  assert not {e.guid for e in dev.examples} & {e.guid for e in rest.examples}
  shuffled = dataclasses_replace(ds, examples=exs[::-1])
  assert ({e.guid for e in datasets.hold_out(shuffled, 0.1, 0, 'held_out').examples}
          == {e.guid for e in dev.examples})
  other = datasets.hold_out(ds, 0.1, 1, 'held_out')
  assert {e.guid for e in other.examples} != {e.guid for e in dev.examples}
  with pytest.raises(ValueError, match='in \\(0, 1\\)'):
    datasets.hold_out(ds, 1.0, 0, 'rest')


def dataclasses_replace(obj, **kw):
  import dataclasses  # pylint: disable=g-import-not-at-top
  return dataclasses.replace(obj, **kw)


def test_dev_from_train_in_load_split():
  from configs import finetune as finetune_config  # pylint: disable=g-import-not-at-top
  from bert_jax.tasks import finetune  # pylint: disable=g-import-not-at-top
  c = finetune_config.get_config('drug_reviews')
  c.data.dev_from_train = 0.2
  c.data.eval_split = 'dev_from_train'
  train = finetune.load_split(c, 'train')
  dev = finetune.load_split(c, 'eval')
  whole = datasets.load('drug_reviews', 'train')
  assert len(train) + len(dev) == len(whole)
  assert not {e.guid for e in train.examples} & {e.guid for e in dev.examples}
  frac = {l: sum(e.label == l for e in dev.examples) /
          sum(e.label == l for e in whole.examples) for l in whole.label_names}
  assert all(abs(f - 0.2) < 0.03 for f in frac.values()), frac
  c.data.dev_from_train = 0.0
  with pytest.raises(ValueError, match='dev_from_train > 0'):
    finetune.load_split(c, 'eval')


# ------------------------------------------------------------ end to end
CI_SMOKE = ('configs/ablation.py:drug_reviews,variants=ce+focal,steps=30,'
            'max_len=32,train_examples=128,eval_examples=128')


def _check_report(out, variants):
  rep = json.loads((out / 'report.json').read_text())
  assert rep['baseline'] == 'ce'
  assert rep['budget']['max_seq_length'] in (32, 64)
  for v in variants:
    g = rep['groups'][v]
    assert set(g) >= {'selected', 'dev', 'test', 'grid'}
    assert len(g['grid']) == 2 and g['selected'] in [t['point'] for t in g['grid']]
    assert g['test']['n'] == 3 and g['test']['seeds'] == [0, 1, 2]
    assert set(g['per_class_f1']) == {'negative', 'neutral', 'positive'}
  for v in variants:
    if v == 'ce':
      continue
    d = rep['differences'][v]
    assert set(d) >= {'ci', 'p_holm', 'p', 'diff'}, d
    assert d['ci'][0] <= d['ci'][1] and 0 < d['p_holm'] <= 1
  text = (out / 'report.md').read_text()
  assert '**Budget:**' in text and 'Holm' in text and '## Per-class F1' in text
  for png in ('per_class_f1.png', 'dev_vs_hparams.png', 'gold_prob_hist.png'):
    assert (out / png).stat().st_size > 5_000
  return rep


def test_budget_reports_the_model_size_only_a_fresh_model_has():
  from experiments import tune_report  # pylint: disable=g-import-not-at-top

  def run(model):
    return types.SimpleNamespace(results=dict(
        final_step=30, config=dict(data=dict(max_seq_length=64),
                                   batch_size=16, model=model)))
  # config.model holds what the preset set; BertConfig has the rest.
  fresh = tune_report.budget(run({'init_from': '', 'hidden_size': 32}))
  assert fresh['init_from'] == '(random init)'
  assert fresh['model'] == dict(hidden=32, layers=12)
  # A pretrained model's sizes are in its directory, not in the run config.
  assert tune_report.budget(run({'init_from': 'minilm'}))['model'] is None


def test_smoke_protocol_end_to_end(tmp_path, monkeypatch):
  """2 variants x 2 trials x 1 tuning seed, then 2 x 3 final seeds, of a
  tiny random-init BERT for 30 steps; rerunning runs nothing."""
  out = tmp_path / 'tune'
  monkeypatch.chdir(REPO)
  assert tune.main([f'--config={CI_SMOKE}', '--smoke', f'--workdir={out}',
                    '--parallel=2']) == 0
  rep = _check_report(out, ['ce', 'focal'])
  sel = json.loads((out / 'selection.json').read_text())
  assert {r['run'] for r in sel['rows']} == {
      p.parent.name for p in (out / 'stage1').glob('*/results.json')}
  assert len(list((out / 'stage2').glob('*/results.json'))) == 6
  # Finished runs keep no resume state; stage 2 keeps the tested models.
  assert not list(out.glob('stage*/*/best'))
  assert not list((out / 'stage1').glob('*/checkpoints'))
  assert len(list((out / 'stage2').glob('*/checkpoints/*'))) >= 6
  first = (out / 'report.json').read_text()
  assert tune.main([f'--config={CI_SMOKE}', '--smoke',
                    f'--workdir={out}']) == 0
  assert (out / 'report.json').read_text() == first   # nothing retrained
  assert rep['groups']['ce']['dev'] == max(
      t['dev'] for t in rep['groups']['ce']['grid'])


def test_prune_finished_run_keeps_what_a_finished_run_still_needs(tmp_path):
  def run(name, results=True):
    d = tmp_path / name
    (d / 'checkpoints' / '10').mkdir(parents=True)
    (d / 'best').mkdir()
    if results:
      (d / 'results.json').write_text(json.dumps({'final_eval': {'f1': 1}}))
    (d / 'predictions.jsonl').write_text('{}\n')
    return d
  def left(d):
    return sorted(p.name for p in d.iterdir())
  d = run('trial')
  tune.prune_finished_run(d, keep_final=False)
  assert left(d) == ['predictions.jsonl', 'results.json']
  d = run('final')      # the scored final state stays
  tune.prune_finished_run(d, keep_final=True)
  assert left(d) == ['checkpoints', 'predictions.jsonl', 'results.json']
  d = run('unfinished', results=False)         # may be resumed
  tune.prune_finished_run(d, keep_final=False)
  assert left(d) == ['best', 'checkpoints', 'predictions.jsonl']


@pytest.mark.slow
def test_full_smoke_protocol(tmp_path, monkeypatch):
  """Every drug_reviews variant that validates on this branch (about 50
  runs: 15+ minutes on 2 cores)."""
  from configs import ablation  # pylint: disable=g-import-not-at-top
  have = list(ablation.TUNE_VARIANTS)
  out = tmp_path / 'tune'
  monkeypatch.chdir(REPO)
  spec = f'configs/ablation.py:drug_reviews,variants={"+".join(have)}'
  assert tune.main([f'--config={spec}', '--smoke', f'--workdir={out}',
                    '--parallel=2']) == 0
  rep = _check_report(out, have)
  assert len(rep['differences']) == len(have) - 1



def test_histogram_probes_and_stage2_runs():
  spec = _spec(histogram=[('CE', 'ce', {}),
                          ('focal 1', 'focal', {'loss.gamma': 1.0}),
                          ('focal 2', 'focal', {'loss.gamma': 2.0}),
                          ('absent', 'dsc', {'loss.alpha': 0.0})])
  spec['variants']['focal']['search'].insert(
      0, [{'optim.lr': 1e-3}, {'optim.lr': 3e-3}])
  spec['variants']['ce']['search'].append([{'loss.label_smoothing': 0.0},
                                           {'loss.label_smoothing': 0.1}])
  tune.check_spec(spec, 'x')
  trials = {v: tune.expand_trials(s) for v, s in spec['variants'].items()}
  assert [t['loss.gamma'] for t in trials['focal']] == [1.0, 2.0, 1.0, 2.0]
  plan = tune.Plan('x.py', 'a', spec, trials)
  # focal: trial 1 (lr 1e-3, gamma 2) selected; gamma 1's best is trial 2.
  selection = {'ce': dict(trial=0, means={0: .5, 1: .4, 2: .3, 3: .2}),
               'focal': dict(trial=1, means={0: .1, 1: .6, 2: .3, 3: .6})}
  probes = tune.histogram_probes(plan, selection)
  assert probes == [('focal 1', 'focal', 2)]
  entries = tune.stage2_entries(plan, {'ce': 0, 'focal': 1}, probes)
  assert [(e.variant, e.trial, e.seed, e.probe) for e in entries] == [
      ('ce', 0, 0, ''), ('focal', 1, 0, ''), ('ce', 0, 1, ''),
      ('focal', 1, 1, ''), ('ce', 0, 2, ''), ('focal', 1, 2, ''),
      ('focal', 2, 0, 'focal 1')]
  assert all(e.run.overrides['data.eval_split'] == 'test' for e in entries)
  assert entries[-1].run.overrides['loss.gamma'] == 1.0
  assert len({e.run.name for e in entries}) == len(entries)


def _group(name, preds, gold, seeds=(0, 1, 2)):
  from experiments import report as report_lib  # pylint: disable=g-import-not-at-top
  runs = []
  for s in seeds:
    rows = [dict(guid=f'g{i}', label=g, prediction=p)
            for i, (g, p) in enumerate(zip(gold, preds))]
    results = dict(task='classification', config={'eval_logit_adjustment_tau': 0.0},
                   final_eval={'per_class': {'a': {}, 'b': {}},
                               'minority_class': 'b'})
    runs.append(report_lib.RunResult(f'{name}-{s}', {'seed': s},
                                     pathlib.Path('.'), results, rows))
  return report_lib.Group(name, {}, runs)


def test_per_class_f1_mean_and_sample_std_over_seeds():
  from experiments import report as report_lib  # pylint: disable=g-import-not-at-top
  from experiments import tune_report  # pylint: disable=g-import-not-at-top
  runs = [report_lib.RunResult(f'r{s}', {'seed': s}, pathlib.Path('.'), dict(
      final_eval={'f1/a': a, 'f1/b': b, 'accuracy': 0.5}), None)
          for s, (a, b) in enumerate([(0.5, 0.0), (0.7, 0.2), (0.9, 0.1)])]
  got = tune_report.per_class_f1(report_lib.Group('g', {}, runs))
  assert set(got) == {'a', 'b'}
  assert got['a'] == pytest.approx([0.7, 0.2])     # std of .5 .7 .9: 0.2
  assert got['b'] == pytest.approx([0.1, 0.1])


def test_gold_probs_read_classification_and_tagging_predictions():
  from experiments import report as report_lib  # pylint: disable=g-import-not-at-top
  from experiments import tune_report  # pylint: disable=g-import-not-at-top
  classification = report_lib.RunResult('c', {}, pathlib.Path('.'), dict(
      final_eval={'per_class': {'neg': {}, 'pos': {}}}), [
          dict(guid='a', label='pos', probs=[0.2, 0.8]),
          dict(guid='b', label='neg', probs=[0.6, 0.4])])
  # Tagging: one probability per word the model tagged whose gold tag is
  # not O; cut words (None) are left out.
  tagging = report_lib.RunResult('t', {}, pathlib.Path('.'), dict(
      final_eval={}), [
          dict(guid='s1', gold=['B-PER', 'E-PER', 'O', 'S-LOC'],
               gold_probs=[0.9, None, 0.99, 0.3]),
          dict(guid='s2', gold=['S-ORG'], gold_probs=[0.5])])
  no_probs = report_lib.RunResult('n', {}, pathlib.Path('.'), dict(
      final_eval={}), [dict(guid='s1', gold=['O'], pred=['O'])])
  np.testing.assert_array_equal(tune_report.gold_probs(classification),
                                [0.8, 0.6])
  np.testing.assert_array_equal(tune_report.gold_probs(tagging),
                                [0.9, 0.3, 0.5])
  assert tune_report.has_gold_probs(classification)
  assert tune_report.has_gold_probs(tagging)
  assert not tune_report.has_gold_probs(no_probs)


def test_compare_differences_intervals_and_holm():
  from experiments import tune_report  # pylint: disable=g-import-not-at-top
  gold = ['a', 'b'] * 10
  groups = {'ce': _group('ce', ['a'] * 20, gold),          # macro-F1 1/3
            'perfect': _group('perfect', gold, gold),       # macro-F1 1
            'same': _group('same', ['a'] * 20, gold)}
  metric = {v: 'macro_f1' for v in groups}
  got = tune_report.compare(groups, 'ce', metric, num_resamples=999)
  # all-'a' on a balanced set: F1(a) = 2 (1/2)(1) / (3/2) = 2/3, F1(b) = 0.
  assert got['perfect']['diff'] == pytest.approx(1 - 1 / 3)
  assert got['same']['diff'] == 0 and got['same']['ci'] == [0.0, 0.0]
  assert got['same']['p'] == 1.0 and got['same']['p_holm'] == 1.0
  assert got['perfect']['ci'][0] > 0.4
  assert got['perfect']['p'] == pytest.approx(2 / 1000)
  assert got['perfect']['p_holm'] == pytest.approx(2 * 2 / 1000)   # m = 2
  assert got['perfect']['significant'] and not got['same']['significant']


def test_slurm_launcher_writes_stage_one_and_stops(tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(REPO)
  out = tmp_path / 'tune'
  assert tune.main([f'--config={CI_SMOKE}', '--smoke', f'--workdir={out}',
                    '--launcher=slurm', '--parallel=2']) == 0
  script = (out / 'stage1' / 'sweep.sbatch').read_text()
  assert '#SBATCH --array=0-3%2' in script
  assert script.count('--config.data.eval_split=dev') == 4
  assert 'rerun this command for stage 2' in capsys.readouterr().out
  assert not (out / 'stage2').exists() and not (out / 'selection.json').exists()
