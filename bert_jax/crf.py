"""Linear-chain CRF (Lafferty et al., 2001) as pure JAX functions.

For emissions e [T, K], a tag path y_1..y_n over the n valid positions scores
  score(y) = start[y_1] + sum_{t=1..n} e[t, y_t]
             + sum_{t=2..n} trans[y_{t-1}, y_t] + end[y_n],
with trans[i, j] the score of going from tag i to tag j (pytorch-crf's
convention), and p(y | e) = exp(score(y)) / Z. log Z comes from the forward
recursion in log space,
  alpha_1 = start + e[1],  alpha_t[j] = logsumexp_i(alpha_{t-1}[i] + trans[i, j]) + e[t, j],
  log Z = logsumexp_j(alpha_n[j] + end[j]),
and Viterbi decoding is the same recursion with max in place of logsumexp.

Shapes: emissions [B, T, K] (any float; computed in float32, or float64 under
x64), tags [B, T] int, mask [B, T] bool or 0/1, a prefix mask (positions
0..n-1 valid; a row with n = 0 has score, log Z and log-likelihood 0; not
checked, which would need a host sync).
Both recursions are `lax.scan`s over time; a masked step carries alpha (and
Viterbi's delta) unchanged, so nothing syncs with the host and the batch axis
may be sharded. The public functions are jitted so that eager calls reuse
the compiled scans. Tags at masked positions are ignored (padding ids such as
-100 are fine); tags at valid positions must lie in [0, K).

Constraints: `allowed_transitions` says what a tag scheme allows and
`apply_constraints` sets the rest to -inf. A forbidden transition then has
zero probability and is never decoded; the forward algorithm uses a
logsumexp whose gradient stays finite when every term is -inf. A gold path
through a forbidden transition has log-likelihood -inf (its gradient is still
finite); pass `value=-1e4` to `apply_constraints` to keep such losses finite.
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
SCHEMES = ('IOB2', 'BIO', 'BIOES', 'BIES', 'BMES', 'none')


def _check(emissions, transitions, start, end, tags=None, mask=None):
  """Raises ValueError naming the shapes unless they fit [B, T, K]."""
  shapes = dict(emissions=jnp.shape(emissions), transitions=jnp.shape(transitions),
                start=jnp.shape(start), end=jnp.shape(end))
  if tags is not None:
    shapes['tags'] = jnp.shape(tags)
  shapes['mask'] = jnp.shape(mask)
  ok = len(shapes['emissions']) == 3
  if ok:
    b, t, k = shapes['emissions']
    ok = (shapes['transitions'] == (k, k) and shapes['start'] == (k,)
          and shapes['end'] == (k,) and shapes['mask'] == (b, t)
          and shapes.get('tags', (b, t)) == (b, t))
  if not ok:
    raise ValueError('crf: expected emissions [B, T, K], tags and mask [B, T], '
                     'transitions [K, K], start and end [K]; got ' +
                     ', '.join(f'{k} {v}' for k, v in shapes.items()))


def _prepare(emissions, mask, transitions, start, end):
  """Time-major float arrays: (e [T, B, K], mask [T, B], trans, start, end)."""
  dtype = jnp.promote_types(emissions.dtype, jnp.float32)
  cast = lambda x: jnp.asarray(x).astype(dtype)
  e = jnp.swapaxes(cast(emissions), 0, 1)
  m = jnp.swapaxes(jnp.asarray(mask).astype(bool), 0, 1)
  return e, m, cast(transitions), cast(start), cast(end)


def _logsumexp(x: Array, axis: int) -> Array:
  """logsumexp that gives -inf with zero (not NaN) gradient when all are -inf."""
  m = jax.lax.stop_gradient(jnp.max(x, axis, keepdims=True))
  m = jnp.where(jnp.isfinite(m), m, 0)
  s = jnp.sum(jnp.exp(x - m), axis)
  pos = s > 0
  return jnp.where(pos, jnp.log(jnp.where(pos, s, 1)) + jnp.squeeze(m, axis),
                   -jnp.inf)


@jax.jit
def log_partition(emissions, mask, transitions, start, end) -> Array:
  """log Z [B] by the forward recursion (module docstring); 0 for empty rows."""
  _check(emissions, transitions, start, end, mask=mask)
  e, m, trans, start, end = _prepare(emissions, mask, transitions, start, end)

  def step(alpha, xs):  # alpha [B, K]: log-sum of prefixes ending in each tag.
    e_t, m_t = xs
    new = _logsumexp(alpha[:, :, None] + trans, axis=1) + e_t
    return jnp.where(m_t[:, None], new, alpha), None

  alpha, _ = jax.lax.scan(step, start + e[0], (e[1:], m[1:]))
  return jnp.where(m[0], _logsumexp(alpha + end, axis=1), 0)


def _score(emissions, tags, mask, transitions, start, end) -> Array:
  """score(y) [B] of the given tags (module docstring); 0 for empty rows."""
  e, m, trans, start, end = _prepare(emissions, mask, transitions, start, end)
  m = m.T  # [B, T]
  y = jnp.where(m, jnp.asarray(tags), 0).astype(jnp.int32)
  emit = jnp.take_along_axis(jnp.swapaxes(e, 0, 1), y[..., None], 2)[..., 0]
  pair = trans[y[:, :-1], y[:, 1:]]  # [B, T-1]: trans[y_{t-1}, y_t].
  n = jnp.sum(m, axis=1)
  last = jnp.take_along_axis(y, jnp.maximum(n - 1, 0)[:, None], 1)[:, 0]
  # `where`, not a product with the mask: forbidden pairs past n are -inf.
  score = (start[y[:, 0]] + jnp.sum(jnp.where(m, emit, 0), 1)
           + jnp.sum(jnp.where(m[:, 1:], pair, 0), 1) + end[last])
  return jnp.where(n > 0, score, 0)


@jax.jit
def log_likelihood(emissions, tags, mask, transitions, start, end) -> Array:
  """log p(tags | emissions) = score(tags) - log Z, [B], <= 0; 0 for empty rows."""
  _check(emissions, transitions, start, end, tags=tags, mask=mask)
  return (_score(emissions, tags, mask, transitions, start, end)
          - log_partition(emissions, mask, transitions, start, end))


@functools.partial(jax.jit, static_argnames='reduction')
def nll(emissions, tags, mask, transitions, start, end, *, weights=None,
        reduction: str = 'mean') -> Array:
  """Negative log-likelihood: [B] ('none'), its sum, or its weighted mean.

  'sum' = sum_b w_b nll_b and 'mean' = sum_b w_b nll_b / sum_b w_b, both
  over non-empty rows (weights [B], default ones); 'mean' is 0 when no row
  counts.
  """
  per_seq = -log_likelihood(emissions, tags, mask, transitions, start, end)
  if reduction == 'none':
    return per_seq
  w = jnp.ones_like(per_seq) if weights is None else jnp.asarray(weights, per_seq.dtype)
  w = jnp.where(jnp.any(jnp.asarray(mask).astype(bool), axis=1), w, 0)
  total = jnp.sum(jnp.where(w != 0, w * per_seq, 0))  # 0 * inf must not be NaN.
  if reduction == 'sum':
    return total
  if reduction == 'mean':
    den = jnp.sum(w)
    return jnp.where(den != 0, total / jnp.where(den != 0, den, 1), 0)
  raise ValueError(f"crf.nll: reduction {reduction!r}; choices: 'mean', 'sum', 'none'")


@jax.jit
def viterbi_decode(emissions, mask, transitions, start, end) -> tuple[Array, Array]:
  """argmax_y score(y): (tags int32 [B, T], 0 where masked; best score [B]).

  delta_t[j] = max_i(delta_{t-1}[i] + trans[i, j]) + e[t, j] with backpointers
  bp_t[j] = argmax_i; a masked step keeps delta and points each tag at itself,
  so the backtracking scan passes through padding unchanged.
  """
  _check(emissions, transitions, start, end, mask=mask)
  e, m, trans, start, end = _prepare(emissions, mask, transitions, start, end)
  k = e.shape[-1]

  def forward(delta, xs):
    e_t, m_t = xs
    cand = delta[:, :, None] + trans  # [B, K_from, K_to]
    new = jnp.max(cand, axis=1) + e_t
    bp = jnp.where(m_t[:, None], jnp.argmax(cand, axis=1), jnp.arange(k))
    return jnp.where(m_t[:, None], new, delta), bp.astype(jnp.int32)

  delta, bps = jax.lax.scan(forward, start + e[0], (e[1:], m[1:]))
  final = delta + end
  last = jnp.argmax(final, axis=1).astype(jnp.int32)

  def backward(tag, bp):  # tag_{t-1} = bp_t[tag_t]
    prev = jnp.take_along_axis(bp, tag[:, None], 1)[:, 0]
    return prev, prev

  _, earlier = jax.lax.scan(backward, last, bps, reverse=True)
  path = jnp.concatenate([earlier, last[None]], axis=0).T  # [B, T]
  nonempty = m[0]
  return (jnp.where(m.T, path, 0),
          jnp.where(nonempty, jnp.max(final, axis=1), 0))


def _parse(tag: str, scheme: str, prefixes: str) -> tuple[str, str]:
  if tag == 'O':
    return 'O', ''
  head, sep, typ = tag.partition('-')
  if head in tuple(prefixes) and (typ or not sep):
    return head, typ
  raise ValueError(f'crf.allowed_transitions: tag {tag!r} does not parse under '
                   f'scheme {scheme!r} (expected O, or {"/".join(prefixes)} '
                   'bare or as PREFIX-TYPE)')


def allowed_transitions(tags: Sequence[str], scheme: str
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Boolean masks (trans [K, K], start [K], end [K]) of what a scheme allows.

  Schemes: IOB2 (= BIO), BIOES (= BIES), BMES, each with typed tags (B-PER)
  or bare ones (B: each span a word), plus O; 'none' allows everything.
  A continuing tag (I/M/E-X; I-X in IOB2) may only follow B-X or I/M-X of
  the same type and may not start a sequence. In BIOES/BMES a span must be
  closed (E or S) before O, B, S or the end of the sequence.
  """
  k = len(tags)
  if scheme == 'none':
    return np.ones((k, k), bool), np.ones(k, bool), np.ones(k, bool)
  if scheme not in SCHEMES:
    raise ValueError(f'crf.allowed_transitions: unknown scheme {scheme!r}; '
                     f'choices: {SCHEMES}')
  inner = 'M' if scheme == 'BMES' else 'I'
  iob = scheme in ('IOB2', 'BIO')
  parsed = [_parse(t, scheme, 'BI' if iob else 'B' + inner + 'ES') for t in tags]
  continues = ('I',) if iob else (inner, 'E')  # Tags that carry an open span.
  closed = np.array([iob or p in ('O', 'E', 'S') for p, _ in parsed], bool)
  trans = np.zeros((k, k), bool)
  for i, (p, typ) in enumerate(parsed):
    for j, (q, q_typ) in enumerate(parsed):
      trans[i, j] = (p in ('B', inner) and typ == q_typ) if q in continues else closed[i]
  start = np.array([q not in continues for q, _ in parsed], bool)
  return trans, start, closed


def apply_constraints(transitions, start, end, allowed, *, value=-jnp.inf):
  """Sets what `allowed` (from `allowed_transitions`) forbids to `value`.

  -inf (default) gives forbidden paths exactly zero probability; a finite
  value such as -1e4 keeps the NLL of a gold path that breaks the scheme finite.
  """
  out = []
  for x, a, name in zip((transitions, start, end), allowed, ('transitions', 'start', 'end')):
    if np.shape(a) != jnp.shape(x):
      raise ValueError(f'crf.apply_constraints: allowed {name} has shape '
                       f'{np.shape(a)}, {name} has {jnp.shape(x)}')
    out.append(jnp.where(jnp.asarray(a), x, jnp.asarray(value, jnp.result_type(x))))
  return tuple(out)


class CRFParams(nn.Module):
  """Holds a CRF's float32 transitions [K, K], start [K] and end [K].

  init_scale 0 (default) starts at zeros: every path equally likely a priori,
  so the CRF starts as the per-position softmax. init_scale s > 0 draws
  U(-s, s), as pytorch-crf does with s = 0.1.
  """
  num_tags: int
  init_scale: float = 0.0

  @nn.compact
  def __call__(self) -> tuple[Array, Array, Array]:
    s = self.init_scale
    init = (nn.initializers.zeros if s == 0 else
            lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -s, s))
    k = self.num_tags
    return (self.param('transitions', init, (k, k), jnp.float32),
            self.param('start', init, (k,), jnp.float32),
            self.param('end', init, (k,), jnp.float32))
