"""Smoke tests of experiments/benchmark.py: it runs end to end and writes its
tables. No timing is asserted anywhere: speed is the benchmark's business."""

import argparse
import datetime
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from experiments import bench_utils as bu
from experiments import benchmark

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(tmp_path, *args):
  out = tmp_path / 'BENCH.md'
  env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL='2')
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.benchmark', '--quick',
       f'--out={out}', *args], cwd=ROOT, env=env, capture_output=True,
      text=True, timeout=1800)
  assert proc.returncode == 0, proc.stderr[-6000:]
  text = out.read_text()
  assert text == proc.stdout, 'the printed and the written tables differ'
  return text


def _table_rows(text, heading):
  """Rows ({header: cell}) of the first Markdown table after `heading`."""
  table = []
  for line in text.split(heading, 1)[1].splitlines():
    if line.startswith('|'):
      table.append(line)
    elif table:
      break
  cells = lambda line: [c.strip() for c in line.strip('|').split('|')]
  header = cells(table[0])         # table[1] is the rule under it
  return [dict(zip(header, cells(line))) for line in table[2:]]


def test_quick_pretraining_run_writes_both_tables(tmp_path):
  text = _run(tmp_path, '--workloads=pretrain', f'--json={tmp_path / "r.json"}')
  raw = json.loads((tmp_path / 'r.json').read_text())
  assert [r['impl'] for r in raw['rows']] == list(benchmark.IMPLS)
  assert all(len(r['times']) == 1 for r in raw['rows'] + raw['scaling'])
  for heading in ('## Train step throughput', '## Targets',
                  "## How bert_jax's step cost grows", '## Method'):
    assert heading in text
  assert 'load average (1/5/15 min) before the run' in text
  (row,) = _table_rows(text, '## Train step throughput')
  assert (row['workload'], row['size'], row['B x T']) == (
      'MLM+NSP pretraining', 'tiny', '2 x 16')
  for impl in ('bert_jax', 'HF Flax', 'HF PyTorch'):
    assert float(row[f'{impl} tok/s'].replace(',', '')) > 0, row
  for peer in ('HF Flax', 'HF PyTorch'):
    assert float(row[f'bert_jax / {peer}'].rstrip('x')) > 0, row
  detail = _table_rows(text, '## Step time, compile time')
  assert [r['impl'] for r in detail] == ['bert_jax', 'HF Flax', 'HF PyTorch']
  # The peers reproduced bert_jax's loss and gradient norm (equal work).
  for r in detail[1:]:
    assert float(r['guard loss']) < 1e-4, r
    assert float(r['guard grad']) < 1e-3, r
  # XLA's FLOP count is there for both JAX rows: the peer's MLM head runs
  # at all T positions, so it asks for more arithmetic.
  assert detail[2]['GFLOP/step'] == '—'
  flops = {r['impl']: r.get('hlo_gflops') for r in raw['rows']}
  assert flops['hf_flax'] > flops['bert_jax'] > 0
  (target,) = _table_rows(text, '## Targets')
  assert float(target['FLOP ratio'].rstrip('x')) > 1.0
  scaling = _table_rows(text, "## How bert_jax's step cost grows")
  assert [r['remat'] for r in scaling] == ['none', 'full']
  # Full remat recomputes the forward pass: more FLOPs for the same step.
  none, full = raw['scaling']
  assert full['hlo_gflops'] > none['hlo_gflops'] > 0


@pytest.mark.slow
def test_quick_run_of_every_workload(tmp_path):
  text = _run(tmp_path, '--no-scaling')
  rows = _table_rows(text, '## Train step throughput')
  assert [r['workload'] for r in rows] == [bu.WORKLOAD_TITLES[w]
                                           for w in bu.WORKLOADS]
  detail = _table_rows(text, '## Step time, compile time')
  assert len(detail) == 9


@pytest.mark.parametrize('seq', [16, 128, 256])
def test_pretraining_batch_labels_agree_between_the_two_conventions(seq):
  b = bu.make_batch('pretrain', 4, seq, 30522, seed=1)
  p, m = bu.max_predictions(seq), bu.num_masked(seq)
  assert b['masked_lm_positions'].shape == (4, p)
  assert {128: (20, 19), 256: (40, 38)}.get(seq, (p, m)) == (p, m)
  for i in range(4):
    pos = b['masked_lm_positions'][i, :m]
    # HF's labels: the original ids at exactly bert_jax's masked positions.
    assert np.flatnonzero(b['hf_labels'][i] != -100).tolist() == pos.tolist()
    np.testing.assert_array_equal(b['hf_labels'][i, pos],
                                  b['masked_lm_ids'][i, :m])
    assert (b['input_ids'][i, pos] == bu.MASK_ID).all()
    np.testing.assert_array_equal(b['masked_lm_weights'][i],
                                  np.arange(p) < m)


def test_tagging_batch_marks_unweighted_tokens_minus_100():
  b = bu.make_batch('tag', 3, 32, 1000, seed=0)
  np.testing.assert_array_equal(b['hf_labels'] == -100,
                                b['label_weights'] == 0)
  assert (b['label_weights'][:, 0] == 0).all()


def test_rounds_pool_the_step_times():
  rounds = [dict(impl='hf_flax', workload='tag', size='small', batch=16,
                 seq=128, times=[1.0, 3.0], first_s=f, mem_bytes=m,
                 loadavg_start=load)
            for f, m, load in ((10.0, 5, 1.0), (20.0, 7, 3.0), (30.0, 6, 2.0))]
  row = benchmark._summary(benchmark._merge(rounds))
  assert row['rounds'] == 3 and len(row['times']) == 6
  assert row['step_s'] == 2.0 and row['compile_s'] == 18.0
  assert row['mem_bytes'] == 7 and row['loadavg_start'] == 2.0


def test_guard_stops_a_run_whose_peer_computes_something_else():
  spec = dict(impl='hf_flax', workload='pretrain', size='tiny',
              reference=dict(loss=7.0, grad_norm=2.0))
  ok = dict(platform='cpu', guard=dict(loss=7.0000001, grad_norm=2.000001))
  benchmark._check_guard(spec, ok)
  assert ok['guard']['loss_rel_diff'] < 1e-6
  bad = dict(platform='cpu', guard=dict(loss=7.01, grad_norm=2.0))
  with pytest.raises(AssertionError, match='not comparable'):
    benchmark._check_guard(spec, bad)


def _fake_row(impl, workload, tokens_per_s):
  step = 16 * 128 / tokens_per_s
  return benchmark._summary(dict(
      impl=impl, workload=workload, size='small', batch=16, seq=128,
      remat='none', first_s=step + 3.0, times=[step, step], mem_bytes=2**30,
      mem_kind='host RSS', loadavg_start=0.1,
      guard=dict(loss=10.0, grad_norm=1.0, loss_rel_diff=1e-7,
                 grad_norm_rel_diff=1e-7)))


def test_targets_are_judged_from_the_ratios():
  rows = [_fake_row('bert_jax', 'pretrain', 3000),
          _fake_row('hf_flax', 'pretrain', 1000),     # 3.0x >= 2.0x: met
          _fake_row('hf_torch', 'pretrain', 2500),    # 1.2x < 1.5x: not met
          _fake_row('bert_jax', 'tag', 900),
          _fake_row('hf_flax', 'tag', 1000),          # 0.9x < 1.0x: not met
          _fake_row('hf_torch', 'tag', 500)]          # 1.8x: met
  info = dict(platform='cpu', cpu='test cpu', cores=2, kind='cpu',
              versions={k: '0' for k in ('jax', 'jaxlib', 'flax', 'optax',
                                         'transformers', 'torch')})
  text = benchmark.render(
      rows, [], info=info, started=datetime.datetime(2026, 1, 1),
      load_before=(3.0, 3.0, 3.0), load_after=(3.0, 3.0, 3.0), repeats=2,
      warmup=1, argv=[])
  targets = {r['workload']: (r['vs HF Flax'], r['vs HF PyTorch'])
             for r in _table_rows(text, '## Targets')}
  assert targets['MLM+NSP pretraining'] == ('met (3.00x vs 2x)',
                                            'NOT met (1.20x vs 1.5x)')
  assert targets['token tagging (dice)'] == ('NOT met (0.90x vs 1x)',
                                             'met (1.80x vs 1.5x)')
  assert {r['FLOP ratio'] for r in _table_rows(text, '## Targets')} == {'—'}
  assert 'machine was not quiet' in text
  (compile_s,) = {r['compile s'] for r in _table_rows(text, '## Step time')
                  if r['impl'] == 'bert_jax'}
  assert compile_s == '3.0'


def test_sections_of_other_scripts_survive_a_rewrite(tmp_path):
  path = str(tmp_path / 'B.md')
  with open(path, 'w') as f:
    f.write('# generated\nold table\n')
  bu.write_section(path, 'bench_epoch', 'epoch table 1')
  bu.write_section(path, 'other', 'other table')
  bu.write_section(path, 'bench_epoch', 'epoch table 2')   # replaced in place
  text = open(path).read()
  assert text.count('epoch table') == 1 and 'epoch table 2' in text
  assert text.index('epoch table 2') < text.index('other table')
  # Rewritten in place, the section keeps its blank line before the next.
  assert '<!-- bench_epoch:end -->\n\n<!-- other:start -->' in text
  kept = bu.sections_after(path, '')
  assert 'old table' not in kept
  assert 'epoch table 2' in kept and 'other table' in kept
  assert 'epoch table' not in bu.sections_after(path, 'bench_epoch')


def test_host_info_line(monkeypatch):
  import datetime  # pylint: disable=g-import-not-at-top
  import platform  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(bu.os, 'getloadavg', lambda: (1.25, 0.0, 0.0))
  monkeypatch.setattr(bu, 'num_cores', lambda: 3)
  monkeypatch.setattr(bu, 'cpu_model', lambda: 'Some CPU')
  assert bu.host_info('cpu', 'jax 1') == (
      f'{datetime.date.today()}, {platform.machine()} (Some CPU), 3 cores, '
      'cpu, jax 1, '
      'load average before 1.2')


def _epoch_result(name, total, tokens, shapes=1):
  return dict(name=name, import_s=1.0, data_s=0.5, setup_s=1.5,
              train_s=total - 4.0, compile_s=1.0, eval_s=2.0, tokens=tokens,
              shapes=shapes, steps=33, accuracy=0.7, macro_f1=0.45)


def test_epoch_table_ratios_are_against_hf_flax():
  from experiments import bench_epoch  # pylint: disable=g-import-not-at-top
  args = argparse.Namespace(
      max_len=256, batch=16, epochs=1, limit=0)
  text = bench_epoch.render(
      [_epoch_result('bert_jax, bucketed + grouped', 50.0, 70_000, 4),
       _epoch_result('HF Flax, padded', 100.0, 135_168)], args, 'test')
  rows = _table_rows('x\n' + text, 'x')
  assert [r['HF Flax / this'] for r in rows] == ['2.00x', '1.00x']
  assert rows[0]['compiled shapes'] == '4'
  assert rows[0]['tokens fed'] == '70,000'
  # --only without the HF Flax worker: the rows, no ratio.
  text = bench_epoch.render(
      [_epoch_result('bert_jax, bucketed + grouped', 50.0, 70_000, 4)], args,
      'test')
  (row,) = _table_rows('x\n' + text, 'x')
  assert row['HF Flax / this'] == '—' and row['total s'] == '50.0'


def test_epoch_rounds_alternate_and_report_the_median_run():
  from experiments import bench_epoch  # pylint: disable=g-import-not-at-top
  workers = ['a', 'b', 'c']
  assert bench_epoch.round_order(workers, 0) == ['a', 'b', 'c']
  assert bench_epoch.round_order(workers, 1) == ['c', 'b', 'a']
  assert bench_epoch.round_order(workers, 2) == ['a', 'b', 'c']
  runs = [_epoch_result('HF Flax, padded', t, 135_168) for t in (90.0, 130.0, 100.0)]
  picked = bench_epoch.median_run(runs)
  assert bench_epoch.total(picked) == 100.0
  assert picked['round_totals'] == [90.0, 130.0, 100.0]
  # Even count: the lower middle run, never an average of two runs.
  assert bench_epoch.total(bench_epoch.median_run(runs[:2])) == 90.0
  args = argparse.Namespace(max_len=256, batch=16, epochs=1, limit=0, rounds=3)
  bucketed = bench_epoch.median_run(
      [_epoch_result('bert_jax, bucketed + grouped', t, 70_000, 4)
       for t in (50.0, 80.0, 40.0)])
  text = bench_epoch.render([bucketed, picked], args, 'test')
  assert 'median total of 3 rounds' in text
  assert 'HF Flax, padded 90.0 / 130.0 / 100.0' in text
  rows = _table_rows('x\n' + text, 'x')
  assert rows[0]['HF Flax / this'] == '2.00x'   # 100 / 50


def test_epoch_benchmark_rejects_an_unknown_worker(capsys):
  from experiments import bench_epoch  # pylint: disable=g-import-not-at-top
  with pytest.raises(SystemExit):
    bench_epoch.main(['--only=bert_jax_buckted'])
  err = capsys.readouterr().err
  assert "unknown worker(s) ['bert_jax_buckted']" in err
  assert 'bert_jax_bucketed, bert_jax_padded, hf_flax' in err
  with pytest.raises(SystemExit):
    bench_epoch.main(['--rounds=0'])
  assert '--rounds=0: must be >= 1' in capsys.readouterr().err


@pytest.mark.slow
def test_epoch_benchmark_small_run(tmp_path):
  out = tmp_path / 'B.md'
  env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL='2')
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.bench_epoch', '--limit=48',
       '--max_len=128', '--buckets=100', f'--out={out}'], cwd=ROOT, env=env,
      capture_output=True, text=True, timeout=1800)
  assert proc.returncode == 0, proc.stderr[-6000:]
  rows = _table_rows(out.read_text(), '## One fine-tuning epoch')
  by_name = {r['implementation']: r for r in rows}
  bucketed = by_name['bert_jax, bucketed + grouped']
  padded = by_name['bert_jax, padded']
  assert padded['tokens fed'] == by_name['HF Flax, padded']['tokens fed'] == (
      f'{3 * 16 * 128:,}')
  # Grouped by length, the 16 shortest of these 48 reviews (<= 98 tokens)
  # make a batch cut to 100.
  assert int(bucketed['tokens fed'].replace(',', '')) < 3 * 16 * 128
  for r in rows:
    assert 0 <= float(r['test acc']) <= 1


def test_input_table_compares_with_one_gpu():
  from experiments import bench_input  # pylint: disable=g-import-not-at-top
  text = bench_input.render(dict(examples=100, offline=580.0, shards=1160.0,
                                 in_memory=5800.0), 'test')
  rows = _table_rows(text, '## Host input pipeline')
  assert [r['vs 1 A100, BERT-large (580/s)'] for r in rows] == [
      '1.0x', '2.0x', '10.0x']
  assert rows[1]['examples/s per core'] == '1,160'


@pytest.mark.slow
def test_input_benchmark_small_run():
  from experiments import bench_input  # pylint: disable=g-import-not-at-top
  r = bench_input.measure(speeches=4, batch=16, steps=5)
  assert r['examples'] > 16
  assert min(r['offline'], r['shards'], r['in_memory']) > 0
