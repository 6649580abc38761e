"""Statistics of the tune-then-test report: pure NumPy, no I/O.

* `two_level_bootstrap`: replicates of a metric difference between two
  systems that resample both the seeds and the test examples (the two are
  crossed: every seed is scored on the same test set, so one example draw
  serves all seeds of a replicate), so the interval covers both seed
  variance and test-set sampling.
* `percentile_interval`, `bootstrap_p`: the interval and two-sided p-value
  of those replicates.
* `holm`: Holm-Bonferroni adjusted p-values (Holm 1979).

A metric is given the way `experiments.report`'s scorers give it: each run
has per-example statistics `stats [n, K]` (for classification, one-hot gold,
predicted and correct labels) whose count-weighted sums `sums [B, K]` a
`metric_fn(sums) -> {name: [B]}` turns into metrics (macro-F1, span F1, ...).
A resample of the examples is then a vector of multiplicities `counts [n]`
and its metric `metric_fn(counts @ stats)`.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

MetricFn = Callable[[np.ndarray], Mapping[str, np.ndarray]]


def _multiplicities(rng: np.random.Generator, size: tuple[int, ...],
                    n: int) -> np.ndarray:
  """[*size, n] multiplicities of n examples drawn n times with replacement."""
  return rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(np.float64)


def two_level_bootstrap(stats_a: Sequence[np.ndarray],
                        stats_b: Sequence[np.ndarray], metric_fn: MetricFn, *,
                        num_resamples: int = 2000, seed: int = 0,
                        levels: str = 'both', paired_seeds: bool = True,
                        chunk: int = 256) -> dict[str, np.ndarray]:
  """Replicates of mean-over-seeds metric(A) - metric(B).

  Seeds and test examples are crossed, not nested: every seed of both
  systems is scored on the same test examples. Replicate b with
  `levels='both'` (the two-way "pigeonhole" bootstrap of crossed random
  effects, Owen 2007, Ann. Appl. Stat. 1(2)):
    1. draws S seed slots with replacement: for `paired_seeds` (A's seed i
       and B's seed i ran with the same seed: same head initialisation,
       dropout and data order) one index per slot shared by A and B;
       otherwise A's and B's seeds independently;
    2. draws the n test examples with replacement once, `counts [n]`, and
       uses that draw in every slot and for both systems (paired by
       example);
    3. returns mean_j metric(counts @ stats_a[s_j]) -
       mean_j metric(counts @ stats_b[t_j]).
  Its variance covers the seed variance and the test-set sampling (Owen's
  estimator is, if anything, conservative).
  `levels='examples'`: every seed once, only the examples resampled (the
  seed-averaged bootstrap of `experiments.report`, blind to seed variance).
  `levels='seeds'`: only the seeds (each slot sees every example once).
  `levels='nested'`: an independent example draw per seed slot, as if each
  seed had its own test set; it averages the example noise over the slots
  and so understates the test-set variance (kept to show why it is not
  used: with identical seeds its interval is narrower than 'examples').

  Args:
    stats_a: per seed, `[n, K]` per-example statistics of system A.
    stats_b: the same for system B (the baseline); the same n examples in the
      same order.
    metric_fn: `sums [B, K] -> {metric: [B]}`.
    num_resamples: B.
    seed: the bootstrap's RNG seed.
    levels: 'both' | 'examples' | 'seeds' | 'nested'.
    paired_seeds: share seed indices between A and B; needs S_a == S_b.
    chunk: replicates computed at once (memory: chunk * S * n floats).

  Returns:
    {metric: [num_resamples] float64 differences}.
  """
  a = np.asarray(stats_a, np.float64)
  b = np.asarray(stats_b, np.float64)
  if a.ndim != 3 or b.ndim != 3 or a.shape[1:] != b.shape[1:]:
    raise ValueError(f'stats must be [seeds, n, K] with the same n and K; got '
                     f'{a.shape} and {b.shape}')
  if levels not in ('both', 'examples', 'seeds', 'nested'):
    raise ValueError(f"levels={levels!r}: one of 'both', 'examples', "
                     "'seeds', 'nested'")
  if paired_seeds and len(a) != len(b):
    raise ValueError(f'paired_seeds needs as many seeds in A ({len(a)}) as '
                     f'in B ({len(b)})')
  sa, sb, n = len(a), len(b), a.shape[1]
  slots = max(sa, sb)
  rng = np.random.default_rng(seed)
  out: dict[str, list[np.ndarray]] = {}
  for start in range(0, num_resamples, chunk):
    m = min(chunk, num_resamples - start)
    if levels == 'examples':
      ia = np.broadcast_to(np.arange(sa), (m, sa))
      ib = np.broadcast_to(np.arange(sb), (m, sb))
    else:
      ia = rng.integers(0, sa, (m, sa))
      ib = ia if paired_seeds else rng.integers(0, sb, (m, sb))
    if levels == 'seeds':
      counts = np.ones((m, slots, n))
    elif levels == 'nested':
      counts = _multiplicities(rng, (m, slots), n)
    else:   # one draw of the examples per replicate, shared by the slots
      counts = np.broadcast_to(_multiplicities(rng, (m, 1), n), (m, slots, n))
    # sums[r, j] = counts[r, j] @ stats[i[r, j]]: every slot's counts times
    # every seed's stats, then the drawn seed's row (no [m, S, n, K] copy).
    rows = np.arange(m)[:, None]
    sums_a = np.einsum('rjn,snk->rjsk', counts[:, :sa], a)[
        rows, np.arange(sa), ia]
    sums_b = np.einsum('rjn,snk->rjsk', counts[:, :sb], b)[
        rows, np.arange(sb), ib]
    ma = metric_fn(sums_a.reshape(m * sa, -1))
    mb = metric_fn(sums_b.reshape(m * sb, -1))
    for key in ma:
      diff = (np.asarray(ma[key], np.float64).reshape(m, sa).mean(1)
              - np.asarray(mb[key], np.float64).reshape(m, sb).mean(1))
      out.setdefault(key, []).append(diff)
  return {k: np.concatenate(v) for k, v in out.items()}


def percentile_interval(samples: np.ndarray, level: float = 0.95
                        ) -> tuple[float, float]:
  """The (1 - level) / 2 and (1 + level) / 2 percentiles of `samples`."""
  tail = 50 * (1 - level)
  lo, hi = np.percentile(np.asarray(samples, np.float64), [tail, 100 - tail])
  return float(lo), float(hi)


def bootstrap_p(samples: np.ndarray) -> float:
  """Two-sided bootstrap p-value of "the difference is 0".

  p = min(1, 2 * min((1 + #{d <= 0}) / (B + 1), (1 + #{d >= 0}) / (B + 1)))
  over the B replicates d: twice the smaller tail mass at 0, with the +1
  correction that keeps p > 0 (Davison & Hinkley 1997, eq. 4.11), so
  p >= 2 / (B + 1).
  """
  d = np.asarray(samples, np.float64)
  if d.ndim != 1 or not len(d):
    raise ValueError('bootstrap_p needs a non-empty 1-D array of replicates')
  big = len(d) + 1
  below = (1 + np.sum(d <= 0)) / big
  above = (1 + np.sum(d >= 0)) / big
  return float(min(1.0, 2 * min(below, above)))


def holm(p_values: Sequence[float]) -> np.ndarray:
  """Holm-Bonferroni adjusted p-values, in the input order.

  With the m p-values sorted ascending, p_(1) <= ... <= p_(m), the adjusted
  p_(i) is max_{j <= i} min(1, (m - j + 1) p_(j)). Rejecting where the
  adjusted value is <= alpha controls the family-wise error rate at alpha.
  NaN entries (comparisons that could not be made) stay NaN and do not
  count in m.
  """
  p = np.asarray(p_values, np.float64)
  if p.ndim != 1:
    raise ValueError('holm takes a 1-D sequence of p-values')
  out = np.full(p.shape, np.nan)
  ok = np.flatnonzero(~np.isnan(p))
  if np.any((p[ok] < 0) | (p[ok] > 1)):
    raise ValueError(f'p-values must be in [0, 1]: {p.tolist()}')
  m = len(ok)
  order = ok[np.argsort(p[ok], kind='stable')]
  running = 0.0
  for rank, i in enumerate(order):
    running = max(running, min(1.0, (m - rank) * p[i]))
    out[i] = running
  return out


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample std (ddof=1; NaN for fewer than 2 values)."""
  x = np.asarray(values, np.float64)
  if not len(x):
    return float('nan'), float('nan')
  return float(x.mean()), (float(x.std(ddof=1)) if len(x) > 1 else float('nan'))

