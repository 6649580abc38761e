"""experiments/gpu_check.sh: its dry run on CPU, and the report's arithmetic.

The GPU check runs only when a GPU is lent, so CI runs the same script with
`--dry` (tiny sizes on CPU) to keep it from rotting between draws.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys

import pytest

from experiments import gpu_bench

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_dry_run_prints_the_table_with_every_step(tmp_path):
  out = tmp_path / 'out'
  env = dict(os.environ, JAX_PLATFORMS='cpu', OUT=str(out),
             PYTHON=sys.executable)
  proc = subprocess.run(['bash', 'experiments/gpu_check.sh', '--dry'],
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=1800)
  assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
  text = proc.stdout
  table = text[text.index('### GPU check (DRY RUN'):]
  # Every step ran and finished inside its time box.
  for step in gpu_bench.STEPS.values():
    row = next((l for l in table.splitlines() if l.startswith(f'| {step} |')),
               None)
    assert row is not None, f'no row for {step!r} in\n{table}'
    assert row.split('|')[2].strip() == 'ok', row
  # a: on CPU the GPU tests skip (and say so); b, d: the rows have figures.
  assert 'skipped' in next(l for l in table.splitlines()
                           if l.startswith('| a. '))
  bench = [l for l in table.splitlines() if l.startswith(('| b |', '| d |'))]
  assert [l.split('|')[5].strip() for l in bench] == [
      'bert_jax (cudnn -> default (dry: CPU))',
      'HF PyTorch (SDPA, bf16 autocast)', 'bert_jax (cudnn -> default (dry: CPU))']
  for line in bench:
    step_ms = line.split('|')[7].strip()
    assert float(step_ms) > 0, line
  assert '| ce | CE |' in table   # bench_losses' table came through
  # The report on disk is the one printed; at most 8 files, 2 folders deep.
  assert (out / 'gpu_check.md').read_text().strip() in text
  files = [p for p in out.rglob('*') if p.is_file()]
  assert len(files) <= 8, files
  assert all(len(p.relative_to(out).parts) <= 3 for p in files)
  rows = [json.loads(l) for l in (out / 'b_rows.jsonl').read_text().splitlines()]
  assert [r['status'] for r in rows] == ['ok', 'ok']


def test_dry_run_rejects_unknown_arguments():
  proc = subprocess.run(['bash', 'experiments/gpu_check.sh', '--wet'],
                        cwd=ROOT, capture_output=True, text=True, timeout=60)
  assert proc.returncode == 2 and 'usage' in proc.stderr


def test_gpu_plan_has_the_issues_rows():
  rows = gpu_bench.plan('b', dry=False)
  got = {(r['size'], r['seq'], r['impl'], r['attention']) for r in rows}
  want = {(s, t, i, a) for s in ('base', 'large') for t in (128, 512)
          for i, a in (('bert_jax', 'cudnn'), ('bert_jax', 'xla'),
                       ('hf_torch', 'sdpa'))}
  assert got == want and len(rows) == len(want)
  assert rows[0]['size'] == 'large'   # the targets' rows run first
  (d,) = gpu_bench.plan('d', dry=False)
  assert (d['size'], d['seq'], d['remat'], d['scan_layers']) == (
      'large', 512, 'dots_no_batch', True)
  assert d['batch'] > gpu_bench.BATCH[('large', 512)]


def test_mfu_is_seq_per_s_times_model_flops_over_peak():
  jax_row = dict(part='b', size='large', seq=128, batch=128, impl='bert_jax',
                 attention='cudnn', attention_run='cudnn', remat='none',
                 status='ok', step_s=0.5, tokens_per_s=128 * 128 / 0.5,
                 model_flops_per_example=1.0e12, peak_flops=989e12)
  torch_row = dict(jax_row, impl='hf_torch', attention='sdpa', step_s=1.0,
                   tokens_per_s=128 * 128 / 1.0)
  del torch_row['model_flops_per_example'], torch_row['peak_flops']
  cpu_row = dict(jax_row, size='tiny', peak_flops=None)
  failed = dict(part='d', size='large', seq=512, batch=64, impl='bert_jax',
                attention='cudnn', remat='full', status='timeout after 40 s')
  j, t, c, f = gpu_bench._with_mfu([jax_row, torch_row, cpu_row, failed])  # pylint: disable=protected-access
  # 256 seq/s x 1e12 FLOP / 989e12 FLOP/s; the peer: half the speed, same
  # count of the job.
  assert j['mfu'] == pytest.approx(256 * 1e12 / 989e12)
  assert t['mfu'] == pytest.approx(128 * 1e12 / 989e12)
  assert c['mfu'] is None and 'mfu' not in f
  table = gpu_bench.bench_table([jax_row, torch_row, failed])
  assert '| 25.9% |' in table and '| 12.9% |' in table
  assert 'timeout after 40 s' in table


def test_render_reports_timeouts_and_missing_steps(tmp_path):
  status = tmp_path / 'status'
  status.write_text('a\t0\t12\nb\t124\t250\n')
  (tmp_path / 'a_tests.log').write_text('.....\n5 passed in 11.2s\n')
  text = gpu_bench.render(argparse.Namespace(
      out_dir=str(tmp_path), status=str(status), dry=False))
  lines = {l.split('|')[1].strip(): l for l in text.splitlines()
           if l.startswith('| ') and '. ' in l.split('|')[1]}
  assert '| ok | 12 | 5 passed in 11.2s |' in lines[gpu_bench.STEPS['a']]
  assert '| TIMEOUT | 250 |' in lines[gpu_bench.STEPS['b']]
  assert '| not run |' in lines[gpu_bench.STEPS['c']]
  assert (tmp_path / 'gpu_check.md').read_text() == text
