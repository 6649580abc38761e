"""TrainState, the jitted train/eval steps, and the training loop.

`run(config, workdir)` is the whole job: mesh, task, shape-first init with
shardings, resume from the newest checkpoint in `workdir` (or initialise from
pretrained weights), the loop with logging, evaluation, checkpoints and
preemption handling, and `workdir/results.json` at the end.

The step is `train_step(state, batch) -> (state, metrics)`, jitted once with
the state donated; the per-step RNG is `fold_in(state.rng, state.step)`, so a
resumed run draws the same dropout masks as an uninterrupted one.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import signal
import time
from typing import Any, Callable, Optional

from absl import logging
from flax import struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from bert_jax import checkpointing
from bert_jax import frozen
from bert_jax import optim
from bert_jax import progress
from bert_jax import sharding
from bert_jax.tasks import base

# Dense bf16 peak FLOP/s per device, for model FLOP utilisation.
PEAK_FLOPS = {
    'H100': 989e12, 'H200': 989e12, 'A100': 312e12, 'L4': 121e12,
    'TPU v4': 275e12, 'TPU v5 lite': 197e12, 'TPU v5e': 197e12,
    'TPU v5p': 459e12, 'TPU v6 lite': 918e12,
}
NONFINITE_WHAT = {1: 'loss', 2: 'grad_norm'}


@struct.dataclass
class TrainState:
  step: jax.Array             # int32 [], optimizer micro-steps taken
  params: Any
  opt_state: Any
  loss_state: Any             # e.g. GHM's EMA histogram; {} for most losses
  rng: jax.Array              # uint32 [2] base key; per-step keys fold in step
  nonfinite_step: jax.Array   # int32 [], first step with NaN/Inf, -1 if none
  nonfinite_what: jax.Array   # int32 [], key of NONFINITE_WHAT, 0 if none


def peak_flops_per_device() -> Optional[float]:
  kind = jax.devices()[0].device_kind
  for name, flops in PEAK_FLOPS.items():
    if name.lower() in kind.lower():
      return flops
  return None


def train_step(state: TrainState, batch, *, task: base.Task,
               tx: optax.GradientTransformation, schedule: Callable,
               grad_accum_steps: int, skip_nonfinite: bool,
               frozen_mask: Any = None):
  """One micro-step. Returns (new state, {name: (sum, count)}).

  `frozen_mask`: a tree of Python bools like the params (`optim.frozen_mask`)
  or None. Gradients stop at frozen leaves, so no backward pass is built for
  what only they need (their updates were zero anyway); the logged
  `grad_norm` is therefore that of the trainable leaves.
  """
  rng = jax.random.fold_in(state.rng, state.step)
  grad_fn = jax.value_and_grad(
      lambda p, *a: task.train_loss(frozen.stop_gradients(p, frozen_mask), *a),
      has_aux=True)
  (loss, (metrics, loss_state)), grads = grad_fn(state.params, batch, rng,
                                                 state.loss_state)
  grad_norm = optax.global_norm(grads)
  loss_ok, grads_ok = jnp.isfinite(loss), jnp.isfinite(grad_norm)
  ok = loss_ok & grads_ok
  healthy = state.nonfinite_step < 0
  # A bad step never reaches the parameters: it is skipped if the config asks,
  # else the run is stopped by the host and the state stays at the last good
  # step (so no poisoned state can be checkpointed).
  take = ok & (healthy | skip_nonfinite)
  # lax.cond rather than computing the update and selecting it away with
  # jnp.where: a skipped step then costs nothing, and a taken one does not
  # pay for a select over every parameter and moment (a MiniLM-sized CPU
  # step measured 1.04x-1.09x faster in two A/B runs on a noisy VM).
  def apply_update(old):
    params, opt_state, _ = old
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss_state
  params, opt_state, new_loss_state = jax.lax.cond(
      take, apply_update, lambda old: old,
      (state.params, state.opt_state, state.loss_state))
  first_bad = healthy & ~ok & (not skip_nonfinite)
  new_state = state.replace(
      step=state.step + 1,
      params=params,
      opt_state=opt_state,
      loss_state=new_loss_state,
      nonfinite_step=jnp.where(first_bad, state.step, state.nonfinite_step),
      nonfinite_what=jnp.where(first_bad, jnp.where(loss_ok, 2, 1),
                               state.nonfinite_what))
  one = jnp.ones((), jnp.float32)
  metrics = dict(metrics)
  metrics.update(
      loss=(jnp.where(loss_ok, loss, 0.0), loss_ok.astype(jnp.float32)),
      grad_norm=(jnp.where(grads_ok, grad_norm, 0.0), grads_ok.astype(jnp.float32)),
      learning_rate=(schedule(state.step // grad_accum_steps), one),
      skipped_steps=((~ok).astype(jnp.float32), one))
  return new_state, metrics


def _state_from(task: base.Task, tx: optax.GradientTransformation, params,
                rng: jax.Array) -> TrainState:
  return TrainState(
      step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
      loss_state=task.init_loss_state(), rng=jax.random.fold_in(rng, 1),
      nonfinite_step=-jnp.ones((), jnp.int32),
      nonfinite_what=jnp.zeros((), jnp.int32))


def initial_state(task: base.Task, tx: optax.GradientTransformation,
                  rng: jax.Array, batch, *, shardings: Any = None
                  ) -> TrainState:
  """Step-0 TrainState for `batch`'s shapes: the task's pretrained weights,
  fresh ones for the rest (a classifier head), zero optimizer moments.

  Shape first: the pretrained weights are read for the abstract parameters,
  then one jitted init draws the rest; the loaded leaves replace their fresh
  twins inside it, so XLA drops those draws (the encoder's) instead of
  computing values that are thrown away. The fresh leaves equal those of a
  full `task.init_params(rng, batch)`. `shardings`: the TrainState's, or None
  (default placement).
  """
  def build(rng, batch, loaded):
    params = task.init_params(rng, batch)
    if loaded is not None:
      fresh, treedef = jax.tree_util.tree_flatten(params)
      params = jax.tree_util.tree_unflatten(
          treedef, [f if new is None else new for f, new in zip(fresh, loaded)])
    return _state_from(task, tx, params, rng)

  abstract = jax.eval_shape(task.init_params, rng, batch)
  pretrained = task.pretrained_params(abstract)
  loaded = None
  if pretrained is not None:
    want, treedef = jax.tree_util.tree_flatten_with_path(abstract)
    got, got_def = jax.tree_util.tree_flatten(pretrained)
    if got_def != treedef:
      raise ValueError(f'{type(task).__name__}.pretrained_params returned a '
                       f'tree unlike the parameters: {got_def} vs {treedef}')
    param_sh = ([None] * len(got) if shardings is None else
                jax.tree_util.tree_leaves(
                    shardings.params,
                    is_leaf=lambda x: isinstance(x, jax.sharding.Sharding)))
    loaded = []
    for (path, w), g, sh in zip(want, got, param_sh):
      if isinstance(g, jax.ShapeDtypeStruct):   # not loaded: drawn fresh
        loaded.append(None)
        continue
      if tuple(np.shape(g)) != tuple(w.shape):
        raise ValueError(f'pretrained weight {jax.tree_util.keystr(path)} has '
                         f'shape {tuple(np.shape(g))}, the model expects '
                         f'{tuple(w.shape)}')
      loaded.append(jax.device_put(np.asarray(g, w.dtype), sh))
  # The loaded buffers become the state's: donated, not copied.
  init = jax.jit(build, out_shardings=shardings, donate_argnums=2)
  return init(rng, batch, loaded)


def _abstract_batch(batch: dict[str, np.ndarray], global_batch: int, mesh):
  bs = sharding.batch_sharding(mesh)
  return {k: jax.ShapeDtypeStruct((global_batch,) + v.shape[1:], v.dtype,
                                  sharding=bs) for k, v in batch.items()}


def _pad_batch(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
  """Pads the leading axis to `size` with zeros (weights 0: ignored)."""
  n = next(iter(batch.values())).shape[0]
  if n == size:
    return batch
  return {k: np.concatenate([v, np.zeros((size - n,) + v.shape[1:], v.dtype)])
          for k, v in batch.items()}


class _Preemption:
  """Turns SIGTERM into a flag checked at step boundaries."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: no handler
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM received: checkpointing and exiting at the end '
                    'of this step')
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _writer(workdir: pathlib.Path):
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  return metric_writers.create_default_writer(
      str(workdir), just_logging=jax.process_index() > 0)


def maybe_initialize_distributed(config) -> None:
  """jax.distributed.initialize() when this is one of several processes."""
  dist = config.get('distributed', None)
  if dist and dist.get('coordinator_address'):
    jax.distributed.initialize(
        coordinator_address=dist.coordinator_address,
        num_processes=dist.num_processes, process_id=dist.process_id)
  elif any(v in os.environ for v in ('SLURM_NTASKS', 'TPU_WORKER_HOSTNAMES',
                                     'JAX_COORDINATOR_ADDRESS')):
    if int(os.environ.get('SLURM_NTASKS', '2')) > 1:
      jax.distributed.initialize()


def evaluate(task: base.Task, eval_fn, state: TrainState, config, mesh
             ) -> dict[str, Any]:
  """Runs the task's eval set; pads the last batch with weight-0 rows."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  local_bs = sharding.local_batch_size(config.eval_batch_size)
  total, outputs = None, []
  batches = task.eval_batches(local_bs, jax.process_index(),
                              jax.process_count())
  n = task.num_eval_examples()
  for batch in progress.bar(batches, desc='eval', unit='batch', total=(
      None if n is None else -(-n // config.eval_batch_size))):
    batch = _pad_batch(batch, local_bs)
    metrics, out = eval_fn(state.params, sharding.make_global_batch(batch, mesh))
    total = base.add_metrics(total, metrics)
    if out:
      out = multihost_utils.process_allgather(out, tiled=True)
      outputs.append(jax.device_get(out))
  if total is None:
    return {}
  host = None
  if outputs:
    host = {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}
  return task.summarize_eval(base.finalize_metrics(total), host)


def _check_sequence_length(config, task: base.Task) -> None:
  """config.data.max_seq_length must fit the model's position table.

  The model checks this too, but only when it is traced, and names neither
  config key; with `init_from` the table size comes from the pretrained
  config.json, which only the task has read.
  """
  bert = task.bert_config
  data = config.get('data', None)
  max_len = data.get('max_seq_length', None) if data is not None else None
  limit = None if bert is None else bert.max_position_embeddings
  if max_len is not None and limit is not None and max_len > limit:
    source = (f'the config.json of config.model.init_from='
              f'{config.model.init_from!r}' if config.model.get('init_from')
              else 'config.model.max_position_embeddings')
    raise ValueError(f'config.data.max_seq_length={max_len} exceeds the '
                     f'model\'s max_position_embeddings={limit} '
                     f'(from {source})')


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
  return {k: v for k, v in metrics.items()
          if isinstance(v, (int, float)) and not isinstance(v, bool)}


def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike
        ) -> dict[str, Any]:
  """Trains `config.task` in `workdir`; returns the results dict."""
  from bert_jax import tasks  # pylint: disable=g-import-not-at-top
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  if config.get('compilation_cache_dir'):
    jax.config.update('jax_compilation_cache_dir', config.compilation_cache_dir)
  maybe_initialize_distributed(config)

  # ---- everything that can be wrong with the config fails here, before jit.
  base.model_fields(config)   # config.model against BertConfig, before any data
  mesh = sharding.make_mesh(config.get('mesh'))
  sharding.check_batch_size(config.batch_size, mesh, 'config.batch_size')
  sharding.check_batch_size(config.eval_batch_size, mesh,
                            'config.eval_batch_size')
  if config.nonfinite not in ('stop', 'skip'):
    raise ValueError(f"config.nonfinite={config.nonfinite!r}; known: 'stop', 'skip'")
  sharding.check_strategy(config.get('sharding', 'dp'))
  # Steps are taken modulo these, and orbax keeps no checkpoint at all with
  # max_to_keep=0: a run that could never be resumed.
  for key, low in (('log_every', 1), ('checkpoint_every', 1),
                   ('keep_checkpoints', 1), ('eval_every', 0)):
    if config[key] < low:
      raise ValueError(f'config.{key}={config[key]} must be >= {low}')
  # The optimizer fields need no parameters to be checked: check them now, not
  # after the task has read and tokenized its data (minutes on a big corpus).
  optim.check_config(config.optim)
  task = tasks.get(config.task)(config)
  _check_sequence_length(config, task)
  local_bs = sharding.local_batch_size(config.batch_size)
  train_iter = task.train_iterator(local_bs, jax.process_index(),
                                   jax.process_count(), config.seed)
  total_steps = int(config.total_steps)
  if total_steps <= 0 and config.get('num_epochs'):
    n = task.num_train_examples()
    if n is None:
      raise ValueError('config.num_epochs needs a finite training set; set '
                       'config.total_steps')
    total_steps = max(1, int(np.ceil(config.num_epochs * n / config.batch_size)))
    logging.info('%s epochs of %d examples = %d steps', config.num_epochs, n,
                 total_steps)
  if total_steps < 1:
    raise ValueError(f'config.total_steps={total_steps} must be >= 1')
  accum = int(config.optim.get('grad_accum_steps', 1))
  initial_position = train_iter.get_state()
  first = next(iter(train_iter))
  abstract_batch = _abstract_batch(first, config.batch_size, mesh)
  # An abstract key: a concrete PRNGKey would compile (and run) before the
  # optimizer config below is validated.
  abstract_params = jax.eval_shape(task.init_params,
                                   jax.ShapeDtypeStruct((2,), jnp.uint32),
                                   abstract_batch)
  tx, schedule = optim.make_optimizer(config.optim, abstract_params,
                                      max(1, total_steps // accum))
  logging.info('parameters:\n%s', optim.describe(abstract_params, config.optim))
  frozen_mask = optim.frozen_mask(config.optim, abstract_params)

  rng = jax.random.PRNGKey(config.seed)
  # From the abstract params above: no second trace of the model's init.
  abstract_state = jax.eval_shape(
      lambda p, r: _state_from(task, tx, p, r), abstract_params, rng)
  state_sh = sharding.state_shardings(abstract_state, mesh,
                                      config.get('sharding', 'dp'))
  batch_sh = sharding.batch_sharding(mesh)
  step_fn = jax.jit(
      functools.partial(train_step, task=task, tx=tx, schedule=schedule,
                        grad_accum_steps=accum,
                        skip_nonfinite=config.nonfinite == 'skip',
                        frozen_mask=frozen_mask),
      in_shardings=(state_sh, batch_sh),
      out_shardings=(state_sh, sharding.replicated(mesh)),
      donate_argnums=0)
  eval_fn = jax.jit(task.eval_step, in_shardings=(state_sh.params, batch_sh))

  # Written once the config has passed every check (a bad one leaves the
  # workdir empty): what bert_jax.predict / export rebuild the task from.
  if jax.process_index() == 0:
    (workdir / 'config.json').write_text(config.to_json_best_effort(indent=2))
  ckpt = checkpointing.RunCheckpointer(workdir / 'checkpoints',
                                       keep=config.keep_checkpoints)
  if ckpt.latest_step() is not None:
    target = jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        abstract_state, state_sh)
    state, data_state, _ = ckpt.restore(target)
    train_iter.set_state(data_state['train'])
    logging.info('resumed at step %d', int(state.step))
  else:
    state = initial_state(task, tx, rng, sharding.make_global_batch(first, mesh),
                          shardings=state_sh)
    # The peeked batch is replayed: rewind the iterator to its beginning.
    train_iter.set_state(initial_position)
  if frozen.should_cache(config, task, frozen_mask):
    # Adds the cache to the task's feature arrays in place: the iterator
    # over them serves it from the next batch on.
    frozen.cache_encoder_outputs(task, state.params, config, mesh)

  writer = _writer(workdir)
  writer.write_hparams({k: str(v) for k, v in config.to_dict().items()
                        if not isinstance(v, dict)})
  flops = task.flops_per_example()
  peak = peak_flops_per_device()
  history, best, final_eval = [], None, {}
  best_metric = config.get('best_metric', '')
  best_ckpt = (checkpointing.RunCheckpointer(workdir / 'best', keep=1)
               if best_metric else None)
  best_file = workdir / 'best' / 'best.json'
  if best_metric and best_file.exists():   # a resumed run keeps its best so far
    best = json.loads(best_file.read_text())
  start = int(state.step)
  total_metrics, t_log, steps_since, tokens_since = (
      None, time.perf_counter(), 0, 0)

  def check_health(step):
    bad = int(jax.device_get(state.nonfinite_step))
    if bad >= 0:
      what = NONFINITE_WHAT[int(jax.device_get(state.nonfinite_what))]
      # The last good checkpoint may still be being written in the
      # background: finish it, or the raise below would abandon the very
      # checkpoint the message points to.
      try:
        ckpt.wait()
      except checkpointing.CheckpointSaveError as e:  # the NaN is the news
        logging.error('%s', e)
      # `bad` is the state's step count when the bad update was computed;
      # the logs and checkpoints call that update step bad + 1.
      raise FloatingPointError(
          f'non-finite {what} at step {bad + 1}; the run is stopped and no '
          f'update from step {bad + 1} on was applied (the parameters are '
          f'those of step {bad}). Last good checkpoint: step '
          f'{ckpt.latest_step()} in {ckpt.directory}. Set config.nonfinite='
          "'skip' to skip such updates instead.")

  with _Preemption() as preemption, progress.bar(
      total=total_steps, initial=start, desc='train', unit='step') as bar:
    for step in range(start, total_steps):
      local = next(train_iter)
      if 'input_ids' in local:   # padded tokens; batches may differ in length
        tokens_since += local['input_ids'].size * jax.process_count()
      batch = sharding.make_global_batch(local, mesh)
      state, metrics = step_fn(state, batch)
      bar.update()
      # Summed on device: no host sync until the metrics are logged.
      total_metrics = metrics if total_metrics is None else (
          jax.tree_util.tree_map(jnp.add, total_metrics, metrics))
      steps_since += 1
      done = step + 1
      if done % config.log_every == 0 or done == total_steps:
        check_health(done)
        scalars = base.finalize_metrics(base.add_metrics(None, total_metrics))
        dt = time.perf_counter() - t_log
        scalars['steps_per_sec'] = steps_since / dt
        scalars['examples_per_sec'] = steps_since * config.batch_size / dt
        if tokens_since:
          scalars['tokens_per_sec'] = tokens_since / dt
        if flops and peak:
          scalars['mfu'] = (scalars['examples_per_sec'] * flops
                            / (peak * jax.device_count()))
        scalars['eta_minutes'] = (total_steps - done) / scalars['steps_per_sec'] / 60
        writer.write_scalars(done, scalars)
        history.append(dict(step=done, **scalars))
        total_metrics, t_log, steps_since = None, time.perf_counter(), 0
        tokens_since = 0
      is_eval = done == total_steps or (
          config.eval_every > 0 and done % config.eval_every == 0)
      if is_eval:
        check_health(done)
        final_eval = evaluate(task, eval_fn, state, config, mesh)
        if final_eval:
          writer.write_scalars(done, {f'eval/{k}': v for k, v in
                                      _scalars(final_eval).items()})
          history.append(dict(step=done, **{f'eval/{k}': v for k, v in
                                            _scalars(final_eval).items()}))
          if best_metric:
            if best_metric not in final_eval:
              raise ValueError(f'config.best_metric={best_metric!r} is not an '
                               f'eval metric; known: {sorted(_scalars(final_eval))}')
            if best is None or final_eval[best_metric] > best['metrics'][best_metric]:
              best = dict(step=done, metrics={
                  k: v for k, v in final_eval.items() if k != '_predictions'})
              best_ckpt.save(done, state, {'train': train_iter.get_state()})
              if jax.process_index() == 0:
                best_file.write_text(json.dumps(best, default=float))
      if (done % config.checkpoint_every == 0 or done == total_steps
          or preemption.requested):
        check_health(done)
        ckpt.save(done, state, {'train': train_iter.get_state()})
      if preemption.requested:
        ckpt.wait()
        logging.warning('preempted: checkpoint of step %d written', done)
        ckpt.close()
        writer.flush()
        return {'preempted_at_step': done}
  if start >= total_steps:
    # Resumed from the final checkpoint (the process died after saving it,
    # before results.json), so the loop ran no step and no eval: evaluate
    # the final state, so results.json
    # is never written without its final eval. Copying a finished run's
    # directory and resuming it with other eval settings (split, threshold)
    # evaluates the same weights on them.
    final_eval = evaluate(task, eval_fn, state, config, mesh)
  ckpt.close()
  if best_ckpt is not None:
    best_ckpt.close()
  writer.flush()
  # Every process takes part in the gather: with FSDP across hosts no host
  # holds a whole parameter, so process 0 cannot just copy its own.
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  host_params = multihost_utils.process_allgather(state.params, tiled=True)
  if jax.process_index() == 0:
    task.export(workdir, host_params)
  predictions = final_eval.pop('_predictions', None)
  if jax.process_index() == 0:
    if predictions is not None:
      with open(workdir / 'predictions.jsonl', 'w') as f:
        for row in predictions:
          f.write(json.dumps(row, ensure_ascii=False) + '\n')
    if 'report' in final_eval:
      print(f'Final eval at step {int(state.step)}:\n{final_eval["report"]}',
            flush=True)
  results = dict(task=config.task, final_step=int(state.step),
                 final_eval=final_eval, best=best,
                 train_history=history, config=json.loads(config.to_json_best_effort()))
  if jax.process_index() == 0:
    with open(workdir / 'results.json', 'w') as f:
      json.dump(results, f, indent=2, default=float)
  return results
