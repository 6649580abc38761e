r"""One fine-tuning epoch end to end: bert_jax (length bucketing) vs HF Flax.

  python -m experiments.bench_epoch [--epochs=1] [--max_len=256] [--batch=16]
      [--buckets=64,128,192] [--rounds=1] [--out=BENCHMARKS.md]

MiniLM (the `minilm` registry weights) fine-tuned on the `drug_reviews`
training split (540 reviews, 3 classes) at max length 256, then evaluated on
the test split (379 reviews), three ways, each in its own fresh process:

  bert_jax, bucketed  `ClassificationTask` (reading + WordPiece tokenization
                      is the input pipeline), `config.data.length_buckets`
                      and `group_by_length`: each batch is cut to the
                      smallest bucket holding its longest review, examples
                      of similar length batched together; eval batches
                      (data order) cut the same way;
  bert_jax, padded    the same with bucketing off (every batch 256 wide);
  HF Flax             `FlaxBertForSequenceClassification.from_pretrained(
                      from_pt=True)`, fed the way HF's Flax example scripts
                      feed it: `BertTokenizerFast(padding='max_length')`,
                      shuffled batches, a jitted, donated train step.

Equal hyperparameters everywhere: batch 16 (last partial batch dropped),
AdamW lr 2e-4 (the drug_reviews preset), 10% linear warmup then linear
decay, weight decay 0.01 off LayerNorm and biases, clipping at global norm
1.0, dropout 0.1, CE loss. Reported per implementation: seconds for the
input pipeline (read + tokenize + batch), the train steps (compile included,
and compile alone: first call of each shape minus the median step of that
shape), the evaluation, and the total; padded tokens fed; compiled train
shapes; test accuracy and macro-F1. The ratio that matters is total time of
HF Flax / bert_jax bucketed (target >= 1.3x) with comparable metrics (one
seed: metrics move by a few points between seeds and batch orders, so
"comparable" means within that noise, not equal). The workers run one
after another; on a machine whose speed drifts, `--rounds=N` runs them N
times in alternating order and reports each one's median-total run.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import Any

try:
  from experiments import bench_utils as bu
except ImportError:  # run as a script: experiments/bench_epoch.py
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
  from experiments import bench_utils as bu  # pylint: disable=g-import-not-at-top

LR, WARMUP, WEIGHT_DECAY, CLIP = 2e-4, 0.1, 0.01, 1.0


def _metrics(preds, labels, num_classes) -> dict[str, float]:
  from bert_jax import metrics  # pylint: disable=g-import-not-at-top
  m = metrics.classification_metrics(preds, labels, num_classes)
  return {'accuracy': m['accuracy'], 'macro_f1': m['macro_f1']}


class _Clock:
  """Per-shape step timings (compile = first call - median of the rest) and
  the padded tokens fed."""

  def __init__(self):
    self.times: dict[tuple, list[float]] = {}
    self.tokens = 0

  def add(self, batch, seconds):
    self.times.setdefault(batch['input_ids'].shape, []).append(seconds)
    self.tokens += batch['input_ids'].size

  def summary(self) -> dict[str, Any]:
    import numpy as np  # pylint: disable=g-import-not-at-top
    compile_s = 0.0
    for ts in self.times.values():
      rest = ts[1:] or ts
      compile_s += max(0.0, ts[0] - float(np.median(rest)))
    return dict(train_s=sum(sum(t) for t in self.times.values()),
                compile_s=compile_s, shapes=len(self.times),
                tokens=int(self.tokens),
                steps=sum(len(t) for t in self.times.values()))


def worker_bert_jax(args, bucketed: bool) -> dict[str, Any]:
  t0 = time.perf_counter()
  import functools  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from bert_jax import optim, sharding, train  # pylint: disable=g-import-not-at-top
  from bert_jax.tasks.classification import ClassificationTask  # pylint: disable=g-import-not-at-top
  from configs import finetune  # pylint: disable=g-import-not-at-top
  t_import = time.perf_counter()
  c = finetune.get_config('drug_reviews')
  c.data.max_seq_length = args.max_len
  c.batch_size, c.eval_batch_size = args.batch, args.eval_batch
  c.optim.update(lr=LR, warmup_fraction=WARMUP, weight_decay=WEIGHT_DECAY,
                 clip_global_norm=CLIP)
  c.data.max_train_examples = c.data.max_eval_examples = args.limit
  if bucketed:
    c.data.length_buckets = tuple(b for b in args.buckets if b < args.max_len)
    c.data.group_by_length = True
  task = ClassificationTask(c)         # read + tokenize
  it = task.train_iterator(args.batch, 0, 1, seed=0)
  steps = it.steps_per_epoch * args.epochs
  batches = [next(it) for _ in range(steps)]
  t_data = time.perf_counter()

  rng = jax.random.PRNGKey(0)
  tx, schedule = optim.make_optimizer(
      c.optim, jax.eval_shape(task.init_params, rng, batches[0]), steps)
  state = train.initial_state(task, tx, rng, batches[0])   # as train.run does
  step_fn = jax.jit(functools.partial(
      train.train_step, task=task, tx=tx, schedule=schedule,
      grad_accum_steps=1, skip_nonfinite=False), donate_argnums=0)
  t_setup = time.perf_counter()
  clock = _Clock()
  for batch in batches:
    t = time.perf_counter()
    state, m = step_fn(state, batch)
    jax.block_until_ready(m)
    clock.add(batch, time.perf_counter() - t)

  t_eval = time.perf_counter()
  mesh = sharding.make_mesh(None)
  eval_fn = jax.jit(task.eval_step)
  final = train.evaluate(task, eval_fn, state, c, mesh)
  t_end = time.perf_counter()
  preds = [task.label_names.index(r['prediction']) for r in final['_predictions']]
  labels = [task.label_names.index(r['label']) for r in final['_predictions']]
  return dict(
      name='bert_jax, bucketed + grouped' if bucketed else 'bert_jax, padded',
      import_s=t_import - t0, data_s=t_data - t_import,
      setup_s=t_setup - t_data, eval_s=t_end - t_eval,
      **clock.summary(),
      **_metrics(np.asarray(preds), np.asarray(labels), len(task.label_names)))


def worker_hf_flax(args) -> dict[str, Any]:
  t0 = time.perf_counter()
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from bert_jax import hf_weights  # pylint: disable=g-import-not-at-top
  from bert_jax.data import datasets, registry  # pylint: disable=g-import-not-at-top
  t_import = time.perf_counter()
  model_dir = str(registry.fetch(hf_weights.SHORT_NAMES['minilm']))
  train_ds = datasets.load('drug_reviews', 'train')
  test_ds = datasets.load('drug_reviews', 'test')
  names = list(train_ds.label_names)
  tok = transformers.BertTokenizerFast.from_pretrained(model_dir)

  def encode(ds):
    examples = ds.examples[:args.limit] if args.limit else ds.examples
    enc = tok([e.text for e in examples], padding='max_length',
              truncation=True, max_length=args.max_len, return_tensors='np')
    return dict(input_ids=enc['input_ids'].astype(np.int32),
                token_type_ids=enc['token_type_ids'].astype(np.int32),
                attention_mask=enc['attention_mask'].astype(np.int32),
                labels=np.asarray([names.index(e.label) for e in examples],
                                  np.int32))

  train_f, test_f = encode(train_ds), encode(test_ds)
  n = len(train_f['labels'])
  steps_per_epoch = n // args.batch
  steps = steps_per_epoch * args.epochs
  rng = np.random.default_rng(0)
  batches = []
  for _ in range(args.epochs):
    perm = rng.permutation(n)[:steps_per_epoch * args.batch]
    for i in range(steps_per_epoch):
      idx = perm[i * args.batch:(i + 1) * args.batch]
      batches.append({k: v[idx] for k, v in train_f.items()})
  t_data = time.perf_counter()

  model = transformers.FlaxBertForSequenceClassification.from_pretrained(
      model_dir, from_pt=True, num_labels=len(names))
  warmup = int(WARMUP * steps)
  schedule = optax.join_schedules([
      optax.linear_schedule(0.0, LR, max(1, warmup)),
      optax.linear_schedule(LR, 0.0, max(1, steps - warmup))], [warmup])

  def decay_mask(params):
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({
        k: not (k[-1] == 'bias' or 'LayerNorm' in '/'.join(k))
        for k in flat})

  tx = optax.chain(optax.clip_by_global_norm(CLIP), optax.adamw(
      schedule, b1=0.9, b2=0.999, eps=1e-6, weight_decay=WEIGHT_DECAY,
      mask=decay_mask))
  params = model.params
  opt_state = tx.init(params)

  def train_step(params, opt_state, batch, dropout_rng):
    def loss_fn(p):
      logits = model(batch['input_ids'], batch['attention_mask'],
                     batch['token_type_ids'], params=p, dropout_rng=dropout_rng,
                     train=True)[0]
      return optax.softmax_cross_entropy_with_integer_labels(
          logits, batch['labels']).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  train_step = jax.jit(train_step, donate_argnums=(0, 1))
  t_setup = time.perf_counter()
  clock = _Clock()
  key = jax.random.PRNGKey(1)
  for batch in batches:
    key, sub = jax.random.split(key)
    t = time.perf_counter()
    params, opt_state, loss = train_step(params, opt_state, batch, sub)
    jax.block_until_ready(loss)
    clock.add(batch, time.perf_counter() - t)

  t_eval = time.perf_counter()

  @jax.jit
  def eval_step(params, batch):
    return model(batch['input_ids'], batch['attention_mask'],
                 batch['token_type_ids'], params=params, train=False)[0]

  m = len(test_f['labels'])
  preds = []
  for start in range(0, m, args.eval_batch):   # last batch padded, one shape
    rows = np.arange(start, start + args.eval_batch)
    rows = np.where(rows < m, rows, 0)
    logits = eval_step(params, {k: v[rows] for k, v in test_f.items()})
    preds.append(np.argmax(np.asarray(logits), -1)[:m - start])
  t_end = time.perf_counter()
  return dict(name='HF Flax, padded', import_s=t_import - t0,
              data_s=t_data - t_import, setup_s=t_setup - t_data,
              eval_s=t_end - t_eval, **clock.summary(),
              **_metrics(np.concatenate(preds), test_f['labels'], len(names)))


WORKERS = ('bert_jax_bucketed', 'bert_jax_padded', 'hf_flax')


def _run_worker(name: str, args, tmp: pathlib.Path) -> dict[str, Any]:
  out = tmp / f'{name}.json'
  cmd = [sys.executable, '-m', 'experiments.bench_epoch', f'--worker={name}',
         f'--worker_out={out}', f'--epochs={args.epochs}',
         f'--max_len={args.max_len}', f'--batch={args.batch}',
         f'--eval_batch={args.eval_batch}', f'--limit={args.limit}',
         f'--buckets={",".join(map(str, args.buckets))}']
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  root = str(pathlib.Path(__file__).resolve().parents[1])
  env['PYTHONPATH'] = root + os.pathsep + env.get('PYTHONPATH', '')
  t = time.perf_counter()
  proc = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True,
                        check=False)
  if proc.returncode != 0:
    raise RuntimeError(f'{name} failed:\n{proc.stderr[-4000:]}')
  result = json.loads(out.read_text())
  result['process_s'] = time.perf_counter() - t
  return result


def total(r) -> float:
  """What a user waits for, minus interpreter and library imports."""
  return r['data_s'] + r['setup_s'] + r['train_s'] + r['eval_s']


def round_order(workers: list[str], round_index: int) -> list[str]:
  """Workers in order on even rounds, reversed on odd ones, so no worker
  always runs first (on a cold machine) or last (after the others' heat)."""
  return list(workers) if round_index % 2 == 0 else list(reversed(workers))


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
  """The run with the median total (the lower middle one for an even
  count), with every round's total under 'round_totals'."""
  ordered = sorted(runs, key=total)
  return dict(ordered[(len(ordered) - 1) // 2],
              round_totals=[total(r) for r in runs])


def render(results, args, info) -> str:
  # Without the HF Flax worker (--only) there is no ratio to show.
  hf = next((r for r in results if r['name'].startswith('HF')), None)
  size = (f'first {args.limit} train / test reviews' if args.limit
          else '540 train / 379 test')
  rounds = getattr(args, 'rounds', 1)
  how = ('' if rounds <= 1 else
         f' Each row is the run with the median total of {rounds} rounds, the '
         'workers alternating order (every round\'s total: ' + '; '.join(
             f"{r['name']} " + ' / '.join(f'{t:.1f}' for t in r['round_totals'])
             for r in results) + ').')
  lines = [
      f'One epoch of fine-tuning MiniLM on drug_reviews ({size}, '
      f'max length {args.max_len}, batch {args.batch}, {args.epochs} epoch(s)), '
      f'input pipeline and evaluation included; {info}.{how}', '',
      '| implementation | input pipeline s | setup s | train s (compile s) '
      '| compiled shapes | tokens fed | eval s | total s | HF Flax / this '
      '| test acc | test macro-F1 |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
  for r in results:
    lines.append(
        f"| {r['name']} | {r['data_s']:.1f} | {r['setup_s']:.1f} | "
        f"{r['train_s']:.1f} ({r['compile_s']:.1f}) | {r['shapes']} | "
        f"{r['tokens']:,} | {r['eval_s']:.1f} | {total(r):.1f} | "
        f"{'—' if hf is None else f'{total(hf) / total(r):.2f}x'} | "
        f"{r['accuracy']:.3f} | "
        f"{r['macro_f1']:.3f} |")
  lines += ['', 'Setup: weights loaded, optimizer built (HF: from_pt '
            'conversion). Total = input pipeline + setup + train + eval '
            '(Python and library imports excluded).']
  return '\n'.join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--epochs', type=int, default=1)
  p.add_argument('--max_len', type=int, default=256)
  p.add_argument('--batch', type=int, default=16)
  p.add_argument('--eval_batch', type=int, default=32)
  p.add_argument('--buckets', type=lambda s: [int(x) for x in s.split(',')],
                 default=[64, 128, 192])
  p.add_argument('--limit', type=int, default=0,
                 help='a seeded sample of N train and test reviews (smoke runs)')
  p.add_argument('--rounds', type=int, default=1,
                 help='run every worker this many times, alternating their '
                      'order, and report each one\'s median-total run')
  p.add_argument('--only', default=','.join(WORKERS),
                 help=f'comma-separated subset of {WORKERS}')
  p.add_argument('--out', default='',
                 help='also write the table into this Markdown file (its own '
                      'section, e.g. BENCHMARKS.md)')
  p.add_argument('--worker', default='', help=argparse.SUPPRESS)
  p.add_argument('--worker_out', default='', help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  unknown = [w for w in args.only.split(',') if w not in WORKERS]
  if unknown:
    p.error(f'--only: unknown worker(s) {unknown}; valid: {", ".join(WORKERS)}')
  if args.rounds < 1:
    p.error(f'--rounds={args.rounds}: must be >= 1')
  if args.worker:
    result = {'bert_jax_bucketed': lambda: worker_bert_jax(args, True),
              'bert_jax_padded': lambda: worker_bert_jax(args, False),
              'hf_flax': lambda: worker_hf_flax(args)}[args.worker]()
    pathlib.Path(args.worker_out).write_text(json.dumps(result))
    return
  import jax  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  info = bu.host_info(jax.devices()[0].platform, f'jax {jax.__version__}',
                      f'transformers {transformers.__version__}')
  workers = args.only.split(',')
  runs = {w: [] for w in workers}
  with tempfile.TemporaryDirectory() as tmp:
    for r in range(args.rounds):
      for w in round_order(workers, r):
        runs[w].append(_run_worker(w, args, pathlib.Path(tmp)))
  results = [median_run(runs[w]) for w in workers]
  table = render(results, args, info)
  print(table)
  if args.out:
    bu.write_section(args.out, 'bench_epoch',
                     '## One fine-tuning epoch end to end (bucketing vs padding)'
                     f'\n\nGenerated by `python -m experiments.bench_epoch '
                     f'--out={args.out}`.\n\n' + table)


if __name__ == '__main__':
  main()
