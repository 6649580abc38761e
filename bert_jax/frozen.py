"""Transfer with a frozen encoder (seed 001, section 3): no encoder backward,
and the encoder's outputs computed once and cached.

When `config.optim.freeze` matches every encoder parameter (`bert/...`), the
encoder is a fixed function of its input. Two savings follow.

* No encoder backward. The train step stops the gradient at every frozen
  parameter (`stop_gradients`), so autodiff differentiates only what
  reaches a trainable one: with the whole encoder frozen, the backward pass
  is the head's alone. (Frozen leaves already got zero updates; their
  gradients used to be computed and thrown away.)
* Cached features. If the encoder's dropout is also off, its output for an
  example is the same at every step. The trainer then computes it once per
  train and eval example (`cache_encoder_outputs`), stores it beside the
  example's features, and the task's model reads it from the batch instead
  of running the encoder (`replaying`): each epoch trains only the head.
  `config.cache_frozen_encoder=False` turns the cache off.

How the model reads the cache: every task model calls its `BertModel` once
(`heads.py`); a Flax method interceptor returns the cached
`(sequence_output, pooled_output)` for that call, so no head needs a second
code path. The cached outputs are what the model's own call returns, e.g.
`[N, 0, H]` sequence outputs for a pooler classifier.
"""

from __future__ import annotations

import contextlib
from typing import Any, Optional

from absl import logging
import flax.linen as nn
import jax
import numpy as np

from bert_jax import sharding
from bert_jax.data import batching
from bert_jax.model import BertModel

# Feature keys of the cached encoder outputs. The pooled output is stored as
# [N, 1, H]: length bucketing cuts every [N, max_seq_length, ...] feature,
# and must not cut [N, H] when H happens to equal max_seq_length.
SEQUENCE = 'encoder_out/sequence'
POOLED = 'encoder_out/pooled'


def stop_gradients(params: Any, frozen: Optional[Any]) -> Any:
  """params with `jax.lax.stop_gradient` on every leaf whose `frozen` (a
  tree of Python bools like params, `optim.frozen_mask`) is True."""
  if frozen is None:
    return params
  return jax.tree.map(lambda p, f: jax.lax.stop_gradient(p) if f else p,
                      params, frozen)


def encoder_frozen(frozen: Optional[Any]) -> bool:
  """Whether every encoder parameter (`bert/...`) is frozen."""
  if not frozen or 'bert' not in frozen:
    return False
  return all(jax.tree.leaves(frozen['bert']))


def should_cache(config, task, frozen: Optional[Any]) -> bool:
  """Whether this run caches the encoder's outputs (see the module doc)."""
  if not encoder_frozen(frozen) or not config.cache_frozen_encoder:
    return False
  if not getattr(task, 'caches_encoder', False):
    logging.info('frozen encoder: %s does not cache encoder outputs; the '
                 'encoder runs forward at each step', type(task).__name__)
    return False
  bert = task.bert_config
  if bert.hidden_dropout_prob or bert.attention_probs_dropout_prob:
    logging.warning(
        'frozen encoder with dropout (config.model.hidden_dropout_prob=%s, '
        'attention_probs_dropout_prob=%s): its outputs differ at each step, '
        'so they are not cached; set both to 0 to train the head on cached '
        'features', bert.hidden_dropout_prob, bert.attention_probs_dropout_prob)
    return False
  return True


def _is_encoder_call(context) -> bool:
  return (isinstance(context.module, BertModel)
          and context.method_name == '__call__')


@contextlib.contextmanager
def capturing():
  """Records the outputs of every `BertModel` call made inside (a list)."""
  captured = []

  def grab(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if _is_encoder_call(context):
      captured.append(out)
    return out

  with nn.intercept_methods(grab):
    yield captured


@contextlib.contextmanager
def replaying(outputs: tuple[jax.Array, jax.Array]):
  """Inside, a `BertModel` call returns `outputs` without running."""

  def replay(next_fun, args, kwargs, context):
    if _is_encoder_call(context):
      return outputs
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(replay):
    yield


def pack(outputs: tuple[jax.Array, jax.Array]) -> dict[str, jax.Array]:
  """(sequence [B, P, H], pooled [B, H]) -> the cache's feature dict."""
  sequence, pooled = outputs
  return {SEQUENCE: sequence, POOLED: pooled[:, None]}


def unpack(batch) -> Optional[tuple[jax.Array, jax.Array]]:
  """The cached (sequence, pooled) of `batch`, None if it has none."""
  if SEQUENCE not in batch:
    return None
  return batch[SEQUENCE], batch[POOLED][:, 0]


def cache_encoder_outputs(task, params, config, mesh) -> bool:
  """Adds the encoder's outputs to `task.train_features` and
  `task.eval_features` in place, computed once with `params` (dropout off).

  Batches of `config.eval_batch_size` rows, split over hosts as evaluation
  is; every host gathers and keeps every row (each host's iterator indexes
  the whole feature arrays). Returns False, caching nothing, when the cache
  would exceed `config.cache_frozen_encoder_max_gib` on a host.
  """
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  local_bs = sharding.local_batch_size(config.eval_batch_size)
  global_bs = local_bs * jax.process_count()
  encode = jax.jit(task.encoder_outputs)
  splits = {}
  for which in ('train_features', 'eval_features'):
    features = getattr(task, which)
    n = len(next(iter(features.values())))
    abstract = {k: jax.ShapeDtypeStruct((global_bs,) + v.shape[1:], v.dtype)
                for k, v in features.items()}
    if 'weights' not in abstract:   # eval_batches_from adds it
      abstract['weights'] = jax.ShapeDtypeStruct((global_bs,), np.float32)
    splits[which] = (n, jax.eval_shape(encode, params, abstract))
  size = sum(n * int(np.prod(s.shape[1:])) * s.dtype.itemsize
             for n, shapes in splits.values() for s in shapes.values())
  limit = config.cache_frozen_encoder_max_gib   # configs/common.py
  if size > limit * 2**30:
    logging.warning(
        'frozen encoder: its outputs would take %.1f GiB per host, over '
        'config.cache_frozen_encoder_max_gib=%s; not cached, the encoder '
        'runs forward at each step', size / 2**30, limit)
    return False
  logging.info('frozen encoder: computing its outputs once (%.1f GiB)',
               size / 2**30)
  for which, (n, shapes) in splits.items():
    features = getattr(task, which)
    cached = {k: np.empty((n,) + s.shape[1:], s.dtype)
              for k, s in shapes.items()}
    for start, batch in zip(range(0, n, global_bs), batching.eval_batches_from(
        features, local_bs, jax.process_index(), jax.process_count())):
      out = jax.device_get(multihost_utils.process_allgather(
          encode(params, sharding.make_global_batch(batch, mesh)), tiled=True))
      rows = min(global_bs, n - start)   # the rest of the last batch is padding
      for k, v in out.items():
        cached[k][start:start + rows] = v[:rows]
    features.update(cached)
    logging.info('frozen encoder: cached its outputs for %d %s examples',
                 n, which.split('_')[0])
  return True
