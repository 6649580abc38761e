"""Reliability: what a pod job meets, each shown with the real thing.

  * preemption: a real SIGTERM to a real training process loses nothing;
  * crash during save: a real SIGKILL while orbax writes a checkpoint; the
    next start restores the last complete one, never the partial one;
  * topology change: checkpoints saved on 8 (fake CPU) devices restore on 1
    and 4, and one saved on 1 restores on 8, with data parallelism and FSDP,
    and training continues to the parameters of an uninterrupted run;
  * non-finite loss: the run stops naming the step, the metric and the last
    good checkpoint, no checkpoint holds NaN; with nonfinite='skip' it
    finishes and reports the skipped step;
  * full disk: a real ENOSPC (a full tmpfs) during a save raises
    CheckpointSaveError naming the path; the previous checkpoint restores.

Subprocess runs share a persistent XLA compilation cache (same programs,
same executables, so results are unchanged) to keep the file's wall time
down on a small CPU machine.
"""

import contextlib
import errno
import functools
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from bert_jax import checkpointing
from bert_jax import train

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tests'))
import train_probe  # noqa: E402  pylint: disable=g-import-not-at-top

STEPS = 40


def _command(workdir: pathlib.Path, corpus: str, *, steps: int = STEPS,
             checkpoint_every: int = 1000, cache: str = '') -> list[str]:
  """The CLI command of a tiny pretraining run (the probe's model)."""
  c = train_probe.tiny_config(workdir)
  flags = {
      'data.corpus': corpus, 'data.vocab': 'minilm', 'data.max_seq_length': 64,
      'data.max_predictions_per_seq': 10, 'data.dupe_factor': 1,
      'data.eval_fraction': 0.2, 'data.max_eval_examples': 32,
      'model.hidden_size': c.model.hidden_size,
      'model.num_hidden_layers': c.model.num_hidden_layers,
      'model.num_attention_heads': c.model.num_attention_heads,
      'model.intermediate_size': c.model.intermediate_size,
      'model.max_position_embeddings': 64, 'batch_size': 16,
      'eval_batch_size': 16, 'total_steps': steps, 'log_every': 1,
      'eval_every': 0, 'checkpoint_every': checkpoint_every, 'optim.lr': 1e-3,
      'compilation_cache_dir': cache,
  }
  return ([sys.executable, '-m', 'bert_jax.main',
           '--config=configs/pretrain.py:tiny', f'--workdir={workdir}']
          + [f'--config.{k}={v}' for k, v in flags.items()])


def _env(devices: int = 1, **extra):
  # Small programs too go to the compilation cache (the default skips those
  # compiled in under a second).
  return dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL='2',
              XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0', **extra)


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  return train_probe.tiny_corpus(tmp_path_factory.mktemp('corpus'))


@pytest.fixture(scope='module')
def xla_cache(tmp_path_factory) -> str:
  return str(tmp_path_factory.mktemp('xla_cache'))


def test_sigterm_checkpoints_exits_cleanly_and_resume_is_bit_exact(
    tmp_path, corpus, xla_cache, request):
  command = functools.partial(_command, cache=xla_cache)
  # The uninterrupted reference runs beside the rest (output to a file: a
  # pipe nobody reads would stall it).
  reference = tmp_path / 'reference'
  reference_log = tmp_path / 'reference.log'
  with open(reference_log, 'w') as f:
    ref = subprocess.Popen(command(reference, corpus), cwd=ROOT, env=_env(),
                           stdout=f, stderr=subprocess.STDOUT)
  request.addfinalizer(lambda: ref.poll() is None and ref.kill())
  # Interrupted: SIGTERM once step 5 has been logged.
  interrupted = tmp_path / 'interrupted'
  proc = subprocess.Popen(command(interrupted, corpus), cwd=ROOT, env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
  log = []
  deadline = time.time() + 600
  for line in proc.stdout:
    log.append(line)
    if '] [5] ' in line or line.startswith('[5] '):
      proc.send_signal(signal.SIGTERM)
      break
    assert time.time() < deadline, 'training never reached step 5'
  rest, _ = proc.communicate(timeout=300)
  log.append(rest)
  assert proc.returncode == 0, ''.join(log)[-3000:]
  steps = sorted(int(p.name) for p in (interrupted / 'checkpoints').iterdir()
                 if p.name.isdigit())
  assert steps and 5 <= steps[-1] < STEPS, (steps, ''.join(log)[-2000:])
  assert not (interrupted / 'results.json').exists()
  # The same command again resumes and finishes.
  again = subprocess.run(command(interrupted, corpus), cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'resumed at step' in again.stderr
  ref.wait(timeout=600)
  assert ref.returncode == 0, reference_log.read_text()[-3000:]
  a = train_probe.summarize(interrupted, json.loads((interrupted / 'results.json').read_text()))
  b = train_probe.summarize(reference, json.loads((reference / 'results.json').read_text()))
  assert a['step'] == b['step'] == STEPS
  assert a['checksum'] == b['checksum']          # bit for bit
  assert a['final_eval'] == b['final_eval']


# --------------------------------------------------------------------------
# Crash during save: SIGKILL while a checkpoint is being written.
# --------------------------------------------------------------------------

# The child: the real CLI, with (only here, never in the library) an
# env-controlled delay inside orbax's write of the data-iterator item, which
# orbax writes into the checkpoint's temporary directory. It stretches the
# window in which a checkpoint is half written from milliseconds to seconds,
# so that the kill lands inside it every time.
_SLOW_SAVE_CHILD = '''
import asyncio, os, runpy, sys
delay = float(os.environ.get('BERT_JAX_TEST_SLOW_SAVE', '0'))
if delay:
  from orbax.checkpoint._src.handlers import json_checkpoint_handler as jch
  real_save_fn = jch.JsonCheckpointHandler._save_fn
  async def slow_save_fn(self, x, directory):
    await asyncio.sleep(delay)
    await real_save_fn(self, x, directory)
  jch.JsonCheckpointHandler._save_fn = slow_save_fn
sys.argv = ['bert_jax.main'] + sys.argv[1:]
runpy.run_module('bert_jax.main', run_name='__main__', alter_sys=True)
'''
_TMP = re.compile(r'^(\d+)\.orbax-checkpoint-tmp')
_LOGGED_LOSS = re.compile(r'\] \[(\d+)\] .*?\bloss=(\S+?),')


def _logged_losses(log: str) -> dict[int, str]:
  """step -> the loss as printed (6 significant digits) in a CLI log."""
  return {int(m.group(1)): m.group(2) for m in _LOGGED_LOSS.finditer(log)}


def test_sigkill_while_writing_a_checkpoint_resumes_from_the_last_complete_one(
    tmp_path, corpus, xla_cache):
  steps = 12
  workdir = tmp_path / 'run'
  checkpoints = workdir / 'checkpoints'
  command = _command(workdir, corpus, steps=steps, checkpoint_every=2,
                     cache=xla_cache)
  killed_log = tmp_path / 'killed.log'
  with open(killed_log, 'w') as log:
    proc = subprocess.Popen(
        [sys.executable, '-c', _SLOW_SAVE_CHILD] + command[3:], cwd=ROOT,
        env=_env(BERT_JAX_TEST_SLOW_SAVE='3'), stdout=log,
        stderr=subprocess.STDOUT)
    # Kill once a checkpoint is complete and the next one is half written.
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline:
      names = os.listdir(checkpoints) if checkpoints.is_dir() else []
      if (any(n.isdigit() for n in names)
          and any(_TMP.match(n) for n in names)):
        proc.send_signal(signal.SIGKILL)
        break
      time.sleep(0.005)
    proc.wait(timeout=60)
  first_log = killed_log.read_text()
  assert proc.returncode == -signal.SIGKILL, first_log[-3000:]

  # What orbax left: complete step directories, and the half-written one
  # under its temporary name, with no commit marker.
  names = os.listdir(checkpoints)
  complete = sorted(int(n) for n in names if n.isdigit())
  partial = [n for n in names if _TMP.match(n)]
  assert complete and partial, names
  assert all(int(_TMP.match(n).group(1)) > complete[-1] for n in partial), names
  for n in partial:
    assert not list((checkpoints / n).rglob('commit_success.txt')), n
  for s in complete:
    assert (checkpoints / str(s) / 'state').is_dir()
    assert (checkpoints / str(s) / 'data').is_dir()

  # The same command again: restores the last complete step, finishes.
  again = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True,
                         text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert f'resumed at step {complete[-1]}\n' in again.stderr, again.stderr[-3000:]
  results = json.loads((workdir / 'results.json').read_text())
  assert results['final_step'] == steps
  # The partial directory was never taken for a checkpoint and is gone.
  assert not [n for n in os.listdir(checkpoints) if _TMP.match(n)]
  # The steps both processes ran (after the restored one) gave the same
  # losses: the run continued from the complete checkpoint's exact state.
  before, after = _logged_losses(first_log), _logged_losses(again.stderr)
  assert min(after) == complete[-1] + 1 and max(after) == steps, sorted(after)
  overlap = sorted(set(before) & set(after))
  assert overlap, (sorted(before), sorted(after))
  assert {s: before[s] for s in overlap} == {s: after[s] for s in overlap}


# --------------------------------------------------------------------------
# Topology change: save on N devices, restore on M, keep training.
# --------------------------------------------------------------------------

def _start_probe(root: pathlib.Path, runs: dict, devices: int, cache: str):
  """train_probe.launch on `devices` fake CPU devices, sharing `cache`."""
  out = root / f'out-{devices}-{"-".join(sorted(runs))}.json'
  runs = {name: dict(overrides, compilation_cache_dir=cache)
          for name, overrides in runs.items()}
  return train_probe.launch(root, out, runs, _env(devices))


def _cut_at_step_3(source: pathlib.Path, *targets: pathlib.Path) -> None:
  """Copies a finished 6-step run, keeping only its step-3 checkpoint."""
  for target in targets:
    shutil.copytree(source, target)
    shutil.rmtree(target / 'checkpoints' / '6')
    (target / 'results.json').unlink()


DP = lambda n: {'mesh.data': n, 'mesh.fsdp': 1}  # noqa: E731
FSDP = lambda n: {'mesh.data': 1, 'mesh.fsdp': n, 'sharding': 'fsdp'}  # noqa: E731

# resumed run: (source run, devices it was saved on, devices it resumes on)
RESHARDED = {
    'dp8_to_1': ('dp8', 8, 1), 'fsdp8_to_1': ('fsdp8', 8, 1),
    'dp8_to_4': ('dp8', 8, 4), 'fsdp8_to_4': ('fsdp8', 8, 4),
    'one_to_dp8': ('one', 1, 8), 'one_to_fsdp8': ('one', 1, 8),
}
# Same global batch and RNG on every topology; only the order of the
# reductions differs, as in tests/test_train.py's 1-vs-8-device tests.
TOPOLOGY_RTOL = 2e-5


@pytest.fixture(scope='module')
def topology_runs(tmp_path_factory, xla_cache):
  """Uninterrupted 6-step runs on 1 and 8 devices, and the six resumed runs.

  Processes that run at the same time get their own root: the probe
  rewrites its corpus files in the root at every run.
  """
  root = tmp_path_factory.mktemp('topology')
  saved8, saved1 = root / 'saved_on_8', root / 'saved_on_1'
  full8 = _start_probe(saved8, {'dp8': DP(8), 'fsdp8': FSDP(8)}, 8, xla_cache)
  full1 = _start_probe(saved1, {'one': {}}, 1, xla_cache)
  runs = {**train_probe.finish(full8), **train_probe.finish(full1)}
  dirs = {'dp8': saved8 / 'dp8', 'fsdp8': saved8 / 'fsdp8',
          'one': saved1 / 'one'}
  on = {n: root / f'on_{n}' for n in (1, 4, 8)}
  for name, (source, _, devices) in RESHARDED.items():
    dirs[name] = on[devices] / name
    _cut_at_step_3(dirs[source], dirs[name])
  # On one device FSDP has nothing to split: the same program as dp.
  started = [
      _start_probe(on[1], {'dp8_to_1': {}, 'fsdp8_to_1': FSDP(1)}, 1,
                   xla_cache),
      _start_probe(on[4], {'dp8_to_4': DP(4), 'fsdp8_to_4': FSDP(4)}, 4,
                   xla_cache),
      _start_probe(on[8], {'one_to_dp8': DP(8), 'one_to_fsdp8': FSDP(8)}, 8,
                   xla_cache)]
  for s in started:
    runs.update(train_probe.finish(s))
  return types.SimpleNamespace(runs=runs, dirs=dirs)


def _assert_close(a: dict, b: dict, steps=None):
  la = np.array([l for s, l in a['losses'] if steps is None or s in steps])
  lb = np.array([l for s, l in b['losses'] if steps is None or s in steps])
  assert la.size and la.shape == lb.shape
  np.testing.assert_allclose(la, lb, rtol=TOPOLOGY_RTOL)
  assert a['checksum'].keys() == b['checksum'].keys()
  for k in a['checksum']:
    np.testing.assert_allclose(a['checksum'][k], b['checksum'][k],
                               rtol=TOPOLOGY_RTOL, atol=TOPOLOGY_RTOL, err_msg=k)


@pytest.mark.parametrize('name', sorted(RESHARDED))
def test_checkpoint_restores_on_another_device_count_and_training_continues(
    topology_runs, name):
  source, _, devices = RESHARDED[name]
  runs = topology_runs.runs
  resumed = runs[name]
  assert resumed['devices'] == devices
  # It resumed from step 3 (not from scratch) and finished.
  assert resumed['step'] == 6
  assert [s for s, _ in resumed['losses']] == [4, 5, 6]
  # Steps 4-6 and the final parameters: those of the uninterrupted run it
  # was cut from, and of the uninterrupted one-device run.
  _assert_close(resumed, runs[source], steps={4, 5, 6})
  _assert_close(resumed, runs['one'], steps={4, 5, 6})


def _saved_layout(checkpoint: pathlib.Path) -> tuple[list[int], set]:
  """(mesh shape, partition specs) of the params as orbax recorded them."""
  meta = ocp.StandardCheckpointer().metadata(checkpoint / 'state').item_metadata
  leaves = jax.tree_util.tree_leaves(
      meta['params'], is_leaf=lambda x: hasattr(x, 'sharding'))
  shapes = {tuple(int(d) for d in x.sharding.shape) for x in leaves}
  assert len(shapes) == 1, shapes
  return list(shapes.pop()), {tuple(x.sharding.partition_spec) for x in leaves}


def test_the_step_3_checkpoints_were_saved_with_the_claimed_layout(topology_runs):
  # Step 3 of a resumed run is its source's checkpoint, as copied.
  dirs = topology_runs.dirs
  mesh, specs = _saved_layout(dirs['dp8_to_4'] / 'checkpoints' / '3')
  assert mesh == [8, 1] and all('fsdp' not in s for s in specs), (mesh, specs)
  mesh, specs = _saved_layout(dirs['fsdp8_to_4'] / 'checkpoints' / '3')
  assert mesh == [1, 8] and any('fsdp' in s for s in specs), (mesh, specs)
  mesh, _ = _saved_layout(dirs['one_to_fsdp8'] / 'checkpoints' / '3')
  assert mesh == [1, 1]
  # And the resumed runs saved step 6 in their own layout.
  mesh, specs = _saved_layout(dirs['fsdp8_to_4'] / 'checkpoints' / '6')
  assert mesh == [1, 4] and any('fsdp' in s for s in specs), (mesh, specs)


# --------------------------------------------------------------------------
# Non-finite loss: stop (naming step, metric, last good checkpoint) or skip.
# --------------------------------------------------------------------------

BAD_STEP = 5   # the 5th update (logged as step 5) computes a NaN loss


def _nan_loss_at(monkeypatch, step: int) -> None:
  """Makes the task's loss (and so its gradients) NaN in update `step` only.

  Wraps train.train_step, which run() looks up when it jits the step: the
  wrapped loss sees the state's step count (`step - 1` during that update),
  as a diverging run would, with no change to library code.
  """
  real_step = train.train_step

  def poisoned_step(state, batch, *, task, **kwargs):
    def loss(params, b, rng, loss_state):
      value, aux = task.train_loss(params, b, rng, loss_state)
      poison = jnp.where(state.step == step - 1, jnp.nan, 1.0)
      return value * poison, aux
    return real_step(state, batch, task=types.SimpleNamespace(train_loss=loss),
                     **kwargs)

  monkeypatch.setattr(train, 'train_step', poisoned_step)


def _restore_params(checkpoint_dir: pathlib.Path, step: int):
  mngr = ocp.CheckpointManager(checkpoint_dir.absolute())
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore()))
  return restored['state']['params']


def _all_finite(tree) -> bool:
  return all(np.isfinite(np.asarray(x)).all()
             for x in jax.tree_util.tree_leaves(tree))


def test_nan_loss_stops_the_run_naming_step_metric_and_last_good_checkpoint(
    tmp_path, monkeypatch):
  _nan_loss_at(monkeypatch, BAD_STEP)
  workdir = tmp_path / 'run'
  config = train_probe.tiny_config(workdir)
  # Health is checked at log, eval and checkpoint time; with no log before
  # the end, the checkpoint at step 6 is what must catch it.
  config.total_steps, config.checkpoint_every, config.log_every = 8, 2, 100
  config.keep_checkpoints = 10
  with pytest.raises(FloatingPointError) as err:
    train.run(config, workdir)
  message = str(err.value)
  checkpoints = workdir / 'checkpoints'
  assert f'non-finite loss at step {BAD_STEP};' in message, message
  assert f'Last good checkpoint: step {BAD_STEP - 1} in {checkpoints}' in message
  # Only the checkpoints before the bad step exist, and they are finite.
  saved = sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
  assert saved == [2, 4], saved
  for step in saved:
    assert _all_finite(_restore_params(checkpoints, step)), step
  assert not (workdir / 'results.json').exists()


def test_checkpointer_refuses_to_save_non_finite_parameters(tmp_path):
  state = train.TrainState(
      step=jnp.zeros((), jnp.int32), params={'w': jnp.array([1.0, jnp.nan])},
      opt_state={}, loss_state={}, rng=jax.random.PRNGKey(0),
      nonfinite_step=-jnp.ones((), jnp.int32),
      nonfinite_what=jnp.zeros((), jnp.int32))
  ckpt = checkpointing.RunCheckpointer(tmp_path / 'checkpoints')
  with pytest.raises(FloatingPointError, match='refusing to checkpoint step 7'):
    ckpt.save(7, state, {'train': {}})
  ckpt.close()
  assert ckpt.latest_step() is None
  assert not [p for p in (tmp_path / 'checkpoints').iterdir()]


def test_nan_loss_with_nonfinite_skip_skips_the_update_and_finishes(
    tmp_path, monkeypatch):
  _nan_loss_at(monkeypatch, BAD_STEP)
  workdir = tmp_path / 'run'
  config = train_probe.tiny_config(workdir)
  config.total_steps, config.checkpoint_every, config.log_every = 8, 4, 1
  config.nonfinite = 'skip'
  results = train.run(config, workdir)
  assert results['final_step'] == 8
  skipped = {h['step']: h['skipped_steps'] for h in results['train_history']
             if 'skipped_steps' in h}
  assert skipped == {s: float(s == BAD_STEP) for s in range(1, 9)}, skipped
  # The bad step's loss is not averaged into the log (it has no value).
  losses = {h['step']: h['loss'] for h in results['train_history']
            if 'loss' in h}
  assert not np.isfinite(losses.get(BAD_STEP, np.nan))
  assert all(np.isfinite(v) for s, v in losses.items() if s != BAD_STEP)
  for step in (4, 8):
    assert _all_finite(_restore_params(workdir / 'checkpoints', step))
  assert np.isfinite(results['final_eval']['mlm_loss'])


# --------------------------------------------------------------------------
# Full disk during a checkpoint save.
# --------------------------------------------------------------------------

@contextlib.contextmanager
def _disk_that_fills(directory: pathlib.Path):
  """Yields fill(): afterwards, writes under `directory` fail for real.

  As root (who ignores permissions) `directory` is a small tmpfs and fill()
  writes a file until the kernel answers ENOSPC; as another user fill()
  makes the directory read-only (EACCES).
  """
  directory.mkdir(parents=True)
  if os.geteuid() != 0:
    yield lambda: directory.chmod(0o555)
    directory.chmod(0o755)
    return
  mount = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=64m', 'tmpfs',
                          str(directory)], capture_output=True, text=True)
  if mount.returncode:
    pytest.skip(f'root, but cannot mount a small tmpfs: {mount.stderr}')

  def fill():
    with open(directory / 'filler', 'wb', buffering=0) as f:
      for size in (1 << 20, 1 << 12, 1):
        try:
          while True:
            f.write(b'\0' * size)
        except OSError as e:
          if e.errno != errno.ENOSPC:
            raise

  try:
    yield fill
  finally:
    subprocess.run(['umount', '-l', str(directory)], check=False)


def test_full_disk_during_save_names_the_path_and_keeps_the_last_checkpoint(
    tmp_path, monkeypatch):
  workdir = tmp_path / 'run'
  checkpoints = workdir / 'checkpoints'
  config = train_probe.tiny_config(workdir)     # checkpoints at 3 and 6
  with _disk_that_fills(checkpoints) as fill:
    real_save = checkpointing.RunCheckpointer.save

    def save_then_fill(self, step, state, data_state):
      real_save(self, step, state, data_state)
      if step == 3:
        self.wait()     # checkpoint 3 is complete on disk; then the disk fills
        fill()

    monkeypatch.setattr(checkpointing.RunCheckpointer, 'save', save_then_fill)
    with pytest.raises(checkpointing.CheckpointSaveError) as err:
      train.run(config, workdir)
    assert str(checkpoints) in str(err.value), err.value
    assert not (workdir / 'results.json').exists()
    # Still on the full disk: step 3 is the latest and restores, finite.
    mngr = ocp.CheckpointManager(checkpoints.absolute())
    assert mngr.latest_step() == 3, os.listdir(checkpoints)
    assert _all_finite(_restore_params(checkpoints, 3))


@pytest.mark.parametrize('where', ['is_a_file', 'under_a_file'])
def test_unusable_checkpoint_directory_is_reported_when_the_run_starts(
    tmp_path, where):
  # Works as root too: no permission bits involved, the path cannot be a
  # directory at all.
  blocker = tmp_path / 'blocker'
  blocker.write_text('not a directory')
  directory = blocker if where == 'is_a_file' else blocker / 'checkpoints'
  with pytest.raises(checkpointing.CheckpointSaveError,
                     match=re.escape(str(directory))):
    checkpointing.RunCheckpointer(directory)


def test_hosts_probing_one_shared_checkpoint_directory_do_not_collide(tmp_path):
  # CI caught this: two processes of one run probed `checkpoints/` with the
  # same probe name, and one unlinked the other's probe before it could.
  # Many concurrent probes of one directory must all pass and leave nothing.
  directory = tmp_path / 'checkpoints'
  errors = []
  barrier = threading.Barrier(8)

  def probe_many():
    barrier.wait()
    try:
      for _ in range(200):
        checkpointing.check_writable(directory)
    except checkpointing.CheckpointSaveError as e:
      errors.append(e)

  threads = [threading.Thread(target=probe_many) for _ in range(8)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors, errors[0]
  assert os.listdir(directory) == []
