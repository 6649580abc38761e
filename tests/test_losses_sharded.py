"""GHM under data parallelism: 8 host devices reproduce the single-device run.

`--xla_force_host_platform_device_count` only takes effect before jax
initialises its backends, so the check runs in a fresh subprocess. It runs
three batches (the EMA state threaded through) three ways: on one device;
under `jax.jit` with the batch sharded over an 8-device mesh (NamedSharding,
global sums, no axis_name); and inside `shard_map` with `axis_name`.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

_SCRIPT = r'''
import json
import numpy as np
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import losses

assert jax.device_count() == 8, jax.devices()
mesh = Mesh(np.array(jax.devices()), ('data',))
rng = np.random.default_rng(0)
out = {}
for name in ('ghm', 'sigmoid_ghm'):
  fn = losses.get(name)
  batches = []
  for i in range(3):
    x = (rng.normal(size=(16, 6, 5)) * (1 + i)).astype(np.float32)
    if name == 'ghm':
      y = rng.integers(0, 5, (16, 6))
    else:
      y = (rng.random((16, 6, 5)) < 0.3).astype(np.int32)
    w = (rng.random((16, 6)) < 0.8).astype(np.float32)
    w[3, 2] = 0.5  # A fractional weight: the histogram is weighted.
    batches.append((x, y, w))

  def step(state, x, y, w, axis_name=None):
    f = lambda z: fn(z, y, weights=w, state=state, bins=10, momentum=0.75,
                     axis_name=axis_name)
    (loss, new_state), grad = jax.value_and_grad(f, has_aux=True)(x)
    return loss, grad, new_state

  def run(stepper, put):
    state = losses.ghm.init_state(10)
    record = []
    for x, y, w in batches:
      loss, grad, state = stepper(state, *put(x, y, w))
      record.append([float(loss), np.asarray(grad).tolist(),
                     np.asarray(state['counts']).tolist(),
                     np.asarray(state['updates']).tolist()])
    return record

  single = run(jax.jit(step), lambda *a: a)
  data = NamedSharding(mesh, P('data'))
  sharded_put = lambda *a: tuple(jax.device_put(v, data) for v in a)
  jit_sharded = run(jax.jit(step), sharded_put)
  mapped = jax.jit(jax.shard_map(
      lambda s, x, y, w: step(s, x, y, w, axis_name='data'), mesh=mesh,
      in_specs=(P(), P('data'), P('data'), P('data')),
      out_specs=(P(), P('data'), P())))
  shard_mapped = run(mapped, sharded_put)
  out[name] = {'single': single, 'jit_sharded': jit_sharded,
               'shard_map': shard_mapped}
print('RESULT' + json.dumps(out))
'''


@pytest.fixture(scope='module')
def results():
  env = dict(os.environ,
             XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu')
  repo = pathlib.Path(__file__).resolve().parents[1]
  proc = subprocess.run([sys.executable, '-c', _SCRIPT], env=env, cwd=repo,
                        capture_output=True, text=True, timeout=600,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-4000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith('RESULT')][-1]
  return json.loads(line[len('RESULT'):])


@pytest.mark.parametrize('name', ['ghm', 'sigmoid_ghm'])
@pytest.mark.parametrize('mode', ['jit_sharded', 'shard_map'])
def test_sharded_ghm_equals_single_device(results, name, mode):
  single, sharded = results[name]['single'], results[name][mode]
  for step, (a, b) in enumerate(zip(single, sharded)):
    loss_a, grad_a, counts_a, updates_a = a
    loss_b, grad_b, counts_b, updates_b = b
    np.testing.assert_allclose(loss_b, loss_a, rtol=1e-6, err_msg=str(step))
    np.testing.assert_allclose(grad_b, grad_a, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(counts_b, counts_a, rtol=1e-6)
    np.testing.assert_array_equal(updates_b, updates_a)
  assert max(single[-1][3]) == 3  # The EMA saw all three batches.
