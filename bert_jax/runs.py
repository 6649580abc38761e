"""A finished run's directory: its config and its checkpoints, read back.

`bert_jax.predict` and `bert_jax.export` rebuild a run's task from
`<workdir>/config.json` (written by `train.run` when it starts) and restore
its parameters from `<workdir>/best` or `<workdir>/checkpoints`.
"""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import sys

from absl import app
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections

from bert_jax import checkpointing
from bert_jax import model as model_lib
from bert_jax.data import datasets


def load_run_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
  """The config a run was trained with: `<workdir>/config.json` (written
  when the run starts), else the one inside `results.json`."""
  workdir = pathlib.Path(workdir)
  path = workdir / 'config.json'
  if path.exists():
    values = json.loads(path.read_text())
  elif (workdir / 'results.json').exists():
    values = json.loads((workdir / 'results.json').read_text())['config']
  else:
    raise FileNotFoundError(
        f'{workdir}: no config.json or results.json; is this the --workdir of '
        'a bert_jax.main run?')
  return ml_collections.ConfigDict(_without_old_model_defaults(values))


def _without_old_model_defaults(values: dict) -> dict:
  """A run config from before `config.model` held only what a run sets.

  Such a config lists every BertConfig field, the architecture ones at
  BertConfig's defaults even with `init_from` (which ignored them then, and
  now refuses one that differs from the pretrained config.json), so with
  `init_from` only `init_from` and the execution fields are kept.
  """
  model = values.get('model') or {}
  # Every architecture field written out: an old config (new execution
  # fields such as last_layer_at_outputs may be missing from it).
  architecture = (set(model_lib.BertConfig.__dataclass_fields__)
                  - set(model_lib.execution_fields()))
  if not (model.get('init_from') and architecture <= set(model)):
    return values
  keep = set(model_lib.execution_fields()) | {'init_from'}
  return dict(values, model={k: v for k, v in model.items() if k in keep})


def checkpoint_dir(workdir: str | os.PathLike, which: str = 'best'
                   ) -> pathlib.Path:
  """`<workdir>/best` (with which='best', if the run kept one), else
  `<workdir>/checkpoints`; FileNotFoundError if neither holds a checkpoint."""
  workdir = pathlib.Path(workdir)
  candidates = (['best'] if which == 'best' else []) + ['checkpoints']
  for name in candidates:
    directory = workdir / name
    if directory.is_dir() and any(p.name.isdigit()
                                  for p in directory.iterdir()):
      return directory
  raise FileNotFoundError(
      f'{workdir}: no checkpoint (looked in '
      f'{", ".join(str(workdir / n) for n in candidates)}); a run writes one '
      'at config.checkpoint_every steps and when it ends')


def restore_params(workdir, config, task, batch, which: str = 'best'):
  """The parameters of a run's checkpoint, restored for `task`.

  The checkpoint holds the whole TrainState; its abstract tree is rebuilt
  the way `train.run` builds it (task parameters for `batch`'s shapes, the
  optimizer of `config.optim`), then restored on the default device.
  """
  from bert_jax import optim  # pylint: disable=g-import-not-at-top
  from bert_jax import train  # pylint: disable=g-import-not-at-top
  directory = checkpoint_dir(workdir, which)
  key = jax.ShapeDtypeStruct((2,), jnp.uint32)
  abstract_params = jax.eval_shape(task.init_params, key, batch)
  tx, _ = optim.make_optimizer(config.optim, abstract_params, 1000)
  abstract_state = jax.eval_shape(
      lambda p, r: train._state_from(task, tx, p, r),  # pylint: disable=protected-access
      abstract_params, jax.random.PRNGKey(0))
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree_util.tree_map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
      abstract_state)
  ckpt = checkpointing.RunCheckpointer(directory, keep=1)
  try:
    state, _, step = ckpt.restore(target)
  finally:
    ckpt.close()
  logging.info('restored step %d from %s', step, directory)
  return state.params, step


def predict_command(config, workdir: str, results) -> str:
  """The `bert_jax.predict` command for a finished fine-tuning run ('' for
  pretraining or a preempted run). --input is the run's eval file when it is
  a local file, else NAME:SPLIT for registered data, else FILE."""
  if config.task == 'pretrain' or 'final_step' not in results:
    return ''
  data = config.get('data', {})
  source = data.get('eval') or data.get('train') or ''
  if source and os.path.isfile(source):
    given = shlex.quote(source)
  elif source in datasets.names():
    given = f'{source}:{data.get("eval_split") or "test"}'
  else:
    given = 'FILE'
  return ('python -m bert_jax.predict --workdir=' + shlex.quote(str(workdir))
          + f' --input={given} --output=-')



def run_command(main, define_flags) -> None:
  """Runs a command-line tool on a finished run (predict, export): a missing
  file or a bad run directory is one `error:` line and exit 1, no traceback."""
  define_flags()
  try:
    app.run(main)
  except (FileNotFoundError, ValueError) as e:
    sys.stderr.write(f'error: {e}\n')
    sys.exit(1)
