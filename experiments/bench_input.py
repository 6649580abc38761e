r"""Host input-pipeline throughput for pretraining, per CPU core.

  python -m experiments.bench_input [--speeches=60] [--out=BENCHMARKS.md]

Measures, on one core (tokenizer threads pinned to 1), how many pretraining
examples per second each stage of `bert_jax.pretraining_data` delivers for
SOTU speeches at T = 128 (20 masked slots), and compares the serving rates
with what one accelerator consumes:

  offline      corpus -> sentences -> WordPiece -> NSP pairs -> static MLM
               masks -> features: the one-off shard-writing job (it runs
               once, on as many cores as you like, before training);
  shards       `PretrainingIterator.from_shards`: read ArrayRecord shards,
               deserialize, batch (static masks; what a training host does);
  in memory    `PretrainingIterator.from_instances` without masks: batches of
               instances for dynamic masking, which then happens on the
               device inside the jitted step.

Reference consumption: NVIDIA's BERT-large phase 1 (T = 128) on an A100
80GB, 580 sequences/s (the figure quoted in the performance issue); BERT-base
does about 3.1x fewer FLOPs per token, so at the same utilisation one GPU
would take about 1,800 sequences/s. An H100 is roughly 2-3x an A100.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault('RAYON_NUM_THREADS', '1')        # tokenizers: one core
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')

try:
  from experiments import bench_utils as bu
except ImportError:  # run as a script
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
  from experiments import bench_utils as bu  # pylint: disable=g-import-not-at-top

A100_BERT_LARGE = 580.0            # seq/s, T = 128 (issue text, NVIDIA)
BASE_OVER_LARGE_FLOPS = 3.1        # per token, 12x768 vs 24x1024


def _corpus(directory: pathlib.Path, speeches: int) -> str:
  from bert_jax.data import registry  # pylint: disable=g-import-not-at-top
  directory.mkdir(parents=True, exist_ok=True)
  for f in sorted(registry.fetch('sotu').glob('*.json'))[:speeches]:
    (directory / (f.stem + '.txt')).write_text(json.loads(f.read_text())['text'])
  return str(directory)


def _drain(iterator, steps: int, batch: int) -> float:
  t = time.perf_counter()
  for _ in range(steps):
    next(iterator)
  return steps * batch / (time.perf_counter() - t)


def measure(speeches: int, batch: int, steps: int) -> dict[str, float]:
  import numpy as np  # pylint: disable=g-import-not-at-top
  from bert_jax import checkpoints  # pylint: disable=g-import-not-at-top
  from bert_jax import pretraining_data as pd  # pylint: disable=g-import-not-at-top
  from bert_jax.data import registry  # pylint: disable=g-import-not-at-top
  vocab = registry.fetch(checkpoints.SHORT_NAMES['minilm']) / 'vocab.txt'
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    corpus = _corpus(tmp / 'corpus', speeches)
    t = time.perf_counter()
    stats = pd.main([f'--corpus={corpus}', f'--vocab={vocab}',
                     f'--out={tmp / "shards"}', '--max_seq_length=128',
                     '--max_predictions_per_seq=20', '--dupe_factor=1',
                     '--num_shards=4'])
    offline_s = time.perf_counter() - t
    n = int(stats['examples'])
    shards = pd.PretrainingIterator.from_shards(
        str(tmp / 'shards' / '*.array_record'), batch_size=batch, seed=0)
    shards_rate = _drain(shards, min(steps, shards.steps_per_epoch), batch)

    import tokenizers  # pylint: disable=g-import-not-at-top
    from bert_jax.data import corpora  # pylint: disable=g-import-not-at-top
    tok = tokenizers.BertWordPieceTokenizer(str(vocab), lowercase=True)
    docs = pd.tokenize_documents(
        list(corpora.load_documents(corpus)),
        lambda s: [e.ids for e in tok.encode_batch(s, add_special_tokens=False)])
    instances = pd.create_nsp_instances(
        docs, max_seq_length=128, short_seq_prob=0.1, dupe_factor=1,
        rng=np.random.default_rng(0), cls_id=101, sep_id=102)
    t = time.perf_counter()
    memory = pd.PretrainingIterator.from_instances(
        instances, max_seq_length=128, batch_size=batch, seed=0)
    featurise_s = time.perf_counter() - t
    memory_rate = _drain(memory, min(steps, memory.steps_per_epoch), batch)
  return dict(examples=n, offline=n / offline_s, shards=shards_rate,
              in_memory=memory_rate,
              in_memory_featurise=len(instances) / featurise_s)


def render(r: dict[str, float], info: str) -> str:
  base = A100_BERT_LARGE * BASE_OVER_LARGE_FLOPS
  rows = [
      ('offline: corpus -> masked features (shard writing, one-off)',
       r['offline']),
      ('shards: read + deserialize + batch (static masks)', r['shards']),
      ('in memory: batch instances (dynamic masks on device)',
       r['in_memory']),
  ]
  lines = [
      '## Host input pipeline (pretraining, T = 128, one CPU core)', '',
      f'Generated by `python -m experiments.bench_input`; {info}; '
      f'{r["examples"]:,} examples from SOTU speeches.', '',
      '| stage | examples/s per core | vs 1 A100, BERT-large (580/s) '
      f'| vs 1 A100, BERT-base (~{base:,.0f}/s) |',
      '|---|---:|---:|---:|']
  for name, rate in rows:
    lines.append(f'| {name} | {rate:,.0f} | {rate / A100_BERT_LARGE:.1f}x | '
                 f'{rate / base:.1f}x |')
  lines += ['', 'A training host serves batches from shards or memory; the '
            'offline stage runs once, before training, on any number of '
            'cores (`python -m bert_jax.pretraining_data --num_shards=N`, '
            'one process per corpus shard). BERT-base rate: the A100 '
            'BERT-large figure times the 3.1x FLOP ratio (an estimate, not '
            'a measurement).']
  return '\n'.join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--speeches', type=int, default=60)
  p.add_argument('--batch', type=int, default=256)
  p.add_argument('--steps', type=int, default=50)
  p.add_argument('--out', default='')
  args = p.parse_args(argv)
  import platform  # pylint: disable=g-import-not-at-top
  info = (f'{datetime.date.today()}, {platform.machine()}, '
          f'{os.cpu_count()} cores, load average before '
          f'{os.getloadavg()[0]:.1f}')
  table = render(measure(args.speeches, args.batch, args.steps), info)
  print(table)
  if args.out:
    bu.write_section(args.out, 'bench_input', table)


if __name__ == '__main__':
  main()
