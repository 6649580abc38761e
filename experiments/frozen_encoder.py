r"""Frozen-encoder transfer on drug_reviews: the head trained on cached encoder
outputs against the same run with the encoder run at every step.

  python -m experiments.frozen_encoder [--root=/tmp/frozen] [--extra=...]

Both runs are `python -m bert_jax.main --config=configs/finetune.py:drug_reviews`
with the encoder frozen (`optim.freeze='^bert/'`) and its dropout off, back
to back on the same machine; the second adds `cache_frozen_encoder=False`.
Prints a markdown table: wall time, the time of an epoch of training steps
(from the logged step rate), the one-off time to fill the cache, and the
eval metrics.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import shutil
import subprocess
import sys
import time

FROZEN = ["--config.optim.freeze=^bert/", '--config.model.hidden_dropout_prob=0',
          '--config.model.attention_probs_dropout_prob=0',
          '--config.optim.lr=1e-3']


def run(name: str, extra: list[str], root: pathlib.Path) -> dict:
  workdir = root / name
  # Fresh: a finished workdir would be resumed, not retrained.
  shutil.rmtree(workdir, ignore_errors=True)
  cmd = [sys.executable, '-m', 'bert_jax.main',
         '--config=configs/finetune.py:drug_reviews', f'--workdir={workdir}',
         '--alsologtostderr'] + FROZEN + extra
  start = time.time()
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  wall = time.time() - start
  if proc.returncode:
    raise SystemExit(f'{name} failed:\n{proc.stderr[-3000:]}')
  results = json.loads((workdir / 'results.json').read_text())
  rates = [h['steps_per_sec'] for h in results['train_history']
           if 'steps_per_sec' in h][1:]   # the first window holds compiles
  steps = results['final_step']
  epochs = float(results['config']['num_epochs'])
  stamps = [_seconds(line) for line in proc.stderr.splitlines()
            if 'frozen encoder: c' in line]
  final = results['final_eval']
  return dict(name=name, wall_s=wall,
              epoch_s=steps / epochs * sum(1 / r for r in rates) / len(rates),
              cache_s=stamps[-1] - stamps[0] if len(stamps) > 1 else 0.0,
              accuracy=final['accuracy'], macro_f1=final['macro_f1'])


def _seconds(log_line: str) -> float:
  h, m, s = re.search(r' (\d\d):(\d\d):(\d\d\.\d+) ', log_line).groups()
  return int(h) * 3600 + int(m) * 60 + float(s)


def main(argv=None) -> int:
  p = argparse.ArgumentParser()
  p.add_argument('--root', default='/tmp/frozen_encoder')
  p.add_argument('--extra', default='', help='more overrides, space-separated')
  args = p.parse_args(argv)
  root, extra = pathlib.Path(args.root), args.extra.split()
  rows = [run('cached', extra, root),
          run('encoder_each_step', ['--config.cache_frozen_encoder=False'] + extra,
              root)]
  print('| run | wall (s) | epoch of steps (s) | cache fill (s) | accuracy | macro-F1 |')
  print('|---|---|---|---|---|---|')
  for r in rows:
    print(f"| {r['name']} | {r['wall_s']:.0f} | {r['epoch_s']:.1f} | "
          f"{r['cache_s']:.0f} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} |")
  print(f"epoch ratio: {rows[1]['epoch_s'] / rows[0]['epoch_s']:.1f}x, "
        f"wall ratio: {rows[1]['wall_s'] / rows[0]['wall_s']:.2f}x")
  return 0


if __name__ == '__main__':
  sys.exit(main())
