"""Tests for `losses`: paper formulas, gradients, robustness and the registry.

Every configured loss in CASES goes through the same checks, all under jit:
value against an independent NumPy implementation (test_losses_reference.py),
gradient against central finite differences (in float64), finite value and
gradient at logits +-1e4, all-masked -> 0; every registry name and form
(CORE) also through bf16 inputs, vmap, and invariance to masked padding.
Loss-specific tests follow. The 8-device GHM check is in
test_losses_sharded.py.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import losses

try:  # pytest's default (prepend) import mode puts tests/ on sys.path.
  import test_losses_reference as ref
except ImportError:  # tests/ imported as a package.
  from tests import test_losses_reference as ref

B, T, C = 2, 5, 4
SPAN_B, SPAN_T = 3, 12
COUNTS = [40, 20, 8, 2]

# (id, config, input kind). Kinds: softmax ([B,T,C] logits, int [B,T]
# labels), span (span-QA: [B,T] logits, int [B] positions), binary ([B,T]
# logits and 0/1 labels), sigmoid (multi-label [B,T,C] with per-token
# weights [B,T]), multilabel (like sigmoid, per-example loss).
CASES = [
    ('ce', dict(name='ce'), 'softmax'),
    ('ce_smooth', dict(name='ce', label_smoothing=0.2), 'softmax'),
    ('ce_span', dict(name='ce'), 'span'),
    ('bce', dict(name='bce'), 'sigmoid'),
    ('bce_binary_pw', dict(name='bce', pos_weight=3.0, label_smoothing=0.1),
     'binary'),
    ('weighted_ce', dict(name='weighted_ce', alpha=[0.5, 1.0, 2.0, 4.0]),
     'softmax'),
    ('class_balanced_ce', dict(name='class_balanced_ce', beta=0.99), 'softmax'),
    ('focal', dict(name='focal', gamma=2.0), 'softmax'),
    ('focal_g05_cb', dict(name='focal', gamma=0.5, alpha='class_balanced',
                          beta=0.9), 'softmax'),
    ('sigmoid_focal', dict(name='sigmoid_focal'), 'sigmoid'),
    ('sigmoid_focal_binary', dict(name='sigmoid_focal', gamma=0.3, alpha=None),
     'binary'),
    ('ghm', dict(name='ghm', bins=5), 'softmax'),
    ('ghm_span', dict(name='ghm', bins=4, momentum=0.0), 'span'),
    ('sigmoid_ghm', dict(name='sigmoid_ghm', bins=6), 'sigmoid'),
    ('sigmoid_ghm_binary', dict(name='sigmoid_ghm', bins=3,
                                bias_correction=False), 'binary'),
    ('dsc', dict(name='dsc'), 'softmax'),
    ('dsc_a05', dict(name='dsc', alpha=0.5), 'softmax'),
    ('dsc_binary', dict(name='dsc', alpha=0.3, gamma=0.5), 'binary'),
    # Whole-number alpha takes the hand-written gradient (losses/dice.py).
    ('dsc_binary_a1', dict(name='dsc'), 'binary'),
    ('dsc_a2_g0', dict(name='dsc', alpha=2.0, gamma=0.0), 'softmax'),
    ('dsc_a0', dict(name='dsc', alpha=0.0, gamma=0.5), 'softmax'),
    ('dice', dict(name='dice'), 'softmax'),
    ('dice_binary_g0', dict(name='dice', gamma=0.0), 'binary'),
    ('tversky', dict(name='tversky'), 'softmax'),
    ('tversky_binary', dict(name='tversky', alpha=0.5, beta=0.5, gamma=0.1),
     'binary'),
    ('tversky_a1_b2', dict(name='tversky', alpha=1.0, beta=2.0, gamma=0.5),
     'softmax'),
    ('logit_adjusted_ce', dict(name='logit_adjusted_ce', tau=1.5), 'softmax'),
    ('multilabel_ce', dict(name='multilabel_ce'), 'multilabel'),
    ('focal_flood', dict(name='focal', gamma=1.0, flood=5.0), 'softmax'),
    # New hyperparameters, each against its reference.
    ('focal_alpha_list', dict(name='focal', gamma=1.5,
                              alpha=[0.25, 1.0, 2.0, 4.0]), 'softmax'),
    ('bce_int', dict(name='bce', pos_weight=2.0), 'int_sigmoid'),
    ('sigmoid_focal_int', dict(name='sigmoid_focal', alpha=0.4), 'int_sigmoid'),
    ('sigmoid_ghm_int', dict(name='sigmoid_ghm', bins=5), 'int_sigmoid'),
    ('dsc_gold', dict(name='dsc', form='gold', alpha=2.0, gamma=0.5),
     'softmax'),
    ('dsc_gold_binary', dict(name='dsc', form='gold', alpha=0.5), 'binary'),
    ('dice_smooth_exclude_weights', dict(
        name='dice', smooth_nr=0.2, smooth_dr=0.7, exclude=[0],
        class_weights=[1.0, 1.0, 2.0, 4.0]), 'softmax'),
    ('dice_per_instance', dict(name='dice', batch=False), 'softmax'),
    ('tversky_per_instance', dict(name='tversky', batch=False, smooth_nr=0.0,
                                  smooth_dr=0.5, exclude=[3]), 'softmax'),
    ('dice_binary_per_instance', dict(name='dice', batch=False,
                                      smooth_nr=0.5), 'binary'),
    ('dsc_plus_ce', dict(name='dsc', ce_weight=0.5), 'softmax'),
    ('dice_plus_bce', dict(name='dice', ce_weight=2.0), 'binary'),
]
CASE_IDS = [c[0] for c in CASES]
# Hyperparameter variants of a form already covered get the value, gradient,
# extreme-logit and all-masked checks (which share one compilation); the
# checks that need new compilations (bf16, vmap, padding) run on the rest.
VARIANTS = {'ce_smooth', 'bce_binary_pw', 'focal', 'sigmoid_focal_binary',
            'ghm_span', 'sigmoid_ghm_binary', 'tversky_binary', 'dsc_a2_g0',
            'dsc_a0', 'tversky_a1_b2', 'focal_alpha_list', 'sigmoid_focal_int',
            'sigmoid_ghm_int', 'dsc_gold_binary', 'tversky_per_instance',
            'dice_binary_per_instance', 'dice_plus_bce'}
CORE = [c for c in CASES if c[0] not in VARIANTS]
CORE_IDS = [c[0] for c in CORE]


def _num_classes(kind):
  return {'span': SPAN_T, 'binary': 1}.get(kind, C)


def _onehot(y):
  return np.eye(C, dtype=np.int32)[y]


def _inputs(kind, seed=0, scale=2.0):
  """Float32-representable float64 logits, labels and weights for `kind`."""
  rng = np.random.default_rng(seed)
  if kind == 'softmax':
    x = rng.normal(size=(B, T, C))
    y = rng.integers(0, C, (B, T))
    w = (rng.random((B, T)) < 0.7).astype(np.float64)
  elif kind == 'span':
    x = rng.normal(size=(SPAN_B, SPAN_T))
    y = rng.integers(0, SPAN_T, (SPAN_B,))
    w = np.array([1.0, 0.0, 1.0])
  elif kind == 'int_sigmoid':  # [B,T,C] logits, int [B,T] labels (one-hot)
    x = rng.normal(size=(B, T, C))
    y = rng.integers(0, C, (B, T))
    w = (rng.random((B, T)) < 0.7).astype(np.float64)
  elif kind == 'binary':
    x = rng.normal(size=(B, T))
    y = rng.integers(0, 2, (B, T))
    w = (rng.random((B, T)) < 0.7).astype(np.float64)
  else:  # sigmoid, multilabel
    x = rng.normal(size=(B, T, C))
    y = (rng.random((B, T, C)) < 0.4).astype(np.int32)
    w = (rng.random((B, T)) < 0.7).astype(np.float64)
  w.flat[0] = 1.0  # At least one unmasked element.
  x = (scale * x).astype(np.float32).astype(np.float64)
  return x, y, w


def _spec(cfg, kind):
  return losses.from_config(cfg, num_classes=_num_classes(kind),
                            class_counts=COUNTS)


def _loss(spec, x, y, w, state=None):
  state = spec.init_state() if state is None else state
  return spec(x, y, weights=w, state=state)[0]


_COMPILED = {}


def _case_fn(case_id):
  """Jitted `(x, y, w) -> (loss, dloss/dx, new_state)` for a case, cached.

  Sharing one jitted function across the tests of a case means one
  compilation per input shape and dtype instead of one per test.
  """
  if case_id not in _COMPILED:
    _, cfg, kind = CASES[CASE_IDS.index(case_id)]
    spec = _spec(cfg, kind)

    def value_grad(x, y, w):
      f = lambda z: spec(z, y, weights=w, state=spec.init_state())
      (value, new_state), grad = jax.value_and_grad(f, has_aux=True)(x)
      return value, grad, new_state

    _COMPILED[case_id] = jax.jit(value_grad)
  return _COMPILED[case_id]


def _alpha(alpha, beta=None):
  counts = np.asarray(COUNTS, np.float64)
  if alpha is None:
    return None
  if alpha == 'inverse_freq':
    a = 1 / counts
  elif alpha == 'inverse_sqrt_freq':
    a = 1 / np.sqrt(counts)
  elif alpha == 'class_balanced':
    return ref.class_balanced_alpha(counts, beta)
  else:
    return np.asarray(alpha, np.float64)
  return a * len(a) / a.sum()


_SET_KEYS = ('smooth_nr', 'smooth_dr', 'batch', 'exclude', 'class_weights')


def _reference(cfg, kind, x, y, w, reduction='mean'):
  """The NumPy reference (test_losses_reference.py) of a config."""
  cfg = dict(cfg)
  name = cfg.pop('name')
  flood = cfg.pop('flood', None)
  ce_weight = cfg.pop('ce_weight', None)
  binary = kind == 'binary'
  if kind == 'int_sigmoid':  # int labels are one-hot, weights per row
    y, kind = _onehot(y), 'sigmoid'
  w_elem = np.broadcast_to(w[..., None], x.shape) if kind == 'sigmoid' else w
  r = reduction
  if name == 'ce':
    v = ref.ce(x, y, w, cfg.get('label_smoothing', 0.0), r)
  elif name == 'bce':
    v = ref.bce(x, y, w_elem, cfg.get('label_smoothing', 0.0),
                cfg.get('pos_weight', 1.0), r)
  elif name == 'weighted_ce':
    v = ref.weighted_ce(x, y, w, _alpha(cfg['alpha']), r)
  elif name == 'class_balanced_ce':
    v = ref.weighted_ce(x, y, w, ref.class_balanced_alpha(COUNTS, cfg['beta']),
                        r)
  elif name == 'focal':
    v = ref.focal(x, y, w, cfg['gamma'],
                  _alpha(cfg.get('alpha'), cfg.get('beta')), r)
  elif name == 'sigmoid_focal':
    v = ref.sigmoid_focal(x, y, w_elem, cfg.get('gamma', 2.0),
                          cfg.get('alpha', 0.25), r)
  elif name in ('ghm', 'sigmoid_ghm'):
    v = ref.ghm_sequence(
        [(x, y, w)], bins=cfg['bins'], momentum=cfg.get('momentum', 0.75),
        bias_correction=cfg.get('bias_correction', True),
        sigmoid_form=name == 'sigmoid_ghm')[0][0]
  elif name == 'dsc':
    v = ref.dsc(x, y, w, cfg.get('alpha', 1.0), cfg.get('gamma', 1.0), binary,
                cfg.get('form', 'ovr'), r)
  elif name == 'dice':
    v = ref.dice(x, y, w, cfg.get('gamma', 1.0), binary, reduction=r,
                 **{k: cfg[k] for k in _SET_KEYS if k in cfg})
  elif name == 'tversky':
    v = ref.tversky(x, y, w, cfg.get('alpha', 0.3), cfg.get('beta', 0.7),
                    cfg.get('gamma', 1.0), binary, reduction=r,
                    **{k: cfg[k] for k in _SET_KEYS if k in cfg})
  elif name == 'logit_adjusted_ce':
    v = ref.logit_adjusted_ce(x, y, w, COUNTS, cfg['tau'], r)
  elif name == 'multilabel_ce':
    v = ref.multilabel_ce(x, y, w, r)
  else:
    raise AssertionError(name)
  if ce_weight is not None:
    v = v + ce_weight * (ref.bce(x, y, w, 0.0, 1.0, r) if binary else
                         ref.ce(x, y, w, 0.0, r))
  if flood is not None:
    v = abs(v - flood) + flood
  return v


def _finite(tree):
  return all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(tree))


# --- Every loss: formula, gradient, robustness. ------------------------------


@pytest.mark.parametrize('case_id,cfg,kind', CASES, ids=CASE_IDS)
def test_matches_numpy_reference(case_id, cfg, kind):
  for seed in range(2):
    x, y, w = _inputs(kind, seed)
    got = _case_fn(case_id)(jnp.asarray(x, jnp.float32), y, w)[0]
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(float(got), _reference(cfg, kind, x, y, w),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('case_id,cfg,kind', CASES, ids=CASE_IDS)
def test_grad_matches_finite_differences(case_id, cfg, kind):
  del cfg
  x, y, w = _inputs(kind, seed=3)
  rng = np.random.default_rng(7)
  with jax.enable_x64(True):
    f = _case_fn(case_id)
    x64 = jnp.asarray(x, jnp.float64)
    grad = np.asarray(f(x64, y, w)[1])
    assert grad.dtype == np.float64
    h = 1e-6
    for _ in range(3):
      v = rng.normal(size=x.shape)
      fd = (float(f(x64 + h * v, y, w)[0]) -
            float(f(x64 - h * v, y, w)[0])) / (2 * h)
      np.testing.assert_allclose(np.vdot(grad, v), fd, rtol=1e-5, atol=1e-8)


# Losses whose backward pass is written by hand (losses/_core.py
# fused_softmax_loss, losses/dice.py _fused): their gradient in the
# weights is hand-written too, so check it as well (GHM's density weights
# are held constant by design, so it is left out).
HAND_WRITTEN = ['ce', 'ce_smooth', 'weighted_ce', 'focal_g05_cb',
                'dsc', 'dsc_binary_a1', 'dsc_a2_g0', 'dice', 'dice_binary_g0',
                'tversky', 'tversky_a1_b2']


@pytest.mark.parametrize('case_id', HAND_WRITTEN)
def test_weights_grad_matches_finite_differences(case_id):
  _, cfg, kind = CASES[CASE_IDS.index(case_id)]
  x, y, w = _inputs(kind, seed=5)
  w = w * np.random.default_rng(2).uniform(0.5, 2.0, w.shape)  # not 0/1
  spec = _spec(cfg, kind)
  with jax.enable_x64(True):
    x64 = jnp.asarray(x, jnp.float64)
    f = jax.jit(lambda w: spec(x64, y, weights=w, state=spec.init_state())[0])
    w64 = jnp.asarray(w, jnp.float64)
    grad = np.asarray(jax.grad(f)(w64))
    rng = np.random.default_rng(9)
    h = 1e-6
    for _ in range(3):
      # Perturb only unmasked weights (a masked element's weight moving off
      # 0 switches its row on: not differentiable there).
      v = rng.normal(size=w.shape) * (w > 0)
      fd = (float(f(w64 + h * v)) - float(f(w64 - h * v))) / (2 * h)
      np.testing.assert_allclose(np.vdot(grad, v), fd, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize('case_id,cfg,kind', CASES, ids=CASE_IDS)
def test_extreme_logits_finite(case_id, cfg, kind):
  del cfg
  x, y, w = _inputs(kind, seed=1)
  rng = np.random.default_rng(11)
  x = np.where(rng.random(x.shape) < 0.5, -1e4, 1e4).astype(np.float32)
  if kind in ('softmax', 'span'):
    # Rows with the label at +1e4 and every other class at -1e4 (p_y = 1)
    # and the reverse (p_y = 0).
    x[0] = -1e4
    np.put_along_axis(x[0], np.asarray(y[0])[..., None], 1e4, axis=-1)
  value, grad, state = _case_fn(case_id)(jnp.asarray(x), y, w)
  assert _finite((value, grad, state)), (value, grad)


@pytest.mark.parametrize('case_id,cfg,kind', CASES, ids=CASE_IDS)
def test_all_masked_is_zero(case_id, cfg, kind):
  del cfg
  x, y, w = _inputs(kind, seed=2)
  x = np.full(x.shape, np.nan, np.float32)  # Garbage must not leak.
  value, grad, _ = _case_fn(case_id)(jnp.asarray(x), y, np.zeros_like(w))
  assert float(value) == 0.0
  assert _finite(grad) and not np.any(np.asarray(grad))


@pytest.mark.parametrize('case_id,cfg,kind', CORE, ids=CORE_IDS)
def test_bf16_inputs_computed_in_fp32(case_id, cfg, kind):
  del cfg
  x, y, w = _inputs(kind, seed=4)
  x16 = jnp.asarray(x, jnp.bfloat16)
  value, grad, _ = _case_fn(case_id)(x16, y, w)
  assert value.dtype == jnp.float32 and grad.dtype == jnp.bfloat16
  assert _finite(grad)
  # Upcast first: the bf16 result is the fp32 result on the rounded logits.
  value32 = _case_fn(case_id)(x16.astype(jnp.float32), y, w)[0]
  np.testing.assert_allclose(float(value), float(value32), rtol=1e-6)


@pytest.mark.parametrize('case_id,cfg,kind', CORE, ids=CORE_IDS)
def test_vmap_matches_loop(case_id, cfg, kind):
  # Everything else here runs under jit; vmap over a stack of problems must
  # treat each independently (set-level losses included).
  spec = _spec(cfg, kind)
  problems = [_inputs(kind, seed=5 + i) for i in range(3)]
  x, y, w = (np.stack(a) for a in zip(*problems))
  x = jnp.asarray(x, jnp.float32)
  state = spec.init_state()
  batched = jax.jit(jax.vmap(lambda a, b, c: _loss(spec, a, b, c, state)))(
      x, y, w)
  looped = [_case_fn(case_id)(x[i], y[i], w[i])[0] for i in range(len(x))]
  np.testing.assert_allclose(batched, np.asarray(looped), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('case_id,cfg,kind', CORE, ids=CORE_IDS)
def test_masked_padding_changes_nothing(case_id, cfg, kind):
  del cfg
  x, y, w = _inputs(kind, seed=6)
  axis = w.ndim - 1  # Pad tokens (or, for span QA, examples).
  pad = 3
  pad_x = np.full(x.shape[:axis] + (pad,) + x.shape[axis + 1:], np.nan)
  pad_y = np.full(y.shape[:axis] + (pad,) + y.shape[axis + 1:],
                  -100 if y.ndim < x.ndim else 7)
  pad_w = np.zeros(w.shape[:axis] + (pad,))
  xp = np.concatenate([x, pad_x], axis).astype(np.float32)
  yp = np.concatenate([y, pad_y], axis)
  wp = np.concatenate([w, pad_w], axis)
  f = _case_fn(case_id)
  v0, g0, s0 = f(jnp.asarray(x, jnp.float32), y, w)
  v1, g1, s1 = f(jnp.asarray(xp), yp, wp)
  np.testing.assert_allclose(v1, v0, rtol=1e-6)
  idx = [slice(None)] * x.ndim
  idx[axis] = slice(0, x.shape[axis])
  np.testing.assert_allclose(g1[tuple(idx)], g0, rtol=1e-5, atol=1e-8)
  idx[axis] = slice(x.shape[axis], None)
  assert _finite(g1) and not np.any(np.asarray(g1[tuple(idx)]))
  jax.tree.map(np.testing.assert_array_equal, s1, s0)


# --- Loss-specific behaviour. -----------------------------------------------

def test_focal_confident_rows_finite_and_exact():
  # p_y -> 1 at growing margins, where naive (1 - p)**gamma has an infinite
  # derivative for gamma < 1 and log(softmax) underflows. gamma is traced
  # (one compilation for the grid); gamma = 0 also runs as a Python float,
  # which takes the static no-modulation path.
  margins = np.array([0.0, 5.0, 20.0, 50.0, 100.0, 1e3, 1e4])
  x = np.zeros((len(margins), 3), np.float32)
  x[:, 0] = margins
  y = np.zeros(len(margins), np.int32)
  z = np.concatenate([margins, -margins]).astype(np.float32)
  softmax_fn = jax.jit(jax.value_and_grad(
      lambda a, g: losses.focal.focal(a, y, gamma=g)))
  sigmoid_fn = jax.jit(jax.value_and_grad(
      lambda a, b, g: losses.focal.sigmoid_focal(a, b, gamma=g, alpha=None)))
  for gamma in [0.0, 1e-3, 0.25, 0.5, 0.999, 1.0, 2.0, 5.0]:
    value, grad = softmax_fn(x, jnp.float32(gamma))
    assert _finite((value, grad)), gamma
    # Log-space float64 reference: log(1 - p_y) = log(2 e^-m / (1 + 2 e^-m)).
    log_rest = np.log(2.0) - margins
    log_s = np.logaddexp(0.0, log_rest)
    per = np.exp(gamma * (log_rest - log_s)) * log_s
    np.testing.assert_allclose(float(value), per.mean(), rtol=1e-5, atol=1e-7)
    # Sigmoid form: both label values, logits of either sign.
    for labels in (np.ones_like(z), np.zeros_like(z)):
      assert _finite(sigmoid_fn(z, labels, jnp.float32(gamma))), gamma
  static = jax.value_and_grad(lambda a: losses.focal.focal(a, y, gamma=0.0))
  assert _finite(static(x))


def test_focal_confident_rows_exact_per_row():
  # Row by row, not as a mean (which the least confident row dominates):
  # value and gradient stay relatively exact while 1 - p_y = 2 e^-m is far
  # below fp32's rounding of 1. A log(1 - p_y) taken from s - e_y, or a
  # -log p_y taken from log(s), is 0 or the floor there and fails this.
  margins = np.array([0.0, 5.0, 12.0, 20.0, 35.0, 50.0])
  x = np.zeros((len(margins), 3), np.float32)
  x[:, 0] = margins
  y = np.zeros(len(margins), np.int32)
  per_row = jax.jit(jax.vmap(
      jax.value_and_grad(lambda a, b, g: losses.focal.focal(
          a[None], b[None], gamma=g)), in_axes=(0, 0, None)))
  log_rest = np.log(2.0) - margins             # log(1 - p_y) + log s
  log_s = np.logaddexp(0.0, log_rest)
  nll = np.exp(np.log(np.log1p(np.exp(log_rest))))   # = log_s, exact
  log1m_p = log_rest - log_s
  for gamma in [0.0, 1e-3, 0.5, 1.0, 2.0, 5.0]:
    value, grad = per_row(x, y, jnp.float32(gamma))
    expect = np.exp(gamma * log1m_p) * nll
    # atol: values below fp32's smallest normal (1.2e-38) may flush to 0.
    np.testing.assert_allclose(value, expect, rtol=2e-5, atol=1e-37,
                               err_msg=str(gamma))
    # dl/dz_c = coef * p_c for c != y, with
    # coef = (1 - p)^gamma + gamma p nll (1 - p)^(gamma - 1).
    p_y = np.exp(-log_s)
    coef = (np.exp(gamma * log1m_p)
            + gamma * p_y * nll * np.exp((gamma - 1.0) * log1m_p))
    p_other = np.exp(-margins - log_s)
    for c in (1, 2):
      np.testing.assert_allclose(grad[:, c], coef * p_other, rtol=2e-5,
                                 atol=1e-37, err_msg=str(gamma))
    # The label's entry is p_y - 1 = -(sum of the others), to a few ulps of 1
    # (the backward pass forms p - onehot, as every CE does).
    np.testing.assert_allclose(grad[:, 0], -2 * coef * p_other, rtol=2e-5,
                               atol=3e-7)


def test_focal_gamma0_is_ce_and_bce():
  # Also the eager (un-jitted) path, which the other tests do not take.
  x, y, w = _inputs('softmax')
  np.testing.assert_allclose(losses.focal.focal(x, y, weights=w, gamma=0.0),
                             losses.cross_entropy.ce(x, y, weights=w),
                             rtol=1e-6)
  x, y, w = _inputs('sigmoid')
  np.testing.assert_allclose(
      jax.jit(lambda a: losses.focal.sigmoid_focal(
          a, y, weights=w, gamma=0.0, alpha=None))(x),
      jax.jit(lambda a: losses.cross_entropy.bce(a, y, weights=w))(x),
      rtol=1e-6)


def test_focal_down_weights_easy_examples():
  x = np.array([[4.0, 0.0, 0.0], [0.2, 0.0, 0.0]])
  y = np.array([0, 0])
  ce = jax.jit(lambda a, b: losses.cross_entropy.ce(a, b))
  fl = jax.jit(lambda a, b: losses.focal.focal(a, b))
  ratio = [float(fl(x[i:i + 1], y[i:i + 1]) / ce(x[i:i + 1], y[i:i + 1]))
           for i in (0, 1)]
  assert ratio[0] < ratio[1] < 1.0


def test_dsc_fractional_alpha_exact_at_extreme_margins():
  # (1 - p)^alpha for small alpha stays far from 0 even when 1 - p < 1e-38:
  # log(1 - p) must come from log space, not a floored probability.
  alpha, gamma, margin = 0.01, 1.0, 1e3
  x = np.array([[margin, 0.0, 0.0], [0.0, margin, 0.0]])
  y = np.array([0, 0])
  value, grad = jax.jit(jax.value_and_grad(lambda z: losses.dice.dsc(
      z, y, alpha=alpha, gamma=gamma)))(jnp.asarray(x, jnp.float32))
  assert _finite(grad)
  logp = ref.log_softmax(x)
  log1mp = np.stack([np.logaddexp.reduce(np.delete(logp[i], c))
                     for i in range(2) for c in range(3)]).reshape(2, 3)
  f = np.exp(alpha * log1mp + logp)
  yy = np.eye(3)[y]
  expected = (1 - (2 * f * yy + gamma) / (f + yy + gamma)).mean()
  np.testing.assert_allclose(float(value), expected, rtol=1e-5)


def _random_rows(rows, classes, seed):
  """float32 logits `[rows, classes]` (scale 3), int labels `[rows]` and
  0/1 weights `[rows]` (~20% masked, row 0 kept)."""
  rng = np.random.default_rng(seed)
  x = (3 * rng.normal(size=(rows, classes))).astype(np.float32)
  y = rng.integers(0, classes, rows)
  w = (rng.random(rows) < 0.8).astype(np.float32)
  w[0] = 1.0
  return x, y, w


def _assert_padding_inert(fn, x, y, w, value, grad):
  """Garbage (NaN logits, label -100) in the rows with weight 0 changes
  neither `fn`'s value nor its gradient elsewhere; theirs is exactly 0.

  `fn(x, y, w) -> (value, d value / d x)`; `value, grad` are its result on
  the clean inputs.
  """
  masked = w == 0
  assert masked.any()
  x_bad, y_bad = x.copy(), y.copy()
  x_bad[masked] = np.nan
  y_bad[masked] = -100
  value_bad, grad_bad = fn(x_bad, y_bad, w)
  np.testing.assert_allclose(float(value_bad), float(value), rtol=1e-6)
  np.testing.assert_allclose(grad_bad, grad, rtol=1e-6, atol=1e-12)
  assert not np.asarray(grad_bad)[masked].any()





@pytest.mark.parametrize('name', ['dice', 'tversky', 'dsc'])
def test_dice_family_gamma0_all_masked_and_extreme(name):
  x = np.array([[1e4, -1e4], [-1e4, 1e4]], np.float32)
  y = np.array([0, 0])
  fn = losses.get(name)
  f = jax.jit(jax.value_and_grad(lambda z, w: fn(z, y, weights=w, gamma=0.0)))
  for w in (np.zeros(2), np.ones(2)):
    value, grad = f(jnp.asarray(x), w)
    assert _finite((value, grad))
    if not w.any():
      assert float(value) == 0.0


def test_dice_is_set_level():
  # Without smoothing, a batch and two copies of it give the same DL, but
  # the DL of a batch is not the mean of its halves' (not per-instance).
  x, y, _ = _inputs('softmax', seed=8)
  x, y, w = x.reshape(-1, C), y.reshape(-1), np.ones(B * T)
  dl = jax.jit(lambda a, b, c: losses.dice.dice(a, b, weights=c, gamma=0.0))
  full = float(dl(x, y, w))
  doubled = float(dl(np.concatenate([x, x]), np.concatenate([y, y]),
                     np.concatenate([w, w])))
  # Halves as masks over the same batch (one compilation).
  first = np.arange(B * T) < B * T // 2
  halves = np.mean([float(dl(x, y, m.astype(float))) for m in (first, ~first)])
  np.testing.assert_allclose(doubled, full, rtol=1e-6)
  assert abs(halves - full) > 1e-4


def test_tversky_half_half_is_plain_dice():
  x, y, w = _inputs('binary', seed=9)
  got = losses.dice.tversky(x, y, weights=w, alpha=0.5, beta=0.5, gamma=0.0)
  p = ref.sigmoid(x)
  tp = (w * p * y).sum()
  expected = 1 - 2 * tp / ((w * p).sum() + (w * y).sum())
  np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_class_weights():
  counts = np.array([100.0, 10.0, 1.0])
  inv = np.asarray(losses.class_weights.inverse_freq(counts))
  np.testing.assert_allclose(inv, 3 * (1 / counts) / (1 / counts).sum(),
                             rtol=1e-6)
  sq = np.asarray(losses.class_weights.inverse_sqrt_freq(counts))
  np.testing.assert_allclose(sq[0] / sq[2], 0.1, rtol=1e-6)
  np.testing.assert_allclose(losses.class_weights.class_balanced(counts, 0.0),
                             np.ones(3), rtol=1e-6)
  np.testing.assert_allclose(
      losses.class_weights.class_balanced(counts, 0.999),
      ref.class_balanced_alpha(counts, 0.999), rtol=1e-5)
  # beta -> 1 tends to inverse frequency.
  np.testing.assert_allclose(
      losses.class_weights.class_balanced(counts, 1 - 1e-7), inv, rtol=1e-3)
  np.testing.assert_allclose(np.exp(losses.class_weights.log_prior(counts)),
                             counts / counts.sum(), rtol=1e-6)


def test_logit_adjustment():
  x, y, w = _inputs('softmax', seed=10)
  la = losses.logit_adjustment
  np.testing.assert_allclose(
      la.logit_adjusted_ce(x, y, weights=w, class_counts=COUNTS, tau=0.0),
      losses.cross_entropy.ce(x, y, weights=w), rtol=1e-6)
  prior = np.asarray(COUNTS) / np.sum(COUNTS)
  np.testing.assert_allclose(la.adjust_logits(x, COUNTS, tau=0.7),
                             x - 0.7 * np.log(prior), rtol=1e-6, atol=1e-6)
  # Counts and the prior they imply give the same adjustment.
  np.testing.assert_allclose(la.adjust_logits(x, prior),
                             la.adjust_logits(x, COUNTS), rtol=1e-6, atol=1e-6)
  # Equal logits: the adjusted argmax is the rarest class.
  assert int(jnp.argmax(la.adjust_logits(np.zeros(C), COUNTS))) == C - 1
  with pytest.raises(ValueError, match='class_counts'):
    la.adjust_logits(x, [1, 0, 2, 3])
  with pytest.raises(ValueError, match='class_counts'):
    la.adjust_logits(x, [1, 2, 3])


def test_flooding():
  x, y, w = _inputs('softmax', seed=12)
  ce = losses.cross_entropy.ce
  vg = lambda fn: jax.jit(jax.value_and_grad(lambda z, c: fn(z, y, weights=c)))
  base, g_ce = vg(ce)(x, w)
  high = vg(losses.flooding.flooded(ce, float(base) + 1.0))
  value, g_fl = high(x, w)
  np.testing.assert_allclose(value, base + 2.0, rtol=1e-6)
  # Below the flood level the gradient is the negated CE gradient.
  np.testing.assert_allclose(g_fl, -g_ce, rtol=1e-6)
  # Above it, unchanged.
  low = vg(losses.flooding.flooded(ce, float(base) / 2))
  np.testing.assert_allclose(low(x, w)[0], base, rtol=1e-6)
  assert float(high(x, np.zeros_like(w))[0]) == 0.0
  with pytest.raises(ValueError, match='flood'):
    losses.flooding.flooded(ce, -0.1)


def test_multilabel_ce_rows_without_positives_or_negatives():
  x = np.array([[3.0, -2.0, 0.5], [1.0, 2.0, -1.0], [0.0, 0.0, 0.0]])
  y = np.array([[1, 1, 1], [0, 0, 0], [1, 0, 1]])
  value, grad = jax.jit(jax.value_and_grad(
      lambda z: losses.multilabel.multilabel_ce(z, y)))(jnp.asarray(x))
  assert _finite(grad)
  np.testing.assert_allclose(float(value),
                             ref.multilabel_ce(x, y, np.ones(3)), rtol=1e-6)


# --- GHM state. -------------------------------------------------------------


@pytest.mark.parametrize('sigmoid_form', [False, True])
@pytest.mark.parametrize('momentum,bias_correction', [
    (0.75, True), (0.75, False), (0.0, True), (0.9, True)])
def test_ghm_ema_over_batches_matches_numpy(sigmoid_form, momentum,
                                            bias_correction):
  bins = 7
  name = 'sigmoid_ghm' if sigmoid_form else 'ghm'
  spec = losses.from_config(
      dict(name=name, bins=bins, momentum=momentum,
           bias_correction=bias_correction), num_classes=C)
  kind = 'sigmoid' if sigmoid_form else 'softmax'
  batches = [_inputs(kind, seed=20 + i, scale=1.0 + i) for i in range(4)]
  batches[2][2][:] = 0.0  # An all-masked batch leaves the state alone.
  step = jax.jit(lambda s, x, y, w: spec(x, y, weights=w, state=s))
  expected = ref.ghm_sequence(batches, bins=bins, momentum=momentum,
                              bias_correction=bias_correction,
                              sigmoid_form=sigmoid_form)
  state = spec.init_state()
  for (x, y, w), (loss, acc, updates) in zip(batches, expected):
    value, state = step(state, jnp.asarray(x, jnp.float32), y, w)
    np.testing.assert_allclose(float(value), loss, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(state['counts'], acc, rtol=1e-6)
    np.testing.assert_array_equal(state['updates'], updates)
  assert state['counts'].dtype == jnp.float32
  assert state['updates'].dtype == jnp.int32


def test_ghm_state_errors():
  x, y, w = _inputs('softmax')
  with pytest.raises(ValueError, match='state is required'):
    losses.ghm.ghm(x, y, weights=w, state=None)
  with pytest.raises(ValueError, match='different `bins`'):
    losses.ghm.ghm(x, y, state=losses.ghm.init_state(10), bins=30)
  spec = losses.from_config(dict(name='ghm'), num_classes=C)
  with pytest.raises(ValueError, match='state is required'):
    spec(x, y)


# --- Registry and validation. -----------------------------------------------

EXPECTED_NAMES = {
    'ce', 'bce', 'weighted_ce', 'class_balanced_ce', 'focal', 'sigmoid_focal',
    'ghm', 'sigmoid_ghm', 'dsc', 'dice', 'tversky', 'logit_adjusted_ce',
    'multilabel_ce'}


def test_registry_names_and_get():
  assert set(losses.names()) == EXPECTED_NAMES
  assert losses.get('focal') is losses.focal.focal
  assert losses.get('ghm') is losses.ghm.ghm
  for name in EXPECTED_NAMES:  # Every loss is documented in the package doc.
    assert name in losses.__doc__


def test_unknown_name_lists_valid_names():
  with pytest.raises(ValueError) as err:
    losses.get('focla')
  assert "'focal'" in str(err.value) and 'multilabel_ce' in str(err.value)
  with pytest.raises(ValueError, match='Valid names'):
    losses.from_config(dict(name='dice_loss'), num_classes=C)
  with pytest.raises(ValueError, match='needs a name'):
    losses.from_config(dict(gamma=2.0), num_classes=C)


def test_unknown_hyperparameter_named_with_valid_keys():
  with pytest.raises(ValueError) as err:
    losses.from_config(dict(name='focal', gamme=2.0), num_classes=C)
  msg = str(err.value)
  assert 'gamme' in msg and "'gamma'" in msg and 'alpha' in msg
  assert 'flood' in msg


@pytest.mark.parametrize('cfg,key', [
    (dict(name='focal', gamma=-0.5), 'gamma'),
    (dict(name='sigmoid_focal', gamma=-1), 'gamma'),
    (dict(name='focal', alpha=[1.0, -1.0, 1.0, 1.0]), 'alpha'),
    (dict(name='focal', alpha=[1.0, 1.0]), 'alpha'),
    (dict(name='focal', alpha='inverse'), 'alpha'),
    (dict(name='focal', alpha='inverse_freq', beta=0.9), 'beta'),
    (dict(name='sigmoid_focal', alpha=1.5), 'alpha'),
    (dict(name='weighted_ce'), 'alpha'),
    (dict(name='class_balanced_ce', beta=1.0), 'beta'),
    (dict(name='class_balanced_ce', beta=-0.1), 'beta'),
    (dict(name='focal', alpha='class_balanced', beta=1.2), 'beta'),
    (dict(name='ghm', bins=0), 'bins'),
    (dict(name='ghm', bins=2.5), 'bins'),
    (dict(name='ghm', momentum=1.0), 'momentum'),
    (dict(name='sigmoid_ghm', momentum=-0.1), 'momentum'),
    (dict(name='ghm', bias_correction='yes'), 'bias_correction'),
    (dict(name='ce', label_smoothing=1.5), 'label_smoothing'),
    (dict(name='bce', pos_weight=-2.0), 'pos_weight'),
    (dict(name='dsc', alpha=-1.0), 'alpha'),
    (dict(name='dsc', gamma=-1.0), 'gamma'),
    (dict(name='dice', gamma='one'), 'gamma'),
    (dict(name='tversky', beta=-0.7), 'beta'),
    (dict(name='logit_adjusted_ce', tau=-1.0), 'tau'),
    (dict(name='ce', flood=-0.01), 'flood'),
    (dict(name='ce', label_smoothing=float('nan')), 'label_smoothing'),
    (dict(name='dsc', form='both'), 'form'),
    (dict(name='dice', smooth_nr=-1.0), 'smooth_nr'),
    (dict(name='tversky', smooth_dr='1'), 'smooth_dr'),
    (dict(name='dice', batch='yes'), 'batch'),
    (dict(name='dice', exclude=[4]), 'exclude'),
    (dict(name='tversky', exclude=[0, 1, 2, 3]), 'exclude'),
    (dict(name='dice', exclude=[0.5]), 'exclude'),
    (dict(name='dice', class_weights=[1.0, 2.0]), 'class_weights'),
    (dict(name='dice', class_weights=[1.0, -2.0, 1.0, 1.0]), 'class_weights'),
    (dict(name='dsc', ce_weight=-0.5), 'ce_weight'),
    (dict(name='dsc', ce_warmup_steps=2.5), 'ce_warmup_steps'),
])
def test_impossible_values_name_the_key(cfg, key):
  with pytest.raises(ValueError, match=key):
    losses.from_config(cfg, num_classes=C, class_counts=COUNTS)


@pytest.mark.parametrize('cfg', [
    dict(name='class_balanced_ce'), dict(name='logit_adjusted_ce'),
    dict(name='weighted_ce', alpha='inverse_freq'),
    dict(name='focal', alpha='inverse_sqrt_freq'),
])
def test_class_counts_validation(cfg):
  with pytest.raises(ValueError, match='class_counts is required'):
    losses.from_config(cfg, num_classes=C)
  with pytest.raises(ValueError, match=r'class_counts must have shape \[4\]'):
    losses.from_config(cfg, num_classes=C, class_counts=[1, 2, 3])
  with pytest.raises(ValueError, match='class_counts has zero counts'):
    losses.from_config(cfg, num_classes=C, class_counts=[5, 0, 3, 1])
  with pytest.raises(ValueError, match='class_counts must be finite'):
    losses.from_config(cfg, num_classes=C, class_counts=[5, -1, 3, 1])
  spec = losses.from_config(cfg, num_classes=C, class_counts=COUNTS)
  assert not spec.stateful


def test_alpha_schemes_from_counts():
  n = np.asarray(COUNTS, np.float64)
  expected = {'inverse_freq': 1 / n, 'inverse_sqrt_freq': 1 / np.sqrt(n),
              'class_balanced': ref.class_balanced_alpha(n, 0.9)}
  for scheme, a in expected.items():
    cfg = dict(name='weighted_ce', alpha=scheme)
    if scheme == 'class_balanced':
      cfg['beta'] = 0.9
    spec = losses.from_config(cfg, num_classes=C, class_counts=COUNTS)
    np.testing.assert_allclose(spec.hparams['alpha'], a * C / a.sum(),
                               rtol=1e-6)


def test_raw_functions_check_concrete_hyperparameters():
  x, y, w = _inputs('softmax')
  with pytest.raises(ValueError, match='gamma'):
    losses.get('focal')(x, y, weights=w, gamma=-1.0)
  with pytest.raises(ValueError, match='alpha'):
    losses.get('focal')(x, y, alpha=[1.0, 2.0])
  with pytest.raises(ValueError, match='beta'):
    losses.get('class_balanced_ce')(x, y, class_counts=COUNTS, beta=1.0)
  with pytest.raises(ValueError, match='weights has shape'):
    losses.get('ce')(x, y, weights=np.ones(3))
  with pytest.raises(ValueError, match='integer labels'):
    losses.get('ce')(x, y.astype(np.float32))
  with pytest.raises(ValueError, match='C >= 2'):
    losses.get('focal')(x[..., :1], y * 0)


@pytest.mark.parametrize('name', ['ce', 'focal', 'ghm', 'dsc', 'dice',
                                  'tversky', 'logit_adjusted_ce', 'bce',
                                  'sigmoid_focal'])
def test_unmasked_invalid_label_is_loud(name):
  # A label outside [0, C) on an unmasked row makes the loss NaN (caught by
  # the trainer's non-finite check) instead of wrapping -1 to class C-1 or
  # silently dropping the row; the same label under weight 0 is fine.
  spec = losses.from_config(dict(name=name), num_classes=C,
                            class_counts=COUNTS)
  x, y, w = _inputs('softmax', seed=13)
  f = jax.jit(lambda yy, ww: _loss(spec, x, yy, ww))
  for bad in (-1, C):
    y_bad = y.copy()
    y_bad[0, 0] = bad
    w_on = w.copy()
    w_on[0, 0] = 1.0
    assert np.isnan(float(f(y_bad, w_on))), bad
    w_off = w.copy()
    w_off[0, 0] = 0.0
    y_ok = y.copy()
    y_ok[0, 0] = 0
    np.testing.assert_allclose(f(y_bad, w_off), f(y_ok, w_off), rtol=1e-6)


def test_span_logits_masked_with_minus_inf():
  # Span-QA heads may mask padding positions with -inf before the loss.
  x, y, w = _inputs('span', seed=14)
  x[:, -3:] = -np.inf
  y = np.minimum(y, SPAN_T - 4)
  for fn in (losses.cross_entropy.ce, losses.focal.focal):
    f = jax.jit(jax.value_and_grad(lambda z: fn(z, y, weights=w)))
    value, grad = f(jnp.asarray(x, jnp.float32))
    assert _finite((value, grad))
    x_drop = np.where(np.isinf(x), -1e30, x).astype(np.float32)
    np.testing.assert_allclose(float(value), float(f(x_drop)[0]), rtol=1e-6)


def test_spec_interface():
  x, y, w = _inputs('softmax')
  cfg = ml_collections.ConfigDict(dict(name='focal', gamma=2.0,
                                       alpha=[1.0, 2.0, 3.0, 4.0]))
  spec = losses.from_config(cfg, num_classes=C)
  assert spec.name == 'focal' and not spec.stateful
  assert spec.init_state() == {}
  value, state = spec(x, y, weights=w)
  assert state == {}
  marker = {'keep': jnp.ones(2)}
  assert spec(x, y, weights=w, state=marker)[1] is marker
  np.testing.assert_allclose(
      value, ref.focal(x, y, w, 2.0, [1.0, 2.0, 3.0, 4.0]), rtol=1e-5)
  assert 'focal' in repr(spec)
  g = losses.from_config('sigmoid_ghm', num_classes=C)
  assert g.stateful and set(g.init_state()) == {'counts', 'updates'}
  assert g.init_state()['counts'].shape == (30,)


def test_spec_under_jit_with_state_donation():
  spec = losses.from_config(dict(name='ghm', bins=4), num_classes=C)

  @jax.jit
  def train_step(state, x, y, w):
    (value, state), grad = jax.value_and_grad(
        lambda z: spec(z, y, weights=w, state=state), has_aux=True)(x)
    return state, value, grad

  donated = jax.jit(train_step.__wrapped__, donate_argnums=0)
  state, kept = spec.init_state(), spec.init_state()
  for seed in range(3):
    x, y, w = _inputs('softmax', seed=seed)
    x = jnp.asarray(x, jnp.float32)
    state, value, grad = donated(state, x, y, w)
    kept, want_value, want_grad = train_step(kept, x, y, w)
    assert _finite((value, grad, state))
    # Donating the state changes where it lives, never what it holds.
    np.testing.assert_array_equal(value, want_value)
    np.testing.assert_array_equal(grad, want_grad)
    jax.tree_util.tree_map(np.testing.assert_array_equal, state, kept)
  assert int(state['updates'].max()) >= 1


# --- Reductions. ------------------------------------------------------------

ELEMENT_LEVEL = ['ce_smooth', 'bce', 'bce_int', 'weighted_ce',
                 'focal_alpha_list', 'sigmoid_focal_int', 'dsc', 'dsc_gold',
                 'dsc_gold_binary', 'logit_adjusted_ce', 'multilabel_ce',
                 'dice_per_instance', 'tversky_per_instance', 'dsc_plus_ce']


@pytest.mark.parametrize('case_id', ELEMENT_LEVEL)
def test_reduction_none_and_sum_match_per_element_references(case_id):
  _, cfg, kind = CASES[CASE_IDS.index(case_id)]
  spec = _spec(cfg, kind)
  x, y, w = _inputs(kind, seed=15)
  x32 = jnp.asarray(x, jnp.float32)
  f = jax.jit(lambda a, r: spec(a, y, weights=w, state=spec.init_state(),
                                reduction=r)[0], static_argnums=1)
  per = np.asarray(f(x32, 'none'))
  want = _reference(cfg, kind, x, y, w, 'none')
  assert per.shape == want.shape
  np.testing.assert_allclose(per, want, rtol=1e-5, atol=1e-6)
  masked = (w == 0) if per.shape[:w.ndim] == w.shape else None
  if masked is not None:   # masked elements (rows) are exactly 0
    assert not per[masked].any()
  np.testing.assert_allclose(float(f(x32, 'sum')),
                             _reference(cfg, kind, x, y, w, 'sum'), rtol=1e-5)


@pytest.mark.parametrize('cfg,kind', [
    (dict(name='dice'), 'softmax'), (dict(name='tversky'), 'binary'),
    (dict(name='ghm'), 'softmax'), (dict(name='sigmoid_ghm'), 'sigmoid')])
def test_set_level_losses_refuse_per_element_reduction(cfg, kind):
  spec = _spec(cfg, kind)
  x, y, w = _inputs(kind)
  for reduction in ('none', 'sum'):
    with pytest.raises(ValueError, match=f"reduction='{reduction}'") as err:
      spec(x, y, weights=w, state=spec.init_state(), reduction=reduction)
    assert 'batch=False' in str(err.value) or 'global' in str(err.value)
  x, y, _ = _inputs('softmax')
  with pytest.raises(ValueError, match='reduction must be one of'):
    losses.get('ce')(x, y, reduction='avg')


def test_flood_needs_the_mean():
  spec = _spec(dict(name='ce', flood=0.1), 'softmax')
  x, y, w = _inputs('softmax')
  with pytest.raises(ValueError, match='flood'):
    spec(x, y, weights=w, reduction='none')


# --- Many class counts (C = 2 .. 100): value and gradient. ------------------

MANY_C = [('ce_smooth', dict(name='ce', label_smoothing=0.1)),
          ('focal', dict(name='focal', gamma=0.5)),
          ('bce_int', dict(name='bce')),
          ('ghm', dict(name='ghm', bins=7, momentum=0.0)),
          ('dsc', dict(name='dsc', alpha=1.0, gamma=0.3)),
          ('dsc_gold', dict(name='dsc', form='gold', gamma=0.0)),
          ('dice', dict(name='dice', gamma=0.5)),
          ('tversky', dict(name='tversky', exclude=[0]))]


def _rows(rows, classes, seed):
  rng = np.random.default_rng(seed)
  x = (3 * rng.normal(size=(rows, classes))).astype(np.float32)
  x[1] = -3.0
  x[1, 0] = 40.0     # a confident row (p ~ 1)
  y = rng.integers(0, classes, rows)
  y[1] = 0
  w = (rng.random(rows) < 0.8).astype(np.float64)
  w[:2] = 1.0
  return x.astype(np.float64), y, w


@pytest.mark.parametrize('classes', [2, 9, 17, 47, 100])
@pytest.mark.parametrize('case_id,cfg', MANY_C, ids=[m[0] for m in MANY_C])
def test_many_class_counts_value_grad_padding(case_id, cfg, classes):
  kind = 'int_sigmoid' if case_id == 'bce_int' else 'softmax'
  spec = losses.from_config(cfg, num_classes=classes)
  x, y, w = _rows(48, classes, seed=classes)
  want = _reference(cfg, kind, x, y, w) if kind == 'softmax' else ref.bce(
      x, np.eye(classes)[y], np.broadcast_to(w[:, None], x.shape))
  with jax.enable_x64(True):
    f = jax.jit(jax.value_and_grad(lambda a, b, c: spec(
        a, b, weights=c, state=spec.init_state())[0]))
    value, grad = f(jnp.asarray(x), y, w)
    np.testing.assert_allclose(float(value), want, rtol=1e-9, atol=1e-12)
    v = np.random.default_rng(0).normal(size=x.shape)
    h = 1e-6
    fd = (float(f(jnp.asarray(x + h * v), y, w)[0]) -
          float(f(jnp.asarray(x - h * v), y, w)[0])) / (2 * h)
    np.testing.assert_allclose(np.vdot(grad, v), fd, rtol=1e-5, atol=1e-8)
    # Garbage in masked rows changes nothing; their gradient is 0.
    x_bad, y_bad = x.copy(), y.copy()
    x_bad[w == 0], y_bad[w == 0] = np.nan, -100
    value_bad, grad_bad = f(jnp.asarray(x_bad), y_bad, w)
    np.testing.assert_allclose(float(value_bad), float(value), rtol=1e-12)
    np.testing.assert_array_equal(grad_bad, grad)


# --- What DSC optimises. ----------------------------------------------------


@pytest.mark.parametrize('alpha', [0.5, 1.0, 2.0])
@pytest.mark.parametrize('gamma', [0.0, 1.0])
def test_dsc_positive_term_is_minimised_at_one_over_one_plus_alpha(alpha,
                                                                   gamma):
  # Binary form, y = 1: the loss as a function of p = sigmoid(z).
  p = np.linspace(1e-4, 1 - 1e-4, 20001)
  z = np.log(p) - np.log1p(-p)
  term = jax.jit(lambda a: losses.dice.dsc(a, jnp.ones_like(a), alpha=alpha,
                                           gamma=gamma, reduction='none'))
  values = np.asarray(term(jnp.asarray(z, jnp.float32)))
  best = 1.0 / (1.0 + alpha)
  assert abs(p[np.argmin(values)] - best) < 2e-3
  assert values[-1] > values.min() + 1e-3         # p -> 1 is not the optimum
  # Analytically: dL/dp = dL/df * df/dp, dL/df = -(2 + g) / (f + 1 + g)^2 < 0
  # and df/dp = (1 - p)^(a - 1) (1 - p - a p), zero at p = 1 / (1 + a).
  f = (1 - p) ** alpha * p
  dl_dp = -(2 + gamma) / (f + 1 + gamma) ** 2 * (
      (1 - p) ** (alpha - 1) * (1 - p - alpha * p))
  assert np.all(dl_dp[p < best - 1e-3] < 0) and np.all(dl_dp[p > best + 1e-3]
                                                       > 0)
  grad = jax.grad(lambda a: losses.dice.dsc(a, jnp.ones(1), alpha=alpha,
                                            gamma=gamma))
  for q in (0.2, best, 0.9):
    zq = float(np.log(q / (1 - q)))
    fq = (1 - q) ** alpha * q
    want = -(2 + gamma) / (fq + 1 + gamma) ** 2 * (
        (1 - q) ** (alpha - 1) * (1 - q - alpha * q)) * q * (1 - q)
    np.testing.assert_allclose(float(grad(jnp.asarray([zq]))[0]), want,
                               rtol=1e-4, atol=1e-6)


def test_dsc_ovr_negative_term_is_best_at_zero_and_one():
  # y = 0 under 'ovr' (alpha > 0): 1 - g / (f + g) is 0 at p = 0 and p = 1.
  z = np.array([-30.0, -2.0, 0.0, 2.0, 30.0], np.float32)
  values = np.asarray(losses.dice.dsc(z, np.zeros(5), alpha=1.0, gamma=1.0,
                                      reduction='none'))
  assert values[0] < 1e-6 and values[-1] < 1e-6
  assert np.all(values[1:-1] > 0.05)


# --- Compound losses and CE warm-up. -----------------------------------------


def test_compound_ce_weight_is_the_sum_of_its_parts():
  x, y, w = _inputs('softmax', seed=16)
  spec = losses.from_config(dict(name='dsc', ce_weight=0.5), num_classes=C)
  assert not spec.stateful
  value = float(spec(x, y, weights=w)[0])
  want = ref.dsc(x, y, w, 1.0, 1.0, False) + 0.5 * ref.ce(x, y, w)
  np.testing.assert_allclose(value, want, rtol=1e-5)
  # With GHM: state threads through the named part.
  spec = losses.from_config(dict(name='ghm', bins=5, ce_weight=1.5),
                            num_classes=C)
  value, state = spec(x, y, weights=w, state=spec.init_state())
  want = ref.ghm_sequence([(x, y, w)], bins=5, momentum=0.75,
                          bias_correction=True, sigmoid_form=False)[0][0]
  np.testing.assert_allclose(float(value), want + 1.5 * ref.ce(x, y, w),
                             rtol=1e-5)
  assert int(state['updates'].max()) == 1


def test_ce_warmup_then_named_loss_and_resume_continues_the_count():
  n = 2
  spec = losses.from_config(dict(name='ghm', bins=5, ce_warmup_steps=n),
                            num_classes=C)
  assert spec.stateful
  state = spec.init_state()
  assert set(state) == {'counts', 'updates', 'step'}
  step = jax.jit(lambda s, x, y, w: spec(x, y, weights=w, state=s))
  batches = [_inputs('softmax', seed=30 + i) for i in range(4)]
  ghm_ref = ref.ghm_sequence(batches[n:], bins=5, momentum=0.75,
                             bias_correction=True, sigmoid_form=False)
  saved = None
  for i, (x, y, w) in enumerate(batches):
    value, state = step(state, jnp.asarray(x, jnp.float32), y, w)
    assert int(state['step']) == i + 1
    if i < n:   # CE; GHM's EMA sits the warm-up out
      np.testing.assert_allclose(float(value), ref.ce(x, y, w), rtol=1e-5)
      assert not np.asarray(state['updates']).any()
    else:
      np.testing.assert_allclose(float(value), ghm_ref[i - n][0], rtol=1e-5)
    if i == n - 1:   # a checkpoint: host copies, as a restore gives back
      saved = jax.tree.map(np.asarray, state)
  # Resume from the checkpoint in a fresh spec: the same values follow.
  resumed = losses.from_config(dict(name='ghm', bins=5, ce_warmup_steps=n),
                               num_classes=C)
  state = jax.tree.map(jnp.asarray, saved)
  for i, (x, y, w) in enumerate(batches[n:], start=n):
    value, state = resumed(jnp.asarray(x, jnp.float32), y, weights=w,
                           state=state)
    np.testing.assert_allclose(float(value), ghm_ref[i - n][0], rtol=1e-5)
  assert int(state['step']) == len(batches)


def test_ce_warmup_of_a_stateless_loss_with_ce_weight():
  spec = losses.from_config(dict(name='focal', gamma=2.0, ce_weight=0.3,
                                 ce_warmup_steps=1), num_classes=C)
  x, y, w = _inputs('softmax', seed=17)
  state = spec.init_state()
  assert set(state) == {'step'}
  value, state = spec(x, y, weights=w, state=state)
  np.testing.assert_allclose(float(value), ref.ce(x, y, w), rtol=1e-5)
  value, state = spec(x, y, weights=w, state=state)
  np.testing.assert_allclose(
      float(value), ref.focal(x, y, w, 2.0) + 0.3 * ref.ce(x, y, w), rtol=1e-5)
  with pytest.raises(ValueError, match='state is required'):
    spec(x, y, weights=w)
