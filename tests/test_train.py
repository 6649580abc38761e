"""The trainer: resume, accumulation, multi-device and multi-process equality."""

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import optim
from bert_jax import train
from bert_jax.heads import BertForSequenceClassification
from bert_jax.model import BertConfig
from bert_jax.tasks import base

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tests'))
import train_probe  # noqa: E402  pylint: disable=g-import-not-at-top


def _start_probe(tmp, runs, *, devices=1, env=None):
  """train_probe.launch on `devices` fake CPU devices, in root `tmp`."""
  out = tmp / f'out-{len(list(tmp.glob("out-*.log")))}.json'
  full_env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL='2',
                  XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
                  **(env or {}))
  return train_probe.launch(tmp, out, runs, full_env)


def _run_probe(tmp, runs, *, devices=1, env=None, timeout=900):
  return train_probe.finish(_start_probe(tmp, runs, devices=devices, env=env),
                            timeout=timeout)


def _assert_close_runs(a, b, rtol):
  la, lb = np.array(a['losses']), np.array(b['losses'])
  np.testing.assert_array_equal(la[:, 0], lb[:, 0])
  np.testing.assert_allclose(la[:, 1], lb[:, 1], rtol=rtol)
  assert a['checksum'].keys() == b['checksum'].keys()
  for k in a['checksum']:
    np.testing.assert_allclose(a['checksum'][k], b['checksum'][k],
                               rtol=rtol, atol=rtol, err_msg=k)


def test_resume_continues_the_same_run_exactly(tmp_path):
  """Uninterrupted 6 steps == 3 steps, checkpoint, restart, 3 more (bit for bit)."""
  full = tmp_path / 'full'
  results = train.run(train_probe.tiny_config(full), full)
  uninterrupted = train_probe.summarize(full, results)
  # The same run, with its step-6 checkpoint removed: it restarts from 3.
  cut = tmp_path / 'cut'
  shutil.copytree(full, cut)
  shutil.rmtree(cut / 'checkpoints' / '6')
  (cut / 'results.json').unlink()
  resumed = train_probe.summarize(cut, train.run(train_probe.tiny_config(cut), cut))
  assert [s for s, _ in resumed['losses']] == [4, 5, 6]
  assert resumed['losses'] == uninterrupted['losses'][3:]
  assert resumed['checksum'] == uninterrupted['checksum']
  assert resumed['final_eval'] == uninterrupted['final_eval']
  # Loss went down over the 6 steps (the run learns, not just replays).
  assert uninterrupted['losses'][-1][1] < uninterrupted['losses'][0][1]
  # Killed after its final checkpoint, before results.json: the restart has
  # no step left to run and must still evaluate the final state.
  done = tmp_path / 'done'
  shutil.copytree(full, done)
  (done / 'results.json').unlink()
  again = train.run(train_probe.tiny_config(done), done)
  assert again['final_step'] == 6 and again['final_eval']
  assert (train_probe.summarize(done, again)['final_eval']
          == uninterrupted['final_eval'])


def test_bf16_compute_trains_like_fp32_and_keeps_fp32_params(tmp_path):
  """model.dtype=bfloat16: bf16 matmuls, fp32 params/optimizer/loss."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from bert_jax import tasks  # pylint: disable=g-import-not-at-top
  runs, states, configs = {}, {}, {}
  for dtype in ('float32', 'bfloat16'):
    workdir = tmp_path / dtype
    configs[dtype] = config = train_probe.tiny_config(workdir)
    config.model.dtype = dtype
    runs[dtype] = train_probe.summarize(workdir, train.run(config, workdir))
    mngr = ocp.CheckpointManager((workdir / 'checkpoints').absolute())
    states[dtype] = mngr.restore(mngr.latest_step(), args=ocp.args.Composite(
        state=ocp.args.StandardRestore()))['state']
    dtypes = {str(x.dtype) for x in jax.tree_util.tree_leaves(
        (states[dtype]['params'], states[dtype]['opt_state']))
              if x.dtype.kind == 'f'}
    assert dtypes == {'float32'}, (dtype, dtypes)
  fp32, bf16 = (np.array(runs[d]['losses']) for d in ('float32', 'bfloat16'))
  assert np.isfinite(bf16).all()
  np.testing.assert_array_equal(fp32[:, 0], bf16[:, 0])
  # Near init the MLM loss is ~log(vocab) whatever the logits' rounding, so
  # the curves agree closely; the gradients below are the sharper check.
  np.testing.assert_allclose(bf16[:, 1], fp32[:, 1], rtol=1e-3)
  assert bf16[-1, 1] < bf16[0, 1]

  # One gradient on the trained fp32 params, same batch and RNG, computed
  # with fp32 and with bf16 compute: close in direction and size, but not
  # equal (bf16 rounding is really there), and fp32 whatever the compute.
  params = states['float32']['params']
  grads = {}
  for dtype, config in configs.items():
    task = tasks.get(config.task)(config)
    batch = next(iter(task.train_iterator(config.batch_size, 0, 1, seed=0)))
    loss_fn = lambda p, task=task, batch=batch: task.train_loss(
        p, batch, jax.random.PRNGKey(3), {})[0]
    grads[dtype] = jax.jit(jax.grad(loss_fn))(params)
  flat = {d: np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(g)])
          for d, g in grads.items()}
  assert {x.dtype for x in jax.tree_util.tree_leaves(grads['bfloat16'])} == {
      np.dtype('float32')}
  a, b = flat['float32'], flat['bfloat16']
  cosine = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
  rel = np.linalg.norm(a - b) / np.linalg.norm(a)
  assert cosine > 0.999, cosine
  assert 1e-4 < rel < 0.05, rel


class _ClassifierTask(base.Task):
  """A tiny random-input classifier, to test train_step in isolation."""

  def __init__(self):
    super().__init__(None)
    self.bert_config = BertConfig(vocab_size=50, hidden_size=16,
                                  num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, hidden_dropout_prob=0.0,
                                  attention_probs_dropout_prob=0.0,
                                  max_position_embeddings=16)
    self.model = BertForSequenceClassification(self.bert_config, num_labels=3)

  def init_params(self, rng, batch):
    return self.model.init(rng, batch['ids'], batch['ids'] * 0, batch['ids'] * 0 + 1)['params']

  def train_loss(self, params, batch, rng, loss_state):
    logits = self.model.apply({'params': params}, batch['ids'], batch['ids'] * 0,
                              batch['ids'] * 0 + 1)
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), batch['y'][:, None], -1)
    return nll.mean(), ({}, loss_state)

  def eval_step(self, params, batch):
    raise NotImplementedError

  def train_iterator(self, *a):
    raise NotImplementedError


def _state(task, tx, batch):
  params = task.init_params(jax.random.PRNGKey(0), batch)
  return train.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=tx.init(params), loss_state={},
                          rng=jax.random.PRNGKey(1),
                          nonfinite_step=-jnp.ones((), jnp.int32),
                          nonfinite_what=jnp.zeros((), jnp.int32))


def test_gradient_accumulation_equals_one_k_times_batch():
  task = _ClassifierTask()
  rng = np.random.default_rng(0)
  batch = dict(ids=rng.integers(0, 50, (16, 8)).astype(np.int32),
               y=rng.integers(0, 3, 16).astype(np.int32))
  results = {}
  for k in (1, 4):
    cfg = dict(name='adamw', lr=1e-2, grad_accum_steps=k, warmup_steps=None)
    tx, schedule = optim.make_optimizer(cfg, task.init_params(jax.random.PRNGKey(0), batch), 10)
    step = jax.jit(lambda s, b, tx=tx, schedule=schedule, k=k: train.train_step(
        s, b, task=task, tx=tx, schedule=schedule, grad_accum_steps=k,
        skip_nonfinite=False))
    state = _state(task, tx, batch)
    for _ in range(2):   # two optimizer updates
      for i in range(k):
        micro = {n: v[i * 16 // k:(i + 1) * 16 // k] for n, v in batch.items()}
        state, _ = step(state, micro)
    results[k] = state.params
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6),
      results[1], results[4])
  # And the params did move.
  moved = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()),
                                 results[1], task.init_params(jax.random.PRNGKey(0), batch))
  assert max(jax.tree_util.tree_leaves(moved)) > 1e-3


def test_nonfinite_step_is_never_applied_and_is_reported():
  task = _ClassifierTask()
  batch = dict(ids=np.ones((4, 8), np.int32), y=np.zeros(4, np.int32))
  tx, schedule = optim.make_optimizer(dict(name='adamw', lr=1e-2), task.init_params(
      jax.random.PRNGKey(0), batch), 10)
  for skip in (False, True):
    state = _state(task, tx, batch)
    good = state.params
    poisoned = jax.tree_util.tree_map(lambda x: x, state)
    # NaN in the parameters' gradient path: a NaN embedding row that is used.
    bad_params = jax.tree_util.tree_map(lambda x: x, state.params)
    emb = bad_params['bert']['embeddings']['word_embeddings']['embedding']
    bad_params['bert']['embeddings']['word_embeddings']['embedding'] = emb.at[1].set(jnp.nan)
    poisoned = state.replace(params=bad_params)
    new, metrics = train.train_step(poisoned, batch, task=task, tx=tx,
                                    schedule=schedule, grad_accum_steps=1,
                                    skip_nonfinite=skip)
    assert float(metrics['skipped_steps'][0]) == 1.0
    # The update was not applied: params are exactly the ones given.
    jax.tree_util.tree_map(np.testing.assert_array_equal, new.params, bad_params)
    # Nor did the optimizer's moments or count move (Adam's count would
    # shift every later bias correction).
    jax.tree_util.tree_map(np.testing.assert_array_equal, new.opt_state,
                           poisoned.opt_state)
    assert int(new.step) == int(poisoned.step) + 1
    if skip:
      assert int(new.nonfinite_step) == -1
    else:
      assert int(new.nonfinite_step) == 0
      assert train.NONFINITE_WHAT[int(new.nonfinite_what)] == 'loss'
    del good


class _KeyedTask(_ClassifierTask):
  """The loss depends on the step's key: (w . u)^2 with u drawn from it, and
  the first draw reported as a metric, so a test sees which key it got."""

  def init_params(self, rng, batch):
    return {'w': jnp.ones((4,), jnp.float32)}

  def train_loss(self, params, batch, rng, loss_state):
    u = jax.random.uniform(rng, (4,))
    one = jnp.ones((), jnp.float32)
    return jnp.dot(params['w'], u) ** 2, ({'draw': (u[0], one)}, loss_state)


def test_train_step_draws_fold_in_of_the_base_key_and_the_step():
  task = _KeyedTask()
  batch = dict(ids=np.zeros((2, 4), np.int32), y=np.zeros(2, np.int32))
  tx, schedule = optim.make_optimizer(
      dict(name='adamw', lr=1e-3, weight_decay=0.0), task.init_params(None, batch), 10)
  step = jax.jit(lambda s, b: train.train_step(
      s, b, task=task, tx=tx, schedule=schedule, grad_accum_steps=1,
      skip_nonfinite=False))
  state = _state(task, tx, batch)
  base_key = state.rng
  draws = []
  for i in range(3):
    state, metrics = step(state, batch)
    draws.append(float(metrics['draw'][0]))
    # The spec, computed outside the trainer: key_i = fold_in(base, i).
    want = float(jax.random.uniform(jax.random.fold_in(base_key, i), (4,))[0])
    assert draws[-1] == want, (i, draws[-1], want)
  assert len(set(draws)) == 3, draws   # a new key at every step
  # The base key itself never changes (resume re-derives the same keys).
  np.testing.assert_array_equal(state.rng, base_key)


def _np_adamw(p, m, v, g, t, *, lr, b1, b2, eps, wd, decayed):
  """One AdamW update in float64 NumPy (Loshchilov & Hutter; BERT's eps)."""
  m = b1 * m + (1 - b1) * g
  v = b2 * v + (1 - b2) * g * g
  m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
  update = m_hat / (np.sqrt(v_hat) + eps) + (wd * p if decayed else 0.0)
  return p - lr * update, m, v


def test_train_step_applies_numpy_adamw_to_the_models_gradients():
  """Three jitted train steps equal AdamW written out in NumPy, driven by
  the model's own gradients at the NumPy parameters. Weight decay follows
  BERT's rule by leaf name: kernels and embeddings decay; LayerNorm and
  biases do not."""
  task = _ClassifierTask()
  rng = np.random.default_rng(1)
  batch = dict(ids=rng.integers(0, 50, (8, 8)).astype(np.int32),
               y=rng.integers(0, 3, 8).astype(np.int32))
  hp = dict(lr=3e-3, b1=0.9, b2=0.999, eps=1e-6, wd=0.1)
  tx, schedule = optim.make_optimizer(
      dict(name='adamw', lr=hp['lr'], b1=hp['b1'], b2=hp['b2'], eps=hp['eps'],
           weight_decay=hp['wd'], decay='constant', warmup_steps=None,
           clip_global_norm=None),
      task.init_params(jax.random.PRNGKey(0), batch), 10)
  step = jax.jit(lambda s, b: train.train_step(
      s, b, task=task, tx=tx, schedule=schedule, grad_accum_steps=1,
      skip_nonfinite=False))
  state = _state(task, tx, batch)
  paths = [jax.tree_util.keystr(k) for k, _ in
           jax.tree_util.tree_flatten_with_path(state.params)[0]]
  decayed = [not (('LayerNorm' in k) or k.endswith("['bias']")) for k in paths]
  assert any(decayed) and not all(decayed)
  p = [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(state.params)]
  m = [np.zeros_like(x) for x in p]
  v = [np.zeros_like(x) for x in p]
  treedef = jax.tree_util.tree_structure(state.params)
  grad_fn = jax.jit(jax.grad(lambda q: task.train_loss(q, batch, None, {})[0]))
  for t in range(1, 4):
    g = jax.tree_util.tree_leaves(grad_fn(jax.tree_util.tree_unflatten(
        treedef, [x.astype(np.float32) for x in p])))
    for i in range(len(p)):
      p[i], m[i], v[i] = _np_adamw(p[i], m[i], v[i], np.asarray(g[i], np.float64),
                                   t, decayed=decayed[i], **hp)
    state, _ = step(state, batch)
  for k, want, got in zip(paths, p, jax.tree_util.tree_leaves(state.params)):
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-6, err_msg=k)


@pytest.fixture(scope='module')
def eight_device_runs(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('mesh')
  # Starting from pretrained weights: the loaded parameters go through
  # train.initial_state's sharded, donated path on every mesh.
  init = {'model.init_from': train_probe.export_pretrained(tmp / 'pretrained')}
  # Both at once: on a small machine one probe's imports and tracing overlap
  # the other's compiled steps.
  single = _start_probe(tmp / 'one', {'single': init}, devices=1)
  multi = _start_probe(tmp / 'eight', {
      'dp': {'mesh.data': 8, 'mesh.fsdp': 1, **init},
      'fsdp': {'mesh.data': 1, 'mesh.fsdp': 8, 'sharding': 'fsdp', **init},
  }, devices=8)
  return train_probe.finish(single)['single'], train_probe.finish(multi)


def test_data_parallel_on_8_devices_matches_one_device(eight_device_runs):
  single, multi = eight_device_runs
  assert multi['dp']['devices'] == 8
  # Same global batch, same RNG; only the order of reductions differs.
  _assert_close_runs(single, multi['dp'], rtol=2e-5)


def test_fsdp_on_8_devices_matches_one_device(eight_device_runs):
  single, multi = eight_device_runs
  _assert_close_runs(single, multi['fsdp'], rtol=2e-5)


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_process_fsdp_run_matches_one_process_and_resumes_on_one(tmp_path):
  """FSDP across 2 processes (gloo): each host holds half of every sharded
  parameter, so saving must not copy a parameter to one host. The run equals
  the one-process run on the same global batch, and its step-3 checkpoint
  restores on 1 process and continues equal to that run."""
  port = _free_port()
  init = {'model.init_from': train_probe.export_pretrained(tmp_path / 'pretrained')}
  fsdp2 = {'mesh.data': 1, 'mesh.fsdp': 2, 'sharding': 'fsdp', **init}
  # The one-process reference runs beside the pair, in its own root.
  reference = _start_probe(tmp_path / 'reference', {'one_proc': fsdp2}, devices=2)
  procs, outs = [], []
  for pid in range(2):
    out = tmp_path / f'proc{pid}.json'
    outs.append(out)
    runs = {'two_proc': {'distributed.coordinator_address': f'127.0.0.1:{port}',
                         'distributed.num_processes': 2,
                         'distributed.process_id': pid, **fsdp2}}
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL='2',
               XLA_FLAGS='--xla_force_host_platform_device_count=1',
               PROBE_GLOO='1')
    procs.append(subprocess.Popen(
        [sys.executable, str(ROOT / 'tests' / 'train_probe.py'), str(tmp_path),
         str(out), json.dumps(runs)], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True))
  logs = [p.communicate(timeout=900)[0] for p in procs]
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-4000:]
  two = json.loads(outs[0].read_text())['two_proc']
  assert two['processes'] == 2 and two['devices'] == 2
  one = train_probe.finish(reference)['one_proc']
  _assert_close_runs(one, two, rtol=2e-5)

  # Keep the 2-process run's step-3 checkpoint only; resume on 1 process.
  resumed_dir = tmp_path / 'resume' / 'resumed'
  shutil.copytree(tmp_path / 'two_proc', resumed_dir)
  shutil.rmtree(resumed_dir / 'checkpoints' / '6')
  (resumed_dir / 'results.json').unlink()
  resumed = _run_probe(tmp_path / 'resume', {'resumed': fsdp2},
                       devices=2)['resumed']
  assert resumed['processes'] == 1 and resumed['step'] == 6
  assert [s for s, _ in resumed['losses']] == [4, 5, 6]
  after = {s: l for s, l in one['losses'] if s > 3}
  np.testing.assert_allclose([l for _, l in resumed['losses']],
                             [after[s] for s in (4, 5, 6)], rtol=2e-5)
  for k in one['checksum']:
    np.testing.assert_allclose(resumed['checksum'][k], one['checksum'][k],
                               rtol=2e-5, atol=2e-5, err_msg=k)
