"""Runs a tiny pretraining job in its own process (tests set XLA_FLAGS/env).

  python tests/train_probe.py ROOT OUT.json '{"name": {"config.key": value}, ...}'

Each named run trains in ROOT/<name> (a run whose workdir holds a checkpoint
resumes).
Writes OUT.json with the per-step training loss, the final eval, the step
and a float64 checksum of every parameter, so tests can compare runs across
device counts, processes and interruptions.
"""

import json
import os
import pathlib
import subprocess
import sys

if os.environ.get('PROBE_GLOO'):
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')

import jax  # noqa: E402
import numpy as np  # noqa: E402

from bert_jax import train  # noqa: E402
from configs import pretrain  # noqa: E402

CORPUS_SPEECHES = 12


def tiny_corpus(directory: pathlib.Path) -> str:
  """A few real SOTU speeches as text files (one document per blank-line block)."""
  from bert_jax.data import registry  # pylint: disable=g-import-not-at-top
  directory.mkdir(parents=True, exist_ok=True)
  files = sorted(registry.fetch('sotu').glob('*.json'))[::20][:CORPUS_SPEECHES]
  for f in files:
    text = json.loads(f.read_text())['text']
    paragraphs = [p.strip() for p in text.split('\n') if p.strip()][:30]
    (directory / (f.stem + '.txt')).write_text('\n'.join(paragraphs) + '\n')
  return str(directory)


TINY_MODEL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=64,
                  hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)


def tiny_config(workdir: pathlib.Path):
  c = pretrain.get_config('tiny')
  c.data.corpus = tiny_corpus(workdir.parent / 'corpus')
  c.data.vocab = 'minilm'
  c.data.max_seq_length = 64
  c.data.max_predictions_per_seq = 10
  c.data.dupe_factor = 1
  c.data.eval_fraction = 0.2
  c.data.max_eval_examples = 32
  c.model.update(TINY_MODEL)
  c.batch_size, c.eval_batch_size = 16, 16
  c.total_steps = 6
  c.log_every, c.eval_every, c.checkpoint_every = 1, 0, 3
  c.optim.update(lr=1e-3, warmup_fraction=None, warmup_steps=2)
  return c


def export_pretrained(directory: pathlib.Path) -> str:
  """A HF-format directory holding random weights for tiny_config's model
  (seed 123, unlike any run's own init), for runs with model.init_from."""
  from bert_jax import hf_weights  # pylint: disable=g-import-not-at-top
  from bert_jax.heads import BertForPreTraining  # pylint: disable=g-import-not-at-top
  from bert_jax.tasks import pretraining  # pylint: disable=g-import-not-at-top
  c = pretrain.get_config('tiny')
  c.model.update(TINY_MODEL)
  config = pretraining.bert_config_from(c)
  ids = np.zeros((1, 8), np.int32)
  params = jax.jit(BertForPreTraining(config).init)(
      jax.random.PRNGKey(123), ids, ids, ids + 1, ids[:, :2])['params']
  hf_weights.export_hf(directory, config, jax.device_get(params))
  return str(directory)


def apply_overrides(c, overrides):
  for key, value in overrides.items():
    node = c
    *parents, leaf = key.split('.')[1:] if key.startswith('config.') else key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def summarize(workdir: pathlib.Path, results: dict) -> dict:
  """Losses, final eval and per-parameter checksums of a finished run."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  mngr = ocp.CheckpointManager((workdir / 'checkpoints').absolute())
  step = mngr.latest_step()
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore()))
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  def host(x):  # FSDP across processes: no process holds a whole leaf.
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(x)

  leaves = jax.tree_util.tree_leaves_with_path(restored['state']['params'])
  checksum = {jax.tree_util.keystr(p): float(np.asarray(host(x), np.float64).sum())
              for p, x in leaves}
  losses = [(h['step'], h['loss']) for h in results.get('train_history', [])
            if 'loss' in h]
  return dict(step=step, losses=losses, checksum=checksum,
              final_eval=results.get('final_eval'),
              preempted=results.get('preempted_at_step'),
              devices=jax.device_count(), processes=jax.process_count())


def launch(root: pathlib.Path, out: pathlib.Path, runs: dict, env: dict):
  """Starts this script in its own process: `runs` in `root`, the summaries
  to `out`, its output to `out` with a .log suffix (a file, not a pipe: a
  pipe nobody reads yet would stall a probe that runs beside others).
  Probes that run at the same time need their own `root`: each rewrites its
  corpus files there. Returns what `finish` takes."""
  root.mkdir(parents=True, exist_ok=True)
  log = out.with_suffix('.log')
  with open(log, 'w') as f:
    proc = subprocess.Popen(
        [sys.executable, str(pathlib.Path(__file__).resolve()), str(root),
         str(out), json.dumps(runs)], env=env, stdout=f,
        stderr=subprocess.STDOUT)
  return proc, out, log


def finish(started, timeout: float = 900) -> dict:
  """Waits for a `launch`ed probe (killed past `timeout`); its summaries."""
  proc, out, log = started
  try:
    proc.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    raise
  assert proc.returncode == 0, log.read_text()[-4000:]
  return json.loads(out.read_text())


def main():
  root, out, runs = pathlib.Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
  summaries = {}
  for name, overrides in runs.items():
    workdir = root / name
    config = apply_overrides(tiny_config(workdir), overrides)
    results = train.run(config, workdir)
    # Every process takes part: orbax restores are collective across processes.
    summaries[name] = summarize(workdir, results)
  if jax.process_index() == 0:
    with open(out, 'w') as f:
      json.dump(summaries, f)


if __name__ == '__main__':
  main()
