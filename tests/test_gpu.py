"""GPU-only correctness: cuDNN fused attention and bf16 training.

Skipped without a GPU; step a of experiments/gpu_check.sh runs it on one.
References are the same model in fp32 with XLA's attention: on random
inputs, the bf16 runs must land as close to it as bf16 arithmetic allows
(relative error of a few 1e-3), cuDNN's kernel no further than XLA's own
bf16 attention, and padded keys must not reach real tokens.
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import model as model_lib
from bert_jax import optim
from bert_jax import train
from experiments import bench_utils as bu
from experiments import benchmark

pytestmark = pytest.mark.skipif(
    jax.default_backend() != 'gpu',
    reason='needs a GPU (cuDNN fused attention, bf16 matrix units)')

# The fused kernel under test; a CPU run of these bodies (to check the tests
# themselves) can set it to None, JAX's default.
CUDNN = 'cudnn'
ARCH = dict(vocab_size=2048, hidden_size=256, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=1024,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
LENGTHS = (128, 100, 37, 1)   # right-padded rows of one batch, T = 128


def _rel(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _encoder_batch(seed):
  rng = np.random.default_rng(seed)
  b, t = len(LENGTHS), max(LENGTHS)
  ids = rng.integers(5, ARCH['vocab_size'], (b, t)).astype(np.int32)
  mask = (np.arange(t)[None, :] < np.array(LENGTHS)[:, None]).astype(np.int32)
  types = np.zeros((b, t), np.int32)
  types[:, t // 2:] = 1
  return jnp.asarray(ids * mask), jnp.asarray(types * mask), jnp.asarray(mask)


def _encoder(attention, dtype):
  config = model_lib.BertConfig(**ARCH, dtype=dtype,
                                attention_implementation=attention)
  return model_lib.BertModel(config)


@functools.lru_cache(maxsize=None)
def _encoder_params():
  ids, types, mask = _encoder_batch(0)
  return _encoder('xla', 'float32').init(jax.random.PRNGKey(0), ids, types,
                                         mask)


def _run(attention, dtype, ids, types, mask):
  """(sequence output fp32 [B, T, H], gradients of a fixed random
  projection of the real tokens' outputs w.r.t. the params), jitted."""
  model = _encoder(attention, dtype)
  proj = jax.random.normal(jax.random.PRNGKey(7), (ARCH['hidden_size'],))
  real = mask[..., None].astype(jnp.float32)

  def loss(params):
    seq, _ = model.apply(params, ids, types, mask)
    seq = seq.astype(jnp.float32)
    return jnp.sum(jnp.tanh(seq @ proj) * real[..., 0]), seq

  fn = jax.jit(jax.value_and_grad(loss, has_aux=True))
  (_, seq), grads = fn(_encoder_params())
  return np.asarray(seq) * np.asarray(real), grads, fn


def test_cudnn_attention_is_the_fused_kernel():
  ids, types, mask = _encoder_batch(1)
  *_, fn = _run(CUDNN, 'bfloat16', ids, types, mask)
  hlo = fn.lower(_encoder_params()).compile().as_text()
  assert re.search(r'cudnn\$fmha', hlo), 'no cuDNN fused attention in the HLO'
  *_, fn_xla = _run('xla', 'bfloat16', ids, types, mask)
  # Else XLA rewrote its own attention into cuDNN's, and the 'xla' rows of
  # the benchmark would time the fused kernel too.
  assert not re.search(r'cudnn\$fmha',
                       fn_xla.lower(_encoder_params()).compile().as_text()), (
                           "XLA fused 'xla' attention into cuDNN's kernel")


def test_cudnn_attention_matches_xla_forward_and_backward():
  ids, types, mask = _encoder_batch(2)
  ref_out, ref_grads, _ = _run('xla', 'float32', ids, types, mask)
  xla_out, xla_grads, _ = _run('xla', 'bfloat16', ids, types, mask)
  cud_out, cud_grads, _ = _run(CUDNN, 'bfloat16', ids, types, mask)
  assert np.all(np.isfinite(cud_out))
  err_xla, err_cud = _rel(xla_out, ref_out), _rel(cud_out, ref_out)
  # bf16 vs fp32 sits near 4e-3 here; cuDNN may round differently from XLA,
  # not worse than twice as far.
  assert err_xla < 2e-2, err_xla
  assert err_cud < max(2 * err_xla, 5e-3), (err_cud, err_xla)
  assert _rel(cud_out, xla_out) < 2e-2
  flat = lambda g: np.concatenate(
      [np.ravel(x) for x in jax.tree_util.tree_leaves(g)])
  g_ref, g_xla, g_cud = flat(ref_grads), flat(xla_grads), flat(cud_grads)
  assert np.all(np.isfinite(g_cud))
  gerr_xla, gerr_cud = _rel(g_xla, g_ref), _rel(g_cud, g_ref)
  assert gerr_xla < 5e-2, gerr_xla
  assert gerr_cud < max(2 * gerr_xla, 1e-2), (gerr_cud, gerr_xla)


def test_cudnn_attention_ignores_padded_keys():
  ids, types, mask = _encoder_batch(3)
  out, _, _ = _run(CUDNN, 'bfloat16', ids, types, mask)
  # Different tokens (and segment ids) behind every row's padding.
  noise = jax.random.randint(jax.random.PRNGKey(5), ids.shape, 5,
                             ARCH['vocab_size'])
  pad = mask == 0
  out2, _, _ = _run(CUDNN, 'bfloat16', jnp.where(pad, noise, ids),
                    jnp.where(pad, 1, types), mask)
  np.testing.assert_allclose(out2, out, rtol=0, atol=1e-3)


def _pretrain_setup(dtype, seq=128, batch=8):
  """The real pretraining loss and train step (as the trainer builds them),
  dropout off, on a synthetic bench_utils batch."""
  arch = dict(bu.SIZES['small'], vocab_size=ARCH['vocab_size'])
  spec = dict(arch=arch, dtype=dtype, attention=None, attention_dropout=0.0)
  config = benchmark._bert_config(spec).replace(hidden_dropout_prob=0.0)  # pylint: disable=protected-access
  task = benchmark._bert_jax_task('pretrain', config)  # pylint: disable=protected-access
  host = bu.make_batch('pretrain', batch, seq, arch['vocab_size'], seed=0)
  data = {k: jnp.asarray(host[k]) for k in benchmark.BERT_JAX_KEYS['pretrain']}
  return task, data


def test_bf16_train_steps_track_fp32():
  """Five AdamW steps on one batch from the same weights: the bf16 run's
  loss and gradient norm follow the fp32 run's within bf16 rounding."""
  task32, batch = _pretrain_setup('float32')
  task16, _ = _pretrain_setup('bfloat16')
  params = jax.jit(task32.init_params)(jax.random.PRNGKey(0), batch)
  curves = {}
  for name, task in (('fp32', task32), ('bf16', task16)):
    tx, schedule = optim.make_optimizer(
        dict(name='adamw', lr=1e-3, b1=0.9, b2=0.999, eps=1e-6,
             weight_decay=0.01, clip_global_norm=1.0, warmup_steps=0,
             decay='constant'), params, 100)
    state = train.TrainState(
        step=jnp.zeros((), jnp.int32), params=params,
        opt_state=tx.init(params), loss_state=task.init_loss_state(),
        rng=jax.random.PRNGKey(1), nonfinite_step=-jnp.ones((), jnp.int32),
        nonfinite_what=jnp.zeros((), jnp.int32))
    step = jax.jit(functools.partial(
        train.train_step, task=task, tx=tx, schedule=schedule,
        grad_accum_steps=1, skip_nonfinite=False))
    losses, norms = [], []
    for _ in range(5):
      state, metrics = step(state, batch)
      losses.append(float(metrics['loss'][0]))
      norms.append(float(metrics['grad_norm'][0]))
    assert int(state.nonfinite_step) == -1, name
    curves[name] = np.array(losses), np.array(norms)
  (l32, n32), (l16, n16) = curves['fp32'], curves['bf16']
  assert l32[-1] < l32[0]   # it trains at all
  np.testing.assert_allclose(l16, l32, rtol=2e-2)
  np.testing.assert_allclose(n16, n32, rtol=5e-2)
