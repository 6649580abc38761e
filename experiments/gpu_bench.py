r"""The GPU check's benchmark rows and its report (experiments/gpu_check.sh).

  python -m experiments.gpu_bench rows --part=b|d --jsonl=FILE
      [--budget-s=S] [--dry]
  python -m experiments.gpu_bench render --out-dir=DIR --status=FILE [--dry]

`rows --part=b`: MLM+NSP pretraining train steps, bf16 compute (fp32
weights), for BERT-base and BERT-large at T = 128 and 512: bert_jax with
`attention_implementation` 'cudnn' and 'xla', and HF PyTorch
`BertForPreTraining` (SDPA attention, bf16 autocast) on the same exported
weights and batch. `--part=d`: one rematerialisation / batch-size point,
BERT-large at T = 512 and twice b's batch, with configs/pretrain.py:large's
execution options (`scan_layers`, remat 'dots_no_batch'). Every row runs in a fresh process through
`experiments.benchmark`'s workers (the same step code as the side-by-side
benchmark) and is appended to `--jsonl` as soon as it finishes, so a row
that a time box cuts off loses only itself. Rows run in order of value
(BERT-large first); those that would start past `--budget-s` are recorded
as skipped.

Attention-probability dropout is 0 in every row (hidden dropout stays 0.1):
the fused kernels have no dropout on the probabilities, so with it bert_jax
computes attention explicitly whatever `attention_implementation` says
(model.SelfAttention). The peer gets the same config.

MFU = sequences/s x model FLOPs per sequence / the device's dense bf16 peak
(`train.PEAK_FLOPS`); model FLOPs are bert_jax's count of the job
(`pretraining.training_flops_per_example`: 3 x forward, the last layer at the
P + 1 rows the heads read) for every implementation, so MFU compares useful
work per second. The peer does more arithmetic (its MLM logits at all T
positions): XLA's own count of bert_jax's step is in the GFLOP column.

`--dry` swaps in the `tiny` size at T = 16 on whatever JAX runs on, and
runs one bert_jax row and the peer in part b: its 'cudnn' rows use JAX's
default attention (cuDNN's kernel is GPU-only), and say so in the table.

`render` writes `gpu_check.md` in `--out-dir` from the status file the shell
script keeps (one line per step: name, exit code, seconds) and the logs and
row files the steps wrote there, and prints it.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional

try:
  from experiments import bench_utils as bu
  from experiments import benchmark
except ImportError:  # run as a script
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
  from experiments import bench_utils as bu  # pylint: disable=g-import-not-at-top
  from experiments import benchmark  # pylint: disable=g-import-not-at-top

# Batch per (size, T): about 16K tokens a step for BERT-large, 32K for base
# (NVIDIA's BERT recipes run 64-256 sequences per GPU at T = 128).
BATCH = {('base', 128): 256, ('base', 512): 64,
         ('large', 128): 128, ('large', 512): 32}
# (size, T, B, remat policy, scan_layers) of part d: twice part b's batch at
# T = 512, with the execution options of configs/pretrain.py:large.
REMAT_POINT = ('large', 512, 64, 'dots_no_batch', True)
DRY_SIZE, DRY_SEQ, DRY_BATCH = 'tiny', 16, 2
DRY_REMAT_POINT = (DRY_SIZE, DRY_SEQ, 4, 'dots_no_batch', True)
# Rows of part b in order of value: the targets are BERT-large's.
# (size, T, impl, attention)
ROW_ORDER = [(size, seq, impl, attn)
             for size in ('large', 'base') for seq in (128, 512)
             for impl, attn in (('bert_jax', 'cudnn'), ('hf_torch', 'sdpa'),
                                ('bert_jax', 'xla'))]
STEPS = {'a': 'a. GPU tests (tests/test_gpu.py)',
         'b': 'b. train step, bf16: bert_jax cuDNN / XLA attention vs HF PyTorch',
         'c': 'c. bench_losses',
         'd': 'd. remat / batch point'}
VERSIONS = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint',
            'ml-collections', 'transformers', 'torch')


def _log(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


def plan(part: str, dry: bool) -> list[dict[str, Any]]:
  """Row specs of a part, in run order."""
  if part == 'd':
    size, seq, batch, remat, scan = DRY_REMAT_POINT if dry else REMAT_POINT
    return [dict(size=size, seq=seq, batch=batch, impl='bert_jax',
                 attention='cudnn', remat=remat, scan_layers=scan)]
  rows = []
  for size, seq, impl, attn in ROW_ORDER:
    if dry:
      # One bert_jax row and the peer: each row is a process and a compile.
      if (size, seq) != ('large', 128) or attn == 'xla':
        continue
      size, seq = DRY_SIZE, DRY_SEQ
    rows.append(dict(size=size, seq=seq, impl=impl, attention=attn,
                     batch=DRY_BATCH if dry else BATCH[(size, seq)],
                     remat='none', scan_layers=False))
  return rows


def _spec(row: dict[str, Any], weights_dir: pathlib.Path, dry: bool,
          repeats: int, warmup: int) -> dict[str, Any]:
  attention = row['attention']
  if row['impl'] == 'bert_jax':
    # cuDNN's fused attention is GPU-only: the dry run takes JAX's default.
    attention = None if (dry and attention == 'cudnn') else attention
  else:
    attention = None   # the torch worker always asks for SDPA
  return dict(workload='pretrain', size=row['size'], impl=row['impl'],
              arch=bu.SIZES[row['size']], batch=row['batch'], seq=row['seq'],
              remat=row['remat'], scan_layers=row['scan_layers'],
              dtype='bfloat16', attention=attention,
              attention_dropout=0.0, repeats=repeats, warmup=warmup, seed=0,
              weights_dir=str(weights_dir), guard=False)


def run_rows(args) -> int:
  rows = plan(args.part, args.dry)
  jsonl = pathlib.Path(args.jsonl)
  jsonl.parent.mkdir(parents=True, exist_ok=True)
  t_start = time.monotonic()
  repeats = args.repeats or (2 if args.dry else 10)
  warmup = args.warmup if args.warmup is not None else (0 if args.dry else 2)
  failed = 0
  with tempfile.TemporaryDirectory(prefix='gpu_check_') as tmp_name:
    tmp = pathlib.Path(tmp_name)
    for i, row in enumerate(rows):
      left = args.budget_s - (time.monotonic() - t_start)
      record = dict(row, part=args.part, dry=args.dry)
      if left < 5:
        record['status'] = 'skipped (time box)'
      else:
        spec = _spec(row, tmp / f'weights-{row["size"]}', args.dry, repeats,
                     warmup)
        t0 = time.monotonic()
        try:
          r = benchmark._summary(benchmark._run_worker(spec, tmp, timeout=left))  # pylint: disable=protected-access
          r.pop('times', None)
          record.update(r, status='ok', attention=row['attention'],
                        attention_run=spec['attention'])
        except subprocess.TimeoutExpired:
          record['status'] = f'timeout after {left:.0f} s'
          failed += 1
        except Exception as e:  # pylint: disable=broad-except
          record['status'] = 'failed'
          record['error'] = str(e)[-3000:]
          failed += 1
        record['wall_s'] = time.monotonic() - t0
      _log(f'[{i + 1}/{len(rows)}] {row["size"]} T={row["seq"]} B={row["batch"]} '
           f'{row["impl"]} {row["attention"]} remat={row["remat"]}: '
           f'{record["status"]}'
           + (f', {record["step_s"] * 1e3:.1f} ms/step, '
              f'{record["batch"] / record["step_s"]:.1f} seq/s'
              if record['status'] == 'ok' else '')
           + (f'\n{record["error"]}' if 'error' in record else ''))
      with jsonl.open('a') as f:
        f.write(json.dumps(record) + '\n')
  return 1 if failed else 0


# ------------------------------------------------------------------- render
def _read_jsonl(path: pathlib.Path) -> list[dict[str, Any]]:
  if not path.exists():
    return []
  return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def _with_mfu(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Adds seq/s, and MFU where the device's peak is known. The torch rows
  take the model FLOPs (and peak) of bert_jax's row of the same size and T:
  the same count of the same job."""
  ref = {}
  for r in rows:
    if r.get('status') == 'ok' and 'model_flops_per_example' in r:
      ref.setdefault((r['size'], r['seq']), r)
  out = []
  for r in rows:
    r = dict(r)
    if r.get('status') == 'ok':
      r['seq_per_s'] = r['batch'] / r['step_s']
      src = r if 'model_flops_per_example' in r else ref.get((r['size'], r['seq']))
      flops = src and src.get('model_flops_per_example')
      peak = src and src.get('peak_flops')
      r['mfu'] = r['seq_per_s'] * flops / peak if flops and peak else None
    out.append(r)
  return out


def _impl_title(r: dict[str, Any]) -> str:
  if r['impl'] == 'hf_torch':
    return 'HF PyTorch (SDPA, bf16 autocast)'
  attn = r['attention']
  if r.get('status') == 'ok' and r.get('attention_run') != attn:
    attn = f'{attn} -> {r.get("attention_run") or "default"} (dry: CPU)'
  return f'bert_jax ({attn})'


def bench_table(rows: list[dict[str, Any]]) -> str:
  header = ['part', 'size', 'T', 'B', 'implementation', 'remat', 'step ms',
            'seq/s', 'tokens/s', 'MFU', 'GFLOP/step (XLA)', 'peak GiB',
            'compile s']
  table = []
  for r in _with_mfu(rows):
    ok = r.get('status') == 'ok'
    cells = [r['part'], r['size'], r['seq'], r['batch'], _impl_title(r),
             r['remat'] + (', scan' if r.get('scan_layers') else '')]
    if ok:
      mem = r.get('mem_bytes')
      cells += [bu.fmt(r['step_s'] * 1e3, 1), bu.fmt(r['seq_per_s'], 1),
                bu.fmt_int(r['tokens_per_s']),
                f'{r["mfu"]:.1%}' if r.get('mfu') else '—',
                # XLA's cost analysis counts a scanned loop's body once.
                '—' if r.get('scan_layers') else bu.sig(r.get('hlo_gflops')),
                bu.fmt(mem / 2**30, 1) if mem else '—',
                bu.fmt(r.get('compile_s'), 1)]
    else:
      cells += [r.get('status', '?')] + ['—'] * 6
    table.append(cells)
  return bu.markdown_table(header, table)


def _status(path: pathlib.Path) -> dict[str, tuple[int, float]]:
  out = {}
  if path.exists():
    for line in path.read_text().splitlines():
      name, rc, secs = line.split('\t')
      out[name] = (int(rc), float(secs))
  return out


def _pytest_summary(log: pathlib.Path) -> str:
  if not log.exists():
    return 'no log'
  lines = [l.strip('= ') for l in log.read_text().splitlines()
           if re.search(r'\d+ (passed|failed|skipped|error)', l)
           or 'no tests ran' in l]
  return lines[-1] if lines else 'no pytest summary'


def _losses_table(log: pathlib.Path) -> str:
  """The Markdown table bench_losses printed (its first one)."""
  if not log.exists():
    return ''
  lines = log.read_text().splitlines()
  start = next((i for i, l in enumerate(lines) if l.startswith('|')), None)
  if start is None:
    return ''
  end = start
  while end < len(lines) and lines[end].startswith('|'):
    end += 1
  return '\n'.join(lines[start:end])


def _versions() -> str:
  parts = []
  for pkg in VERSIONS:
    try:
      parts.append(f'{pkg} {importlib.metadata.version(pkg)}')
    except importlib.metadata.PackageNotFoundError:
      parts.append(f'{pkg} —')
  return ', '.join(parts) + f'; Python {sys.version.split()[0]}'


def render(args) -> str:
  out_dir = pathlib.Path(args.out_dir)
  status = _status(pathlib.Path(args.status))
  b_rows = _read_jsonl(out_dir / 'b_rows.jsonl')
  d_rows = _read_jsonl(out_dir / 'd_rows.jsonl')
  rows = b_rows + d_rows
  device = next((r['device'] for r in rows if r.get('device')
                 and r['impl'] == 'bert_jax'), 'unknown device')

  def state(step):
    if step not in status:
      return 'not run', '—'
    rc, secs = status[step]
    word = {0: 'ok', 124: 'TIMEOUT', 137: 'KILLED'}.get(rc, f'FAILED (exit {rc})')
    return word, f'{secs:.0f}'

  def n_ok(rs):
    return f'{sum(r.get("status") == "ok" for r in rs)} / {len(rs)} rows ok'

  losses_log = out_dir / 'c_losses.log'
  losses = _losses_table(losses_log)
  summary = {
      'a': _pytest_summary(out_dir / 'a_tests.log'),
      'b': n_ok(b_rows),
      'c': (f'{len(losses.splitlines()) - 2} loss rows' if losses
            else 'no table'),
      'd': n_ok(d_rows),
  }
  title = 'GPU check' + (' (DRY RUN on CPU: tiny sizes, no figures)'
                         if args.dry else '')
  md = [f'### {title}', '',
        f'`bash experiments/gpu_check.sh{" --dry" if args.dry else ""}`, '
        f'{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}; '
        f'device: {device}; {_versions()}.', '',
        bu.markdown_table(['step', 'status', 'seconds', 'result'],
                          [[STEPS[s], *state(s), summary[s]] for s in STEPS]),
        '', 'Train steps (MLM+NSP pretraining, bf16 compute, fp32 weights, '
        'AdamW; attention dropout 0, hidden dropout 0.1; MFU = seq/s x '
        "bert_jax's model FLOPs per sequence / dense bf16 peak, the same "
        'count for the peer):', '', bench_table(rows) if rows else '(no rows)']
  if losses:
    md += ['', 'bench_losses (time per forward+backward relative to plain '
           'CE, same run):', '', losses]
  text = '\n'.join(md) + '\n'
  (out_dir / 'gpu_check.md').write_text(text)
  print(text)
  return text


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  sub = p.add_subparsers(dest='cmd', required=True)
  r = sub.add_parser('rows', help='run the rows of part b or d')
  r.add_argument('--part', choices=('b', 'd'), required=True)
  r.add_argument('--jsonl', required=True, help='append one JSON line per row')
  r.add_argument('--budget-s', type=float, default=600.0,
                 help='start no row after this many seconds; a running row '
                 'is stopped at it')
  r.add_argument('--repeats', type=int, default=None,
                 help='timed steps per row (default 10; 2 with --dry)')
  r.add_argument('--warmup', type=int, default=None,
                 help='untimed steps after the first (default 2; 0 with --dry)')
  r.add_argument('--dry', action='store_true')
  g = sub.add_parser('render', help='write and print gpu_check.md')
  g.add_argument('--out-dir', required=True)
  g.add_argument('--status', required=True)
  g.add_argument('--dry', action='store_true')
  args = p.parse_args(argv)
  if args.cmd == 'rows':
    sys.exit(run_rows(args))
  render(args)


if __name__ == '__main__':
  main()
