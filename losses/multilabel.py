"""Multi-label "softmax + cross-entropy" (multilabel categorical CE).

Su Jianlin, "将"softmax+交叉熵"推广到多标签分类问题" (Extending
softmax + cross-entropy to multi-label classification), kexue.fm/archives/
7359, 2020; published as ZLPR (Su et al., arXiv:2208.02955, 2022). It is the
multi-label member of the unified "pairwise" view of classification losses
(every positive score should exceed every negative one, with threshold 0):

  l_i = log(1 + sum_{j in neg_i} e^{s_ij}) + log(1 + sum_{k in pos_i} e^{-s_ik})

Predict label j when `s_ij > 0`. Unlike BCE it does not grow with the
number of negatives.
"""

import jax
import jax.numpy as jnp

from losses import _core


def _log1p_sum_exp(a, mask):
  """`log(1 + sum_j mask_j exp(a_j))` over the last axis, stable and finite.

  Rows with no selected entry give exactly 0 with a zero gradient (a plain
  logsumexp over an all -inf row would give NaN gradients).
  """
  neg_big = jnp.asarray(-jnp.inf, a.dtype)
  # Shift by max(0, max selected): the "1" is exp(0), so the shift covers it.
  m = jnp.maximum(jnp.max(jnp.where(mask, a, neg_big), axis=-1), 0.0)
  m = jax.lax.stop_gradient(m)
  terms = jnp.where(mask, jnp.exp(jnp.where(mask, a, 0.0) - m[..., None]), 0.0)
  return m + jnp.log(jnp.exp(-m) + jnp.sum(terms, axis=-1))


def multilabel_ce(logits, labels, *, weights=None, reduction='mean'):
  """Multilabel categorical cross-entropy (threshold 0).

  Args:
    logits: `[..., C]` float scores.
    labels: `[..., C]` multi-hot (bool / 0-1 int / 0-1 float).
    weights: `[...]` per-example weights or None (the loss is defined per
      example, over its C labels).
    reduction: 'mean' | 'sum' | 'none' (`[...]`, per example).
  """
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels)
  if logits.ndim < 1 or labels.shape != logits.shape:
    raise ValueError(f'multilabel_ce: labels must be multi-hot with the '
                     f'logits shape {logits.shape}, got {labels.shape}.')
  dtype = _core.compute_dtype(logits)
  w = _core.element_weights(weights, logits.shape[:-1], dtype=dtype)
  keep = (w > 0)[..., None]
  s = jnp.where(keep, logits.astype(dtype), 0.0)
  pos = keep & (labels > 0.5)
  per_example = _log1p_sum_exp(s, ~pos) + _log1p_sum_exp(-s, pos)
  return _core.reduce(per_example, w, reduction, 'multilabel_ce')
