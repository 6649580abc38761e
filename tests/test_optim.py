"""Tests for bert_jax.optim against hand-written NumPy optimizers.

Trees are tiny BERT-shaped param dicts (H=4, 2 layers). References run in
float64 NumPy and spell out which leaves get weight decay by leaf name (kernel
and embedding tables only), independently of the module's regex. Besides,
tests/data/optim_reference.npz holds what the optimizer computed before its
rewrite (see test_matches_reference_fixture), to be reproduced bit for bit.
"""

import importlib.util
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from bert_jax import optim

V, H, I, L = 11, 4, 6, 2
TOTAL = 20


# ---------------------------------------------------------------------------
# Fixtures and helpers.
# ---------------------------------------------------------------------------


def _layer(r):
  dense = lambda a, b: {'kernel': r(a, b), 'bias': r(b)}
  ln = lambda: {'scale': 1.0 + r(H), 'bias': r(H)}
  return {
      'attention': {n: dense(H, H)
                    for n in ('query', 'key', 'value', 'output')},
      'attention_LayerNorm': ln(),
      'intermediate': dense(H, I),
      'output': dense(I, H),
      'output_LayerNorm': ln(),
  }


def make_params(seed=0, num_layers=L, scanned=False):
  """A BERT-shaped params tree with random float32 leaves."""
  rng = np.random.default_rng(seed)
  r = lambda *s: rng.normal(size=s).astype(np.float32)
  layers = {f'layer_{i}': _layer(r) for i in range(num_layers)}
  params = {
      'bert': {
          'embeddings': {
              'word_embeddings': {'embedding': r(V, H)},
              'position_embeddings': {'embedding': r(7, H)},
              'token_type_embeddings': {'embedding': r(2, H)},
              'LayerNorm': {'scale': 1.0 + r(H), 'bias': r(H)},
          },
          'encoder': layers,
          'pooler': {'dense': {'kernel': r(H, H), 'bias': r(H)}},
      },
      'mlm': {
          'transform': {'dense': {'kernel': r(H, H), 'bias': r(H)},
                        'LayerNorm': {'scale': 1.0 + r(H), 'bias': r(H)}},
          'output_bias': r(V),
      },
      'nsp': {'dense': {'kernel': r(H, 2), 'bias': r(2)}},
      'classifier': {'dense': {'kernel': r(H, 3), 'bias': r(3)}},
  }
  if scanned:
    params = to_scanned(params)
  return jax.tree.map(jnp.asarray, params)


def to_scanned(params):
  """Same values, layers stacked under bert/encoder/layers (nn.scan layout)."""
  enc = params['bert']['encoder']
  stacked = jax.tree.map(lambda *xs: np.stack(xs),
                         *[enc[f'layer_{i}'] for i in range(len(enc))])
  out = dict(params)
  out['bert'] = dict(params['bert'], encoder={'layers': stacked})
  return out


def random_grads(params, seed, scale=1.0):
  rng = np.random.default_rng(1000 + seed)
  return jax.tree.map(
      lambda x: jnp.asarray(scale * rng.normal(size=x.shape), jnp.float32),
      params)


def flat(tree):
  """path -> float64 numpy array."""
  return {p: np.asarray(x, np.float64)
          for p, x in zip(optim.param_paths(tree), jax.tree.leaves(tree))}


def hand_decayed(path):
  # Written independently of DEFAULT_WD_EXCLUDE: only matrices and embedding
  # tables decay; LayerNorm scale/bias and all biases do not.
  return path.rsplit('/', 1)[-1] in ('kernel', 'embedding')


def cfg(**kw):
  """Constant lr, no clipping, unless overridden."""
  base = dict(lr=0.05, warmup_steps=0, decay='constant', clip_global_norm=0.0)
  base.update(kw)
  return base


def run(tx, params, grads_seq):
  """Applies tx for each gradient (jitted); returns final params, state."""
  state = tx.init(params)
  update = jax.jit(tx.update)
  for g in grads_seq:
    updates, state = update(g, state, params)
    params = optax.apply_updates(params, updates)
  return params, state


def np_optimizer(p0, grads_seq, *, name='adamw', lr_fn=lambda t: 0.05, b1=0.9,
                 b2=0.999, eps=1e-6, wd=0.01, bias_correction=True,
                 trust=lambda path: True, clip=0.0, mult=lambda path: 1.0,
                 frozen=lambda path: False):
  """Reference Adam/AdamW/LAMB in float64 NumPy on flat dicts."""
  w = dict(p0)
  m = {k: np.zeros_like(x) for k, x in w.items()}
  v = {k: np.zeros_like(x) for k, x in w.items()}
  for t, g in enumerate(grads_seq, start=1):
    g = {k: x for k, x in g.items() if not frozen(k)}
    if clip:
      norm = math.sqrt(sum(float(np.sum(x * x)) for x in g.values()))
      g = {k: x * min(1.0, clip / norm) for k, x in g.items()}
    for k, gk in g.items():
      decayed = wd > 0 and hand_decayed(k)
      if name == 'adam' and decayed:
        gk = gk + wd * w[k]  # coupled L2
      m[k] = b1 * m[k] + (1 - b1) * gk
      v[k] = b2 * v[k] + (1 - b2) * gk * gk
      if bias_correction:
        mh, vh = m[k] / (1 - b1 ** t), v[k] / (1 - b2 ** t)
      else:
        mh, vh = m[k], v[k]
      u = mh / (np.sqrt(vh) + eps)
      if name in ('adamw', 'lamb') and decayed:
        u = u + wd * w[k]
      if name == 'lamb' and trust(k):
        wn, un = np.linalg.norm(w[k]), np.linalg.norm(u)
        u = u * (wn / un if wn > 0 and un > 0 else 1.0)
      w[k] = w[k] - lr_fn(t - 1) * mult(k) * u
  return w


def assert_close(got_tree, want_flat, p0_flat, rtol=2e-5, atol=1e-6):
  """Compares parameter changes (atol: float32 rounding of params ~1)."""
  got = flat(got_tree)
  assert got.keys() == want_flat.keys()
  for k in got:
    np.testing.assert_allclose(got[k] - p0_flat[k], want_flat[k] - p0_flat[k],
                               rtol=rtol, atol=atol, err_msg=k)


def state_sizes(state):
  """Element counts of the non-scalar arrays in an optimizer state."""
  return [int(np.size(x)) for x in jax.tree.leaves(state) if np.ndim(x) > 0]


# ---------------------------------------------------------------------------
# Paths and describe.
# ---------------------------------------------------------------------------


def test_param_paths():
  paths = optim.param_paths(make_params())
  assert 'bert/embeddings/word_embeddings/embedding' in paths
  assert 'bert/encoder/layer_1/attention/query/kernel' in paths
  assert 'bert/encoder/layer_0/attention_LayerNorm/scale' in paths
  assert 'mlm/output_bias' in paths
  assert len(paths) == len(set(paths)) == len(jax.tree.leaves(make_params()))
  scanned = optim.param_paths(make_params(scanned=True))
  assert 'bert/encoder/layers/output/kernel' in scanned
  assert not any('layer_' in p for p in scanned)


def test_describe_table():
  params = make_params(scanned=True)
  text = optim.describe(params, cfg(freeze='^bert/embeddings/word',
                                    layerwise_lr_decay=0.5))
  rows = {line.split()[0]: line.split() for line in text.splitlines()[5:]}
  assert set(rows) == set(optim.param_paths(params))
  assert rows['bert/embeddings/word_embeddings/embedding'][1:] == [
      '11x4', '-', '-', 'yes']
  assert rows['bert/embeddings/LayerNorm/scale'][1:] == [
      '4', '0.125', 'off', 'no']
  assert rows['bert/encoder/layers/intermediate/kernel'][1:] == [
      '2x4x6', '0.25..0.5/layer', 'on', 'no']
  assert rows['mlm/output_bias'][1:] == ['11', '1', 'off', 'no']
  assert 'frozen 44' in text  # 11 x 4 word embeddings


def test_default_config_round_trips():
  c = optim.default_config()
  assert c.name == 'adamw' and c.lr == 1e-4 and c.eps == 1e-6
  assert c.weight_decay == 0.01 and c.clip_global_norm == 1.0
  assert c.bias_correction and c.grad_accum_steps == 1
  c.warmup_steps = 3
  c.freeze = '^bert/embeddings/'
  tx, schedule = optim.make_optimizer(c, make_params(), TOTAL)
  params = make_params()
  grads = [random_grads(params, s) for s in range(2)]
  got, _ = run(tx, params, grads)
  # The defaults as NumPy AdamW (eps 1e-6, wd 0.01, bias correction) with a
  # 3-step linear warmup (lr 0, 1/3, ...); the global norm clipped to 1 over
  # the trainable params; the embeddings frozen.
  assert float(schedule(0)) == 0.0
  np.testing.assert_allclose(float(schedule(1)), 1e-4 / 3, rtol=1e-6)
  p0, trainable = flat(params), [k for k in flat(params)
                                 if not k.startswith('bert/embeddings/')]
  clipped = []
  for g in grads:
    g = flat(g)
    norm = math.sqrt(sum(float((g[k] ** 2).sum()) for k in trainable))
    clipped.append({k: g[k] * min(1.0, 1.0 / norm) for k in trainable})
  want = dict(p0)
  m = {k: 0.0 for k in trainable}
  v = {k: 0.0 for k in trainable}
  for t, g in enumerate(clipped, start=1):
    lr = 1e-4 * (t - 1) / 3
    for k in trainable:
      m[k] = 0.9 * m[k] + 0.1 * g[k]
      v[k] = 0.999 * v[k] + 0.001 * g[k] ** 2
      adam = (m[k] / (1 - 0.9 ** t)) / (np.sqrt(v[k] / (1 - 0.999 ** t)) + 1e-6)
      want[k] = want[k] - lr * (adam + (0.01 * want[k] if hand_decayed(k) else 0))
  for k, x in flat(got).items():
    np.testing.assert_allclose(x, want[k], rtol=1e-5, atol=1e-9, err_msg=k)
  assert any(not np.array_equal(flat(got)[k], p0[k]) for k in trainable)


def test_built_from_abstract_frozendict_params():
  # The trainer may build the optimizer from jax.eval_shape output and/or a
  # FrozenDict; only paths and shapes matter, so it then runs on plain dicts.
  from flax.core import FrozenDict
  params = make_params(num_layers=1)
  abstract = jax.eval_shape(lambda: FrozenDict(params))
  c = cfg(bias_correction=False, freeze='word_embeddings', grad_accum_steps=2,
          layerwise_lr_decay=0.5)
  tx, _ = optim.make_optimizer(c, abstract, TOTAL)
  got, state = run(tx, params, [random_grads(params, s) for s in range(2)])
  assert int(optim.update_count(state)) == 1
  assert np.all(flat(got)['bert/embeddings/word_embeddings/embedding'] ==
                flat(params)['bert/embeddings/word_embeddings/embedding'])
  assert np.any(flat(got)['bert/pooler/dense/kernel'] !=
                flat(params)['bert/pooler/dense/kernel'])


# ---------------------------------------------------------------------------
# AdamW, BERT Adam, coupled-L2 Adam.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize('steps', [1, 4])
def test_adamw_matches_numpy(steps):
  params = make_params()
  grads = [random_grads(params, s) for s in range(steps)]
  tx, _ = optim.make_optimizer(cfg(weight_decay=0.1), params, TOTAL)
  got, _ = run(tx, params, grads)
  want = np_optimizer(flat(params), [flat(g) for g in grads], wd=0.1)
  assert_close(got, want, flat(params))


def test_weight_decay_mask_on_zero_gradient():
  # With zero gradients Adam's part is exactly 0, leaving only -lr * wd * w:
  # present on kernels/embeddings, absent on LayerNorm params and biases.
  params = make_params()
  tx, _ = optim.make_optimizer(cfg(lr=0.5, weight_decay=0.1), params, TOTAL)
  zeros = jax.tree.map(jnp.zeros_like, params)
  got, _ = run(tx, params, [zeros])
  p0, p1 = flat(params), flat(got)
  for k in p0:
    expected = p0[k] * (1 - 0.5 * 0.1) if hand_decayed(k) else p0[k]
    np.testing.assert_allclose(p1[k], expected, rtol=1e-6, err_msg=k)


def test_adam_without_bias_correction_is_berts_formula():
  params = make_params()
  grads = [random_grads(params, s) for s in range(3)]
  tx, _ = optim.make_optimizer(cfg(bias_correction=False), params, TOTAL)
  got, _ = run(tx, params, grads)
  want = np_optimizer(flat(params), [flat(g) for g in grads],
                      bias_correction=False)
  assert_close(got, want, flat(params))
  # And it really differs from the bias-corrected update.
  corrected = np_optimizer(flat(params), [flat(g) for g in grads])
  k = 'bert/pooler/dense/kernel'
  assert not np.allclose(corrected[k], want[k], rtol=1e-3)


def test_adam_with_coupled_l2():
  params = make_params()
  grads = [random_grads(params, s) for s in range(3)]
  tx, _ = optim.make_optimizer(cfg(name='adam', weight_decay=0.5), params,
                               TOTAL)
  got, _ = run(tx, params, grads)
  want = np_optimizer(flat(params), [flat(g) for g in grads], name='adam',
                      wd=0.5)
  assert_close(got, want, flat(params))


# ---------------------------------------------------------------------------
# LAMB.
# ---------------------------------------------------------------------------


def _lamb_case():
  """Params/grads hitting both zero-norm cases of the trust ratio."""
  params = make_params()
  params['classifier']['dense']['kernel'] = jnp.zeros((H, 3))  # ||w|| = 0
  params['nsp']['dense']['bias'] = jnp.zeros(2)  # ||w|| = 0 and ||u|| = 0
  grads = [random_grads(params, s) for s in range(3)]
  for g in grads:
    g['bert']['pooler']['dense']['bias'] = jnp.zeros(H)  # ||u|| = 0, ||w|| > 0
    g['nsp']['dense']['bias'] = jnp.zeros(2)
  return params, grads


@pytest.mark.parametrize('exclude', [True, False])
def test_lamb_matches_numpy(exclude):
  params, grads = _lamb_case()
  c = cfg(name='lamb', weight_decay=0.1,
          lamb_exclude_from_layer_adaptation=exclude)
  tx, _ = optim.make_optimizer(c, params, TOTAL)
  got, _ = run(tx, params, grads)
  trust = hand_decayed if exclude else (lambda path: True)
  want = np_optimizer(flat(params), [flat(g) for g in grads], name='lamb',
                      wd=0.1, trust=trust)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(got))
  assert_close(got, want, flat(params))
  # The zero-norm leaves moved by the plain (ratio 1) update.
  assert np.any(flat(got)['classifier/dense/kernel'] != 0)


def test_lamb_without_exclusion_equals_optax_lamb():
  params, grads = _lamb_case()
  c = cfg(name='lamb', weight_decay=0.1,
          lamb_exclude_from_layer_adaptation=False)
  tx, _ = optim.make_optimizer(c, params, TOTAL)
  ref = optax.lamb(0.05, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.1,
                   mask=jax.tree_util.tree_map_with_path(
                       lambda p, _: hand_decayed('/'.join(k.key for k in p)), params))
  got, _ = run(tx, params, grads)
  want, _ = run(ref, params, grads)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_lamb_scanned_uses_per_layer_trust_ratio():
  params = make_params()
  grads = [random_grads(params, s) for s in range(2)]
  c = cfg(name='lamb', weight_decay=0.1, layerwise_lr_decay=0.7)
  tx, _ = optim.make_optimizer(c, params, TOTAL)
  got, _ = run(tx, params, grads)
  sparams = make_params(scanned=True)
  sgrads = [to_scanned(g) for g in grads]
  stx, _ = optim.make_optimizer(c, sparams, TOTAL)
  sgot, _ = run(stx, sparams, sgrads)
  want = flat(to_scanned(jax.tree.map(np.asarray, got)))
  for k, x in flat(sgot).items():
    np.testing.assert_allclose(x, want[k], rtol=1e-5, atol=1e-6, err_msg=k)


# ---------------------------------------------------------------------------
# Schedules.
# ---------------------------------------------------------------------------


PEAK, END, WARM, T = 2e-3, 1e-4, 10, 110


def _closed_form(decay, step, power=2.0):
  if step < WARM:
    return PEAK * step / WARM
  x = min((step - WARM) / (T - WARM), 1.0)
  f = {'linear': 1 - x, 'polynomial': (1 - x) ** power,
       'cosine': 0.5 * (1 + math.cos(math.pi * x)), 'constant': None}[decay]
  return PEAK if f is None else END + (PEAK - END) * f


@pytest.mark.parametrize('decay', ['linear', 'polynomial', 'cosine',
                                   'constant'])
def test_schedule_closed_forms(decay):
  sched = optim.make_schedule(
      dict(lr=PEAK, end_lr=END, warmup_steps=WARM, decay=decay, power=2.0), T)
  # warmup start / mid / end, decay quarter / mid / end, past the end.
  for step in (0, 5, 10, 35, 60, 110, 200):
    np.testing.assert_allclose(float(sched(step)), _closed_form(decay, step),
                               rtol=1e-5, atol=1e-12, err_msg=str(step))
  assert float(sched(0)) == 0.0
  np.testing.assert_allclose(float(sched(WARM)), PEAK, rtol=1e-6)
  if decay != 'constant':
    np.testing.assert_allclose(float(sched(T)), END, rtol=1e-5)
  # Jittable and vectorised over steps.
  steps = jnp.arange(0, T + 1, 11)
  np.testing.assert_allclose(
      jax.jit(sched)(steps), [_closed_form(decay, int(s)) for s in steps],
      rtol=1e-5, atol=1e-12)


def test_schedule_warmup_fraction_and_no_warmup():
  a = optim.make_schedule(dict(lr=PEAK, warmup_fraction=0.25), 40)
  b = optim.make_schedule(dict(lr=PEAK, warmup_steps=10), 40)
  for s in (0, 3, 10, 25, 40):
    assert float(a(s)) == float(b(s))
  c = optim.make_schedule(dict(lr=PEAK, decay='linear'), 40)
  np.testing.assert_allclose([float(c(s)) for s in (0, 20, 40)],
                             [PEAK, PEAK / 2, 0.0], rtol=1e-6, atol=1e-12)


def test_optimizer_follows_schedule():
  # Zero gradients, weight decay only: each step shrinks kernels by lr_t * wd,
  # so the parameters record which learning rates were used.
  params = make_params()
  c = cfg(lr=0.5, weight_decay=0.1, warmup_steps=2, decay='linear')
  tx, sched = optim.make_optimizer(c, params, 4)
  zeros = jax.tree.map(jnp.zeros_like, params)
  got, state = run(tx, params, [zeros] * 3)
  k = 'bert/pooler/dense/kernel'
  lrs = [0.0, 0.25, 0.5]
  np.testing.assert_allclose([float(sched(i)) for i in range(3)], lrs)
  want = flat(params)[k] * np.prod([1 - lr * 0.1 for lr in lrs])
  np.testing.assert_allclose(flat(got)[k], want, rtol=1e-6)
  assert int(optim.update_count(state)) == 3


# ---------------------------------------------------------------------------
# Gradient accumulation.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize('freeze', [None, '^bert/embeddings/'])
def test_grad_accumulation_equals_mean_gradient(freeze):
  k, updates = 3, 2
  params = make_params(num_layers=1)
  micro = [random_grads(params, s, scale=3.0) for s in range(k * updates)]
  means = [jax.tree.map(lambda *g: sum(g) / k, *micro[i * k:(i + 1) * k])
           for i in range(updates)]
  # Warmup over 2 updates and clipping make the result depend on the update
  # count and on clipping the mean (not each micro-batch).
  base = cfg(warmup_steps=2, decay='linear', clip_global_norm=0.5,
             freeze=freeze)
  tx1, _ = optim.make_optimizer(base, params, 4)
  txk, sched = optim.make_optimizer(dict(base, grad_accum_steps=k), params, 4)
  want, _ = run(tx1, params, means)

  state = txk.init(params)
  update = jax.jit(txk.update)
  p = params
  for i, g in enumerate(micro):
    u, state = update(g, state, p)
    if i % k != k - 1:  # micro-steps apply nothing
      assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(u))
    p = optax.apply_updates(p, u)
  assert int(optim.update_count(state)) == updates
  for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  # Had the schedule counted micro-steps, the two updates would have used
  # lr(k - 1), lr(2k - 1) instead of lr(0), lr(1): make sure those differ.
  assert ([float(sched(i)) for i in (0, 1)] !=
          [float(sched(i)) for i in (k - 1, 2 * k - 1)])


# ---------------------------------------------------------------------------
# Layer-wise lr decay and lr multipliers.
# ---------------------------------------------------------------------------


def _expected_depth_mult(path, d):
  if path.startswith('bert/embeddings/'):
    return d ** (L + 1)
  for i in range(L):
    if path.startswith(f'bert/encoder/layer_{i}/'):
      return d ** (L - i)
  return 1.0


def test_layerwise_multipliers_unscanned():
  d = 0.8
  params = make_params()
  mults = flat(optim.lr_multipliers(params, cfg(layerwise_lr_decay=d)))
  for path, m in mults.items():
    np.testing.assert_allclose(m, _expected_depth_mult(path, d), rtol=1e-6,
                               err_msg=path)
  assert mults['bert/pooler/dense/kernel'] == 1.0
  assert mults['classifier/dense/kernel'] == 1.0
  np.testing.assert_allclose(mults['bert/encoder/layer_0/output/kernel'],
                             d ** 2, rtol=1e-6)
  np.testing.assert_allclose(
      mults['bert/embeddings/word_embeddings/embedding'], d ** 3, rtol=1e-6)


def test_layerwise_multipliers_scanned_match_unscanned():
  d = 0.8
  unscanned = optim.lr_multipliers(make_params(), cfg(layerwise_lr_decay=d))
  scanned = optim.lr_multipliers(make_params(scanned=True),
                                 cfg(layerwise_lr_decay=d))
  sflat = {p: np.asarray(x) for p, x in
           zip(optim.param_paths(make_params(scanned=True)),
               jax.tree.leaves(scanned))}
  k = 'bert/encoder/layers/intermediate/kernel'
  assert sflat[k].shape == (L, 1, 1)  # broadcasts along the layer axis
  np.testing.assert_allclose(sflat[k].reshape(-1), [d ** 2, d],
                             rtol=1e-6)
  for i in range(L):
    assert float(unscanned['bert']['encoder'][f'layer_{i}']['intermediate']
                 ['kernel']) == pytest.approx(float(sflat[k][i, 0, 0]))


@pytest.mark.parametrize('scanned', [False, True])
def test_layerwise_decay_scales_updates(scanned):
  d = 0.6
  params = make_params(scanned=scanned)
  c = cfg(weight_decay=0.1)
  txs = [optim.make_optimizer(c, params, TOTAL)[0],
         optim.make_optimizer(dict(c, layerwise_lr_decay=d), params, TOTAL)[0]]
  states = [tx.init(params) for tx in txs]
  updates = [jax.jit(tx.update) for tx in txs]
  for step in range(2):
    g = random_grads(params, step)
    (a, states[0]), (b, states[1]) = [
        u(g, s, params) for u, s in zip(updates, states)]
    a, b = flat(a), flat(b)
    for path in a:
      mult = _expected_depth_mult(path, d)
      if path.startswith('bert/encoder/layers/'):
        shape = (L,) + (1,) * (a[path].ndim - 1)
        mult = np.array([d ** (L - i) for i in range(L)]).reshape(shape)
      np.testing.assert_allclose(b[path], mult * a[path], rtol=1e-5,
                                 atol=1e-9, err_msg=path)


def test_lr_multiplier_rules_first_match_times_layerwise():
  params = make_params()
  rules = [('^classifier/', 10.0), ('kernel$', 0.5), ('^classifier/', 3.0)]
  mults = flat(optim.lr_multipliers(
      params, cfg(lr_multipliers=rules, layerwise_lr_decay=0.5)))
  assert mults['classifier/dense/kernel'] == 10.0  # first rule wins
  assert mults['classifier/dense/bias'] == 10.0
  assert mults['bert/pooler/dense/kernel'] == 0.5
  assert mults['bert/pooler/dense/bias'] == 1.0
  np.testing.assert_allclose(mults['bert/encoder/layer_1/output/kernel'],
                             0.5 * 0.5, rtol=1e-6)
  # Also accepted as a dict, and applied to the updates.
  grads = [random_grads(params, 0)]
  got, _ = run(optim.make_optimizer(cfg(lr_multipliers={'^nsp/': 4.0}),
                                    params, TOTAL)[0], params, grads)
  want = np_optimizer(flat(params), [flat(grads[0])],
                      mult=lambda p: 4.0 if p.startswith('nsp/') else 1.0)
  assert_close(got, want, flat(params))


def test_multipliers_keep_bfloat16():
  params = jax.tree.map(lambda x: x.astype(jnp.bfloat16),
                        make_params(num_layers=2, scanned=True))
  tx, _ = optim.make_optimizer(cfg(layerwise_lr_decay=0.9), params, TOTAL)
  bf_grads = jax.tree.map(lambda x: x.astype(jnp.bfloat16),
                          random_grads(params, 0))
  updates, _ = jax.jit(tx.update)(bf_grads, tx.init(params), params)
  assert {x.dtype for x in jax.tree.leaves(updates)} == {
      jnp.dtype('bfloat16')}


# ---------------------------------------------------------------------------
# Freezing.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize('freeze', ['^bert/embeddings/',
                                    ['word_embeddings', '^bert/embeddings/']])
@pytest.mark.parametrize('name', ['adamw', 'lamb'])
def test_freeze_embeddings(freeze, name):
  params = make_params()
  grads = [random_grads(params, s) for s in range(3)]
  tx, _ = optim.make_optimizer(cfg(name=name, freeze=freeze), params, TOTAL)
  got, state = run(tx, params, grads)
  p0, p1 = flat(params), flat(got)
  is_frozen = lambda p: p.startswith('bert/embeddings/')
  for k in p0:
    if is_frozen(k):
      np.testing.assert_array_equal(p1[k], p0[k], err_msg=k)
    else:
      assert np.any(p1[k] != p0[k]), k
  if name == 'adamw':
    want = np_optimizer(p0, [flat(g) for g in grads], frozen=is_frozen)
    assert_close(got, {**p0, **want}, p0)
  # Moments only for trainable leaves: the state holds exactly mu and nu of
  # each trainable leaf and nothing shaped like the frozen tables.
  trainable = sorted(int(x.size) for p, x in p0.items() if not is_frozen(p))
  assert sorted(state_sizes(state)) == sorted(trainable * 2)
  assert not any(np.shape(x) == (V, H) for x in jax.tree.leaves(state))


def test_state_size_without_freeze_and_with_accumulation():
  params = make_params()
  n_all = sum(int(x.size) for x in jax.tree.leaves(params))
  n_emb = sum(int(x.size) for x in
              jax.tree.leaves(params['bert']['embeddings']))
  tx, _ = optim.make_optimizer(cfg(), params, TOTAL)
  assert sum(state_sizes(tx.init(params))) == 2 * n_all
  # Accumulators (MultiSteps) are also kept for trainable leaves only.
  tx, _ = optim.make_optimizer(cfg(freeze='^bert/embeddings/',
                                   grad_accum_steps=2), params, TOTAL)
  assert sum(state_sizes(tx.init(params))) == 3 * (n_all - n_emb)


# ---------------------------------------------------------------------------
# Clipping.
# ---------------------------------------------------------------------------


def test_global_norm_clipping():
  # eps >> |g| makes Adam's first step ~ linear in g, so the clipping scale
  # shows in the result (with eps ~ 0 Adam would hide it).
  params = make_params(num_layers=1)
  grads = [random_grads(params, s, scale=0.1) for s in range(2)]
  norm = float(optax.global_norm(grads[0]))
  clip = norm / 4
  c = cfg(eps=1.0, clip_global_norm=clip)
  got, _ = run(optim.make_optimizer(c, params, TOTAL)[0], params, grads)
  want = np_optimizer(flat(params), [flat(g) for g in grads], eps=1.0,
                      clip=clip)
  assert_close(got, want, flat(params))
  unclipped = np_optimizer(flat(params), [flat(g) for g in grads], eps=1.0)
  k = 'bert/pooler/dense/kernel'
  assert not np.allclose(unclipped[k], want[k], rtol=1e-3)
  # Under the threshold nothing changes.
  c_big = cfg(eps=1.0, clip_global_norm=10 * norm)
  got_big, _ = run(optim.make_optimizer(c_big, params, TOTAL)[0], params,
                   grads)
  assert_close(got_big, unclipped, flat(params))


def test_clipping_ignores_frozen_gradients():
  params = make_params()
  grads = [random_grads(params, 0, scale=0.1)]
  huge = jax.tree.map(lambda x: x, grads[0])
  huge['bert']['embeddings'] = jax.tree.map(lambda x: 1e3 * x,
                                            huge['bert']['embeddings'])
  c = cfg(eps=1.0, clip_global_norm=0.05, freeze='^bert/embeddings/')
  tx, _ = optim.make_optimizer(c, params, TOTAL)
  a, _ = run(tx, params, grads)
  b, _ = run(tx, params, [huge])
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


# ---------------------------------------------------------------------------
# Config validation.
# ---------------------------------------------------------------------------


BAD_CONFIGS = [
    (dict(name='sgd'), 'config.optim.name: unknown optimizer'),
    (dict(decay='step'), 'config.optim.decay: unknown decay'),
    (dict(lr=-1e-4), 'config.optim.lr: must be >= 0'),
    (dict(weight_decay=-0.1), 'config.optim.weight_decay'),
    (dict(warmup_steps=-5), 'config.optim.warmup_steps'),
    (dict(warmup_steps=2.5), 'config.optim.warmup_steps: must be an integer'),
    (dict(warmup_steps=TOTAL + 1), 'config.optim.warmup_steps: warmup'),
    (dict(warmup_fraction=1.5), 'config.optim.warmup_fraction'),
    (dict(warmup_steps=3, warmup_fraction=0.1),
     'config.optim.warmup_fraction: set either'),
    (dict(b1=1.0), 'config.optim.b1: must be < 1'),
    (dict(b2=-0.1), 'config.optim.b2: must be >= 0'),
    (dict(eps=-1.0), 'config.optim.eps'),
    (dict(power=0.0), 'config.optim.power'),
    (dict(end_lr=-1.0), 'config.optim.end_lr'),
    (dict(clip_global_norm=-1.0), 'config.optim.clip_global_norm'),
    (dict(grad_accum_steps=0), 'config.optim.grad_accum_steps: must be >= 1'),
    (dict(grad_accum_steps=1.5), 'config.optim.grad_accum_steps'),
    (dict(lr='1e-4'), 'config.optim.lr: must be a number'),
    (dict(bias_correction='yes'), 'config.optim.bias_correction'),
    (dict(layerwise_lr_decay=0.0), 'config.optim.layerwise_lr_decay'),
    (dict(layerwise_lr_decay=1.5), 'config.optim.layerwise_lr_decay'),
    (dict(freeze='^bret/'),
     "config.optim.freeze: pattern '^bret/' matches no parameter; paths look "
     "like 'bert/"),
    (dict(freeze=['^bert/embeddings/', '^nope/']),
     "config.optim.freeze: pattern '^nope/' matches no parameter"),
    (dict(freeze='('), "config.optim.freeze: invalid regex '('"),
    (dict(freeze='.*'), 'config.optim.freeze: freezes every parameter'),
    (dict(freeze=3), 'config.optim.freeze'),
    (dict(wd_exclude='[bias'), 'config.optim.wd_exclude: invalid regex'),
    (dict(lr_multipliers=[('^headz/', 2.0)]),
     "config.optim.lr_multipliers: pattern '^headz/' matches no parameter"),
    (dict(lr_multipliers=[('^nsp/', -1.0)]), 'config.optim.lr_multipliers'),
    (dict(lr_multipliers=['^nsp/']), 'config.optim.lr_multipliers'),
    (dict(warmup_step=100),
     'config.optim.warmup_step: unknown optimizer field'),
]


@pytest.mark.parametrize('overrides,message', BAD_CONFIGS,
                         ids=[repr(o) for o, _ in BAD_CONFIGS])
def test_bad_config_raises_naming_key(overrides, message):
  with pytest.raises(ValueError) as e:
    optim.make_optimizer(overrides, make_params(), TOTAL)
  assert message in str(e.value)


def test_bad_config_via_configdict_and_describe():
  c = optim.default_config()
  c.freeze = '^bret/'
  with pytest.raises(ValueError, match=r"config\.optim\.freeze: pattern"):
    optim.make_optimizer(c, make_params(), TOTAL)
  with pytest.raises(ValueError, match=r"config\.optim\.freeze: pattern"):
    optim.describe(make_params(), c)
  with pytest.raises(ValueError, match=r'^finetune\.optim\.name'):
    optim.make_optimizer(ml_collections.ConfigDict(dict(name='sgdm')),
                         make_params(), TOTAL, config_prefix='finetune.optim')


def test_layerwise_decay_needs_encoder_layers():
  params = {'classifier': {'kernel': jnp.ones((2, 2))}}
  with pytest.raises(ValueError, match='config.optim.layerwise_lr_decay: '
                     'found no encoder layers'):
    optim.make_optimizer(dict(layerwise_lr_decay=0.9), params, TOTAL)


def test_bad_total_steps():
  with pytest.raises(ValueError, match='total_steps'):
    optim.make_optimizer({}, make_params(), 0)


def _bert_params():
  """The real parameter tree of a tiny BertForSequenceClassification."""
  from bert_jax.heads import BertForSequenceClassification  # pylint: disable=g-import-not-at-top
  from bert_jax.model import BertConfig  # pylint: disable=g-import-not-at-top
  config = BertConfig(vocab_size=V, hidden_size=H, num_hidden_layers=L,
                      num_attention_heads=2, intermediate_size=I,
                      max_position_embeddings=8)
  ids = jnp.zeros((1, 4), jnp.int32)
  return jax.jit(BertForSequenceClassification(config, num_labels=3).init)(
      jax.random.PRNGKey(0), ids, ids, ids + 1)['params']


def test_masks_on_real_bert_model_paths():
  """Weight decay and layer-wise decay on the model's own parameter paths
  (not a hand-written tree): with zero gradients the AdamW update is
  -lr * mult * wd * w exactly, where w decays only for kernels and
  embedding tables and mult = d ** (L + 1 - depth)."""
  params = _bert_params()
  paths = list(flat(params))
  # Names the rules below rely on really are the model's.
  for k in ('bert/embeddings/word_embeddings/embedding',
            'bert/embeddings/LayerNorm/scale',
            'bert/encoder/layer_0/attention/query/kernel',
            'bert/encoder/layer_1/output/bias',
            'bert/encoder/layer_1/output_LayerNorm/scale',
            'classifier/kernel',
            'bert/pooler/dense/kernel'):
    assert k in paths, (k, paths)
  d, lr, wd = 0.5, 0.1, 0.2
  tx, _ = optim.make_optimizer(cfg(lr=lr, weight_decay=wd,
                                   layerwise_lr_decay=d), params, TOTAL)
  got, _ = run(tx, params, [jax.tree.map(jnp.zeros_like, params)])
  p0, p1 = flat(params), flat(got)

  def depth(path):
    if path.startswith('bert/embeddings/'):
      return 0
    if path.startswith('bert/encoder/layer_'):
      return int(path.split('/')[2].split('_')[1]) + 1
    return L + 1

  seen = set()
  for k in paths:
    mult = d ** (L + 1 - depth(k))
    rate = lr * mult * wd if hand_decayed(k) else 0.0
    np.testing.assert_allclose(p1[k], p0[k] * (1 - rate), rtol=1e-6,
                               atol=1e-9, err_msg=k)
    seen.add((hand_decayed(k), depth(k)))
  # Every depth was seen both decayed and not decayed.
  assert seen == {(a, b) for a in (True, False) for b in range(L + 2)}, seen


# ---------------------------------------------------------------------------
# Bit-for-bit reference: the optimizer before the issue #26 rewrite.
# ---------------------------------------------------------------------------


DATA = pathlib.Path(__file__).resolve().parent / 'data'


def _reference_script():
  spec = importlib.util.spec_from_file_location(
      'make_optim_reference', DATA / 'make_optim_reference.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope='module')
def reference():
  with np.load(DATA / 'optim_reference.npz') as f:
    return _reference_script(), dict(f)


REFERENCE_CASES = ['adamw', 'lamb', 'lamb_no_exclude', 'adam_l2',
                   'no_bias_correction', 'layerwise', 'lr_multipliers',
                   'freeze', 'grad_accum', 'scanned_lamb',
                   'scanned_adamw_accum_freeze']


def test_reference_fixture_inputs_are_the_scripts(reference):
  """The fixture was made from the script's cases and inputs as they are."""
  script, ref = reference
  assert sorted(script.CASES) == sorted(REFERENCE_CASES)
  assert json.loads(str(ref['cases'])) == json.loads(json.dumps(
      {k: list(v) for k, v in script.CASES.items()}))
  np.testing.assert_array_equal(
      ref['params0'], np.concatenate(
          [np.ravel(x) for x in jax.tree.leaves(script.make_params())]))
  np.testing.assert_array_equal(ref['grads'], np.stack([
      np.concatenate([np.ravel(x) for x in jax.tree.leaves(g)])
      for g in script.make_grads(8)]))


@pytest.mark.parametrize('case', REFERENCE_CASES)
def test_matches_reference_fixture(reference, case):
  """The optimizer reproduces tests/data/optim_reference.npz bit for bit.

  Provenance: the fixture was written by tests/data/make_optim_reference.py
  with bert_jax/optim.py as of commit 8cd7bce (before the issue #26 rewrite
  to regex rules), jax 0.10.2, optax 0.2.8, on CPU. Each case runs 4 optimizer
  updates (8 micro-steps with accumulation) of a fixed config on a fixed tiny
  BERT-shaped tree and gradient sequence; every step's updates, the final
  params, the optimizer state (values and tree structure, which checkpoints
  depend on) and the learning rates must be equal, not close.
  """
  script, ref = reference
  got = script.run_case(optim, case)
  for key, value in got.items():
    want = ref[f'{case}/{key}']
    assert value.shape == want.shape, key
    assert np.array_equal(value, want), (
        key, np.abs(value.astype(np.float64) - want).max()
        if value.dtype.kind == 'f' else value)


# ---------------------------------------------------------------------------
# check_config and frozen_mask.
# ---------------------------------------------------------------------------


def test_check_config_fills_defaults_and_normalises():
  c = optim.check_config(None)
  assert c == {**optim.default_config().to_dict(), 'wd_exclude':
               (optim.DEFAULT_WD_EXCLUDE,), 'freeze': (), 'lr_multipliers': ()}
  c = optim.check_config(dict(freeze='^bert/', warmup_steps=3.0,
                              clip_global_norm=None, lr=1,
                              lr_multipliers={'^nsp/': 2}, wd_exclude=None))
  assert c['freeze'] == ('^bert/',) and c['wd_exclude'] == ()
  assert c['warmup_steps'] == 3 and isinstance(c['warmup_steps'], int)
  assert c['lr'] == 1.0 and isinstance(c['lr'], float)
  assert c['clip_global_norm'] == 0.0
  assert c['lr_multipliers'] == (('^nsp/', 2.0),)
  # A ConfigDict's field references are resolved.
  cd = optim.default_config()
  cd.end_lr = cd.get_ref('lr') * 0.5
  assert optim.check_config(cd)['end_lr'] == 0.5e-4


# These need the params (or total_steps): check_config lets them pass and
# make_optimizer catches them.
NEEDS_PARAMS = ('config.optim.warmup_steps: warmup', 'matches no parameter',
                'freezes every parameter')


@pytest.mark.parametrize('overrides,message', BAD_CONFIGS,
                         ids=[repr(o) for o, _ in BAD_CONFIGS])
def test_check_config_raises_naming_key(overrides, message):
  if any(m in message for m in NEEDS_PARAMS):
    optim.check_config(overrides)
    return
  with pytest.raises(ValueError) as e:
    optim.check_config(overrides)
  assert message in str(e.value)
  with pytest.raises(ValueError, match=r'^finetune\.optim\.'):
    optim.check_config(overrides, prefix='finetune.optim')


@pytest.mark.parametrize('frozen_dict', [False, True])
def test_frozen_mask(frozen_dict):
  from flax.core import FrozenDict  # pylint: disable=g-import-not-at-top
  params = make_params()
  tree = FrozenDict(params) if frozen_dict else params
  c = cfg(freeze=['^bert/embeddings/word', 'output_bias$'])
  mask = optim.frozen_mask(c, tree)
  assert jax.tree.structure(mask) == jax.tree.structure(tree)
  assert isinstance(mask, FrozenDict) == frozen_dict
  got = dict(zip(optim.param_paths(mask), jax.tree.leaves(mask)))
  assert {p for p, m in got.items() if m} == {
      'bert/embeddings/word_embeddings/embedding', 'mlm/output_bias'}
  assert all(type(m) is bool for m in got.values())
  # Exactly the leaves make_optimizer keeps still.
  moved, _ = run(optim.make_optimizer(c, params, TOTAL)[0], params,
                 [random_grads(params, 0)])
  for path, m in got.items():
    assert np.array_equal(flat(moved)[path], flat(params)[path]) == m, path
  assert not any(jax.tree.leaves(optim.frozen_mask(cfg(), params)))
  with pytest.raises(ValueError) as e:
    optim.frozen_mask(cfg(freeze='^bret/'), params)
  assert "config.optim.freeze: pattern '^bret/' matches no" in str(e.value)


def test_configs_common_writes_out_optims_defaults():
  """configs/common.py spells the optimizer section out as plain data (configs
  import only ml_collections); it must equal optim's defaults, value and
  type (a ConfigDict field typed int would refuse --config.optim.power=1.5)."""
  import ast  # pylint: disable=g-import-not-at-top
  from configs import common  # pylint: disable=g-import-not-at-top
  typed = lambda d: {k: (type(v), v) for k, v in d.items()}
  assert (typed(common.base_config().optim.to_dict()) ==
          typed(optim.default_config().to_dict()))
  source = pathlib.Path(common.__file__).read_text()
  imported = {n.name for node in ast.walk(ast.parse(source))
              if isinstance(node, ast.Import) for n in node.names}
  imported |= {node.module for node in ast.walk(ast.parse(source))
               if isinstance(node, ast.ImportFrom)}
  assert imported == {'ml_collections'}, imported
