"""Linear-chain CRF: brute-force enumeration of every path, finite differences,
pytorch-crf 0.7.2, a scheme checker written here, and 8 fake devices."""

import itertools
import json
import os
import pathlib
import subprocess
import sys

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import crf

IOB2_TAGS = ['O', 'B-PER', 'I-PER', 'B-LOC', 'I-LOC']


# ---- Independent references -------------------------------------------------

def brute_force(e, trans, start, end, n):
  """Every path of length n through one row e [T, K] in float64:
  (scores {path: score}, log Z). Forbidden entries may be -inf."""
  e, trans, start, end = (np.asarray(x, np.float64) for x in (e, trans, start, end))
  scores = {}
  for path in itertools.product(range(e.shape[1]), repeat=n):
    s = start[path[0]] + end[path[-1]] + sum(e[t, y] for t, y in enumerate(path))
    s += sum(trans[a, b] for a, b in zip(path[:-1], path[1:]))
    scores[path] = s
  vals = np.array(list(scores.values()))
  m = vals.max()
  return scores, (m + np.log(np.sum(np.exp(vals - m))) if np.isfinite(m) else m)


def brute_nll_mean(e, tags, lengths, trans, start, end):
  """Mean over non-empty rows of -(score(tags) - log Z), by enumeration."""
  out = []
  for b, n in enumerate(lengths):
    if n:
      scores, log_z = brute_force(e[b], trans, start, end, n)
      out.append(log_z - scores[tuple(tags[b, :n])])
  return np.mean(out)


def valid(seq, scheme):
  """A scheme's rules as a span state machine (not a transition table)."""
  if scheme == 'none':
    return True
  inner = 'M' if scheme == 'BMES' else 'I'
  open_type = None  # Type of the span that is open, '' when untyped.
  for tag in seq:
    prefix, _, typ = tag.partition('-')
    if scheme in ('IOB2', 'BIO'):
      if prefix == 'I' and open_type != typ:
        return False
      open_type = None if prefix == 'O' else typ
      continue
    if prefix in ('O', 'B', 'S') and open_type is not None:
      return False
    if prefix in (inner, 'E') and open_type != typ:
      return False
    open_type = typ if prefix in ('B', inner) else None
  return open_type is None or scheme in ('IOB2', 'BIO')


def random_crf(rng, b, t, k, lengths=None, scale=1.0):
  e = (rng.normal(size=(b, t, k)) * scale).astype(np.float32)
  params = [rng.normal(size=s).astype(np.float32) for s in ((k, k), (k,), (k,))]
  if lengths is None:
    lengths = rng.integers(0, t + 1, b)
  mask = np.arange(t)[None] < np.asarray(lengths)[:, None]
  tags = np.where(mask, rng.integers(0, k, (b, t)), -100)  # -100: padding id.
  return e, tags, mask, params


# ---- Forward algorithm and score against enumeration ------------------------

@pytest.mark.parametrize('k', [1, 2, 4])
def test_log_partition_and_likelihood_match_brute_force(k):
  rng = np.random.default_rng(k)
  lengths = [5, 4, 3, 2, 1, 0]
  e, tags, mask, (trans, start, end) = random_crf(rng, 6, 5, k, lengths)
  log_z = np.asarray(crf.log_partition(e, mask, trans, start, end))
  ll = np.asarray(crf.log_likelihood(e, tags, mask, trans, start, end))
  np.testing.assert_array_equal(  # A 0/1 float mask means the same.
      crf.log_partition(e, mask.astype(np.float32), trans, start, end), log_z)
  for b, n in enumerate(lengths):
    if n == 0:
      assert log_z[b] == 0 and ll[b] == 0
      continue
    scores, ref_z = brute_force(e[b], trans, start, end, n)
    np.testing.assert_allclose(log_z[b], ref_z, rtol=1e-5, err_msg=f'row {b}')
    np.testing.assert_allclose(ll[b], scores[tuple(tags[b, :n])] - ref_z,
                               rtol=1e-5, atol=1e-5, err_msg=f'row {b}')
  assert np.all(ll <= 1e-6)


def test_likelihood_with_constraints_is_renormalised_over_valid_paths():
  rng = np.random.default_rng(1)
  k = 4
  allowed = crf.allowed_transitions(['B', 'M', 'E', 'S'], 'BMES')
  e, _, mask, params = random_crf(rng, 4, 5, k, [5, 4, 2, 1])
  trans, start, end = crf.apply_constraints(*params, allowed)
  tags = np.array([[0, 1, 2, 3, 0], [0, 2, 0, 2, 0], [0, 2, 0, 0, 0],
                   [3, 0, 0, 0, 0]])  # B M E S B(masked); B E B E; B E; S.
  ll = np.asarray(crf.log_likelihood(e, tags, mask, trans, start, end))
  names = 'BMES'
  for b, n in enumerate([5, 4, 2, 1]):
    scores, ref_z = brute_force(e[b], trans, start, end, n)
    np.testing.assert_allclose(ll[b], scores[tuple(tags[b, :n])] - ref_z, rtol=1e-5)
    # All the mass sits on the paths the checker below accepts.
    ok = [valid([names[i] for i in p], 'BMES') for p in scores]
    assert all(np.isfinite(s) == v for s, v in zip(scores.values(), ok))
    mass = sum(np.exp(s - ref_z) for s, v in zip(scores.values(), ok) if v)
    np.testing.assert_allclose(mass, 1.0, rtol=1e-6)


# ---- Viterbi ----------------------------------------------------------------

@pytest.mark.parametrize('scheme,tags', [
    ('none', ['a', 'b', 'c']), ('IOB2', ['O', 'B-PER', 'I-PER', 'B-LOC']),
    ('BMES', ['B', 'M', 'E', 'S'])])
def test_viterbi_matches_brute_force_argmax(scheme, tags):
  rng = np.random.default_rng(2)
  k, lengths = len(tags), [5, 3, 1, 0, 4]
  e, _, mask, params = random_crf(rng, 5, 5, k, lengths, scale=2.0)
  params = crf.apply_constraints(*params, crf.allowed_transitions(tags, scheme))
  path, best = crf.viterbi_decode(e, mask, *params)
  assert path.dtype == jnp.int32 and path.shape == (5, 5)
  for b, n in enumerate(lengths):
    assert np.all(np.asarray(path[b, n:]) == 0)
    if n == 0:
      assert best[b] == 0
      continue
    scores, _ = brute_force(e[b], *params, n)
    ref = max(scores, key=scores.get)
    assert tuple(np.asarray(path[b, :n])) == ref, (b, scores[ref])
    np.testing.assert_allclose(best[b], scores[ref], rtol=1e-5)


# ---- Gradients --------------------------------------------------------------

def _fd_grad(f, args, eps=1e-6):
  grads = []
  for i, x in enumerate(args):
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
      plus, minus = [a.copy() for a in args], [a.copy() for a in args]
      plus[i][idx] += eps
      minus[i][idx] -= eps
      g[idx] = (f(*plus) - f(*minus)) / (2 * eps)
    grads.append(g)
  return grads


@pytest.mark.parametrize('constrained', [False, True])
def test_nll_gradients_match_finite_differences_of_brute_force(constrained):
  rng = np.random.default_rng(3)
  lengths = [4, 2, 1, 0]
  e, tags, mask, params = random_crf(rng, 4, 4, 3, lengths)
  args = [e.astype(np.float64)] + [p.astype(np.float64) for p in params]
  allowed = (np.ones((3, 3), bool), np.ones(3, bool), np.ones(3, bool))
  if constrained:  # Tag 2 can never be reached nor can tag 0 end a path:
    # every logsumexp into tag 2 sums only -inf terms (NaN with jax.nn's).
    allowed = (np.array([[1, 1, 0], [1, 1, 0], [1, 1, 0]], bool),
               np.array([1, 1, 0], bool), np.array([0, 1, 1], bool))
    tags = np.array([[0, 1, 0, 1], [1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])

  def reference(e, trans, start, end):
    trans, start, end = (np.where(a, x, -np.inf) for a, x in
                         zip(allowed, (trans, start, end)))
    return brute_nll_mean(e, tags, lengths, trans, start, end)

  def loss(e, trans, start, end):
    return crf.nll(e, tags, mask, *crf.apply_constraints(trans, start, end, allowed))

  with jax.enable_x64(True):
    value, grads = jax.value_and_grad(loss, argnums=(0, 1, 2, 3))(*args)
    assert value.dtype == jnp.float64
  np.testing.assert_allclose(value, reference(*args), rtol=1e-10)
  for name, g, ref in zip(('emissions', 'trans', 'start', 'end'), grads,
                          _fd_grad(reference, args)):
    assert np.all(np.isfinite(g)), name
    np.testing.assert_allclose(g, ref, rtol=1e-5, atol=1e-7, err_msg=name)


def test_gold_path_through_forbidden_transition():
  rng = np.random.default_rng(4)
  allowed = crf.allowed_transitions(IOB2_TAGS, 'IOB2')
  e, _, mask, params = random_crf(rng, 2, 3, 5, [3, 3])
  tags = np.array([[0, 2, 2], [1, 2, 0]])  # O -> I-PER breaks IOB2.
  f = lambda e, p, v: crf.nll(e, tags, mask, *crf.apply_constraints(*p, allowed, value=v),
                              reduction='none')
  inf_nll = f(e, params, -jnp.inf)
  assert np.isposinf(inf_nll[0]) and np.isfinite(inf_nll[1])
  grads = jax.grad(lambda e, p: jnp.sum(f(e, p, -jnp.inf)), argnums=(0, 1))(e, params)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  finite = f(e, params, -1e4)
  assert 1e4 - 100 < finite[0] < 1e4 + 100
  np.testing.assert_allclose(finite[1], inf_nll[1], rtol=1e-6)


# ---- Reductions and weights -------------------------------------------------

def test_nll_reductions_and_weights():
  rng = np.random.default_rng(5)
  e, tags, mask, params = random_crf(rng, 4, 3, 3, [3, 0, 2, 1])
  per = -np.asarray(crf.log_likelihood(e, tags, mask, *params))
  np.testing.assert_allclose(crf.nll(e, tags, mask, *params, reduction='none'), per)
  np.testing.assert_allclose(crf.nll(e, tags, mask, *params, reduction='sum'), per.sum(),
                             rtol=1e-6)
  np.testing.assert_allclose(crf.nll(e, tags, mask, *params), per[[0, 2, 3]].mean(),
                             rtol=1e-6)  # The empty row does not count.
  w = np.array([2.0, 5.0, 0.0, 1.0])
  np.testing.assert_allclose(crf.nll(e, tags, mask, *params, weights=w),
                             (2 * per[0] + per[3]) / 3, rtol=1e-6)
  assert crf.nll(e, tags, np.zeros_like(mask), *params) == 0
  with pytest.raises(ValueError, match="'mean', 'sum', 'none'"):
    crf.nll(e, tags, mask, *params, reduction='avg')


# ---- pytorch-crf 0.7.2 -------------------------------------------------------

def test_matches_pytorch_crf():
  torch = pytest.importorskip('torch')
  torchcrf = pytest.importorskip('torchcrf')
  rng = np.random.default_rng(6)
  b, t, k = 8, 7, 5
  lengths = rng.integers(1, t + 1, b)  # pytorch-crf needs mask[:, 0] on.
  lengths[0] = t
  e, tags, mask, (trans, start, end) = random_crf(rng, b, t, k, lengths, scale=2.0)
  ref = torchcrf.CRF(k, batch_first=True)
  with torch.no_grad():  # Same convention: transitions[i, j] is from i to j.
    ref.transitions.copy_(torch.tensor(trans))
    ref.start_transitions.copy_(torch.tensor(start))
    ref.end_transitions.copy_(torch.tensor(end))
  tm = torch.tensor(mask)
  ref_ll = ref(torch.tensor(e), torch.tensor(np.where(mask, tags, 0)), tm,
               reduction='none').detach().numpy()
  np.testing.assert_allclose(crf.log_likelihood(e, tags, mask, trans, start, end),
                             ref_ll, rtol=1e-5)
  path, _ = crf.viterbi_decode(e, mask, trans, start, end)
  for row, ref_path, n in zip(np.asarray(path), ref.decode(torch.tensor(e), tm), lengths):
    assert list(row[:n]) == ref_path


# ---- Constraints ------------------------------------------------------------

SCHEME_TAGS = {
    'IOB2': ['O', 'B-PER', 'I-PER', 'B-LOC', 'I-LOC'],
    'BIOES': ['O', 'B-PER', 'I-PER', 'E-PER', 'S-PER', 'B-LOC', 'E-LOC', 'S-LOC', 'I-LOC'],
    'BMES': ['B-NR', 'M-NR', 'E-NR', 'S-NR', 'O'],
    'BMES_bare': ['B', 'M', 'E', 'S'],
    'BIES': ['S', 'E', 'I', 'B'],
    'BIO': ['B', 'I', 'O'],
}
_DECODE = jax.jit(crf.viterbi_decode)


@hypothesis.settings(max_examples=40, deadline=None, derandomize=True)
@hypothesis.given(name=st.sampled_from(sorted(SCHEME_TAGS)),
                  seed=st.integers(0, 2**31), scale=st.sampled_from([1.0, 10.0, 100.0]))
def test_constrained_decoding_never_emits_an_invalid_sequence(name, seed, scale):
  tags = SCHEME_TAGS[name]
  scheme = name.split('_')[0]
  rng = np.random.default_rng(seed)
  lengths = [6, 5, 3, 2, 1, 0]
  e, _, mask, params = random_crf(rng, 6, 6, len(tags), lengths, scale=scale)
  params = crf.apply_constraints(*params, crf.allowed_transitions(tags, scheme))
  path, best = _DECODE(e, mask, *params)
  assert np.all(np.isfinite(best))
  for row, n in zip(np.asarray(path), lengths):
    seq = [tags[i] for i in row[:n]]
    assert valid(seq, scheme), (scheme, seq)


def test_checker_rejects_what_the_scheme_forbids():  # The checker itself can fail.
  assert not valid(['O', 'I-PER'], 'IOB2') and not valid(['B-PER', 'I-LOC'], 'IOB2')
  assert not valid(['B', 'B'], 'BMES') and not valid(['B'], 'BMES')
  assert not valid(['M', 'E'], 'BMES') and not valid(['B', 'M', 'S'], 'BMES')
  assert not valid(['B-PER', 'E-LOC'], 'BIOES') and not valid(['S-PER', 'I-PER'], 'BIOES')
  assert valid(['B-PER', 'I-PER', 'O', 'B-LOC'], 'IOB2')
  assert valid(['B', 'M', 'M', 'E', 'S'], 'BMES') and valid(['B-X', 'I-X', 'E-X', 'O'], 'BIOES')


def test_allowed_transitions_iob2_table():
  trans, start, end = crf.allowed_transitions(IOB2_TAGS, 'IOB2')
  #                        O  B-PER I-PER B-LOC I-LOC   (to)
  np.testing.assert_array_equal(trans, np.array([
      [1, 1, 0, 1, 0],  # from O
      [1, 1, 1, 1, 0],  # from B-PER
      [1, 1, 1, 1, 0],  # from I-PER
      [1, 1, 0, 1, 1],  # from B-LOC
      [1, 1, 0, 1, 1],  # from I-LOC
  ], bool))
  np.testing.assert_array_equal(start, [1, 1, 0, 1, 0])
  np.testing.assert_array_equal(end, [1, 1, 1, 1, 1])


def test_allowed_transitions_untyped_bmes_table():
  trans, start, end = crf.allowed_transitions(['B', 'M', 'E', 'S'], 'BMES')
  #                        B  M  E  S   (to)
  np.testing.assert_array_equal(trans, np.array([
      [0, 1, 1, 0],  # from B: the word goes on
      [0, 1, 1, 0],  # from M
      [1, 0, 0, 1],  # from E: a new word
      [1, 0, 0, 1],  # from S
  ], bool))
  np.testing.assert_array_equal(start, [1, 0, 0, 1])
  np.testing.assert_array_equal(end, [0, 0, 1, 1])
  trans, start, end = crf.allowed_transitions(['a', 'b'], 'none')
  assert trans.all() and start.all() and end.all() and trans.shape == (2, 2)


@pytest.mark.parametrize('tags,scheme,match', [
    (['O', 'X-PER'], 'IOB2', "'X-PER'.*'IOB2'"),
    (['B', 'M'], 'BIES', "'M'.*'BIES'"),
    (['B-PER', 'I-PER'], 'BMES', "'I-PER'.*'BMES'"),
    (['B-'], 'BIO', "'B-'"),
    (['B', 'I'], 'IOB1', "'IOB1'.*choices"),
])
def test_allowed_transitions_rejects_bad_tags(tags, scheme, match):
  with pytest.raises(ValueError, match=match):
    crf.allowed_transitions(tags, scheme)


# ---- dtypes, shapes, params --------------------------------------------------

def test_bf16_emissions_give_float32_close_to_float32():
  rng = np.random.default_rng(7)
  e, tags, mask, params = random_crf(rng, 4, 6, 5, [6, 4, 1, 0])
  e16 = jnp.asarray(e, jnp.bfloat16)
  for f in (lambda e: crf.log_likelihood(e, tags, mask, *params),
            lambda e: crf.log_partition(e, mask, *params),
            lambda e: crf.viterbi_decode(e, mask, *params)[1]):
    out16, out32 = f(e16), f(e)
    assert out16.dtype == jnp.float32
    np.testing.assert_allclose(out16, out32, rtol=2e-2, atol=5e-2)
    # Exactly the float32 computation on the rounded emissions.
    np.testing.assert_allclose(out16, f(np.asarray(e16, np.float32)), rtol=1e-6)


def test_bad_shapes_name_the_shapes():
  e = np.zeros((2, 3, 4), np.float32)
  mask = np.ones((2, 3), bool)
  with pytest.raises(ValueError, match=r'emissions \(2, 3, 4\).*transitions \(3, 3\)'):
    crf.log_partition(e, mask, np.zeros((3, 3)), np.zeros(4), np.zeros(4))
  with pytest.raises(ValueError, match=r'tags \(2, 4\)'):
    crf.log_likelihood(e, np.zeros((2, 4), int), mask, np.zeros((4, 4)), np.zeros(4),
                       np.zeros(4))
  with pytest.raises(ValueError, match=r'mask \(3, 2\)'):
    crf.viterbi_decode(e, mask.T, np.zeros((4, 4)), np.zeros(4), np.zeros(4))
  with pytest.raises(ValueError, match=r'allowed start has shape \(3,\)'):
    crf.apply_constraints(np.zeros((4, 4)), np.zeros(4), np.zeros(4),
                          (np.ones((4, 4), bool), np.ones(3, bool), np.ones(4, bool)))


def test_crf_params_module():
  zeros = crf.CRFParams(num_tags=3).init(jax.random.key(0))['params']
  assert {k: v.shape for k, v in zeros.items()} == {
      'transitions': (3, 3), 'start': (3,), 'end': (3,)}
  assert all(v.dtype == jnp.float32 and not v.any() for v in zeros.values())
  module = crf.CRFParams(num_tags=3, init_scale=0.1)
  variables = module.init(jax.random.key(0))
  trans, start, end = module.apply(variables)
  assert 0 < np.abs(trans).max() <= 0.1 and np.array_equal(
      trans, variables['params']['transitions'])


# ---- 8 fake devices ------------------------------------------------------------

_SHARDED_SCRIPT = r'''
import json
import numpy as np
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from bert_jax import crf

assert jax.device_count() == 8, jax.devices()
rng = np.random.default_rng(0)
b, t, k = 16, 6, 5
e = rng.normal(size=(b, t, k)).astype(np.float32)
lengths = rng.integers(0, t + 1, b)
mask = np.arange(t)[None] < lengths[:, None]
tags = rng.integers(0, k, (b, t))
params = tuple(rng.normal(size=s).astype(np.float32) for s in ((k, k), (k,), (k,)))
allowed = crf.allowed_transitions(['O', 'B-A', 'I-A', 'B-B', 'I-B'], 'IOB2')
tags = np.where(tags % 2 == 0, 0, tags)  # O, B-A, B-B only: valid IOB2.

def step(e, tags, mask, params):
  params = crf.apply_constraints(*params, allowed)
  loss, grads = jax.value_and_grad(
      lambda e, p: crf.nll(e, tags, mask, *p), argnums=(0, 1))(e, params)
  return loss, grads, crf.viterbi_decode(e, mask, *params)

def flat(out):
  return [np.asarray(x).tolist() for x in jax.tree.leaves(out)]

single = flat(jax.jit(step)(e, tags, mask, params))
mesh = Mesh(np.array(jax.devices()), ('data',))
data = NamedSharding(mesh, P('data'))
put = lambda x: jax.device_put(x, data)
out = jax.jit(step)(put(e), put(tags), put(mask), params)
assert len(out[2][0].sharding.device_set) == 8
print('RESULT' + json.dumps({'single': single, 'sharded': flat(out)}))
'''


def test_eight_devices_give_the_same_result_as_one():
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu')
  repo = pathlib.Path(__file__).resolve().parents[1]
  proc = subprocess.run([sys.executable, '-c', _SHARDED_SCRIPT], env=env, cwd=repo,
                        capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-4000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith('RESULT')][-1]
  res = json.loads(line[len('RESULT'):])
  assert len(res['single']) == len(res['sharded']) == 7
  for a, b in zip(res['single'], res['sharded']):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
  assert np.isfinite(res['single'][0])
