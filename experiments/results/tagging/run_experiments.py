r"""The recorded tagging runs: each a documented command line, one JSON row each.

  nice -n 10 python -m experiments.results.tagging.run_experiments \
      [--only=NAME,...] [--out=experiments/results/tagging/results.json]

Every run is `python -m bert_jax.main --config=configs/finetune.py:<preset>`
with the overrides listed in RUNS (seeded subsets, short sequences: a CPU
budget), in a fresh workdir under /tmp; the row keeps the command, the wall
time and the final eval metrics. Rows already in --out are kept and skipped,
so the script can be resumed.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shlex
import shutil
import subprocess
import sys
import time

# The machine these ran on was shared (load ~30 on 2 cores), so every run is
# small: seeded subsets, 64 sub-tokens, a tiny BERT from scratch for the
# Chinese sets (no Chinese weights ship here) and a few MiniLM steps for
# CoNLL.
TINY = ['--config.model.hidden_size=128', '--config.model.num_hidden_layers=2',
        '--config.model.num_attention_heads=2',
        '--config.model.intermediate_size=256', '--config.optim.lr=1e-3',
        '--config.batch_size=32', '--config.total_steps=150']
ZH = TINY + ['--config.data.max_train_examples=1000',
             '--config.data.max_eval_examples=300',
             '--config.data.max_seq_length=64']
EN = ['--config.data.max_seq_length=48', '--config.batch_size=8',
      '--config.total_steps=40', '--config.optim.lr=2e-4']
CRF = ['--config.crf=True']
# POS with MiniLM: no sentence cut (a cut word counts as a miss, and the
# baseline sees every word), more steps (45 tags to learn).
POS_EN = ['--config.data.max_seq_length=128', '--config.batch_size=8',
          '--config.total_steps=200', '--config.optim.lr=3e-4']


def _seeds(name, preset, extra, seeds=(0,)):
  return [(f'{name}_seed{s}', preset, extra + [f'--config.seed={s}'])
          for s in seeds]


RUNS = (   # in the order they ran (most informative first)
    _seeds('msra_ner', 'msra_ner', ZH)
    + _seeds('hkcancor_cws', 'hkcancor_cws', ZH)
    + _seeds('conll_sample', 'conll_sample', EN)
    + _seeds('conll_sample_crf', 'conll_sample', EN + CRF)
    + _seeds('hkcancor_cws_crf', 'hkcancor_cws', ZH + CRF)
    + _seeds('msra_ner_crf', 'msra_ner', ZH + CRF)
    + _seeds('hkcancor_pos', 'hkcancor_pos', ZH)
    + _seeds('conll_sample', 'conll_sample', EN, seeds=(1, 2))
    + _seeds('conll_sample_crf', 'conll_sample', EN + CRF, seeds=(1, 2))
    + _seeds('msra_ner', 'msra_ner', ZH, seeds=(1, 2))
    + _seeds('msra_ner_crf', 'msra_ner', ZH + CRF, seeds=(1, 2))
    + _seeds('conll_pos', 'conll_pos', POS_EN, seeds=(0, 1, 2))
    + _seeds('wsj_pos', 'wsj_pos', POS_EN, seeds=(0, 1, 2)))

KEEP = ('span_f1', 'span_precision', 'span_recall', 'seg_f1', 'seg_precision',
        'seg_recall', 'iv_recall', 'oov_recall', 'oov_rate', 'token_accuracy',
        'macro_f1', 'accuracy', 'crf_nll', 'ce_loss', 'truncated_sentences',
        'ill_formed_sentences', 'train_ill_formed_sentences')


def run_one(name, preset, extra, root: pathlib.Path) -> dict:
  workdir = root / name
  # Fresh: a workdir left by an earlier run would be resumed, not retrained.
  shutil.rmtree(workdir, ignore_errors=True)
  cmd = [sys.executable, '-m', 'bert_jax.main',
         f'--config=configs/finetune.py:{preset}', f'--workdir={workdir}'] + extra
  start = time.time()
  proc = subprocess.run(cmd, capture_output=True, text=True)
  wall = time.time() - start
  row = dict(name=name, preset=preset,
             command=' '.join(['python -m bert_jax.main',
                               f'--config=configs/finetune.py:{preset}',
                               f'--workdir=/tmp/{name}'] + extra),
             wall_s=round(wall, 1), returncode=proc.returncode)
  if proc.returncode:
    row['stderr_tail'] = proc.stderr[-3000:]
    return row
  results = json.loads((workdir / 'results.json').read_text())
  final = results['final_eval']
  row.update({k: final[k] for k in KEEP if k in final})
  row['steps'] = results.get('step', results.get('final_step'))
  return row


def main(argv=None) -> int:
  p = argparse.ArgumentParser()
  p.add_argument('--only', default='')
  p.add_argument('--out', default='experiments/results/tagging/results.json')
  p.add_argument('--root', default='/tmp/tagging_runs')
  args = p.parse_args(argv)
  out = pathlib.Path(args.out)
  rows = json.loads(out.read_text()) if out.exists() else []
  done = {r['name'] for r in rows if r.get('returncode') == 0}
  only = set(filter(None, args.only.split(',')))
  for name, preset, extra in RUNS:
    if name in done or (only and name not in only and preset not in only):
      continue
    row = run_one(name, preset, extra, pathlib.Path(args.root))
    rows = [r for r in rows if r['name'] != name] + [row]
    out.write_text(json.dumps(rows, indent=1) + '\n')
    print(json.dumps(row), flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
