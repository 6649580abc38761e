"""What the trainer needs from a task, so the trainer has no per-task branches.

Metrics crossing the jit boundary are `{name: (sum, count)}` pairs of scalars
reduced over the global batch; the host adds them over steps and divides
(`finalize_metrics`). Scalars that are not averages (learning rate) use
count 1.
"""

from __future__ import annotations

import abc
from typing import Any, Iterable, Iterator, Mapping, Optional, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import model as model_lib
from bert_jax.model import BertConfig
import losses

Batch = Mapping[str, Any]
MetricSums = dict[str, tuple[jax.Array, jax.Array]]


class StatefulIterator(Protocol):
  """A host-local batch iterator whose position can be checkpointed."""

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]: ...
  def __next__(self) -> dict[str, np.ndarray]: ...
  def get_state(self) -> dict[str, Any]: ...
  def set_state(self, state: dict[str, Any]) -> None: ...


class Task(abc.ABC):
  """A training objective: model, data, loss, metrics, predictions.

  Attributes:
    config: the run's config.
    bert_config: the encoder's `BertConfig`, set by the task's `__init__`
      (with `config.model.init_from`, the pretrained directory's
      architecture); None for a task without one. The trainer checks
      `config.data.max_seq_length` against its `max_position_embeddings`
      before anything compiles.
  """

  bert_config: Optional[BertConfig] = None

  def __init__(self, config):
    self.config = config

  # ---------------------------------------------------------------- model
  @abc.abstractmethod
  def init_params(self, rng: jax.Array, batch: Batch) -> Any:
    """Fresh parameters for `batch`'s shapes (called under jax.eval_shape/jit)."""

  def pretrained_params(self, params: Any) -> Any:
    """Pretrained weights where config asks; host-side; None if none.

    `params` has the fresh parameters' structure, its leaves arrays or
    `jax.ShapeDtypeStruct`s (the trainer passes the abstract ones, so that
    it draws at random only what is not loaded). Returns the same structure
    with numpy arrays (of the leaf's dtype) where a weight is loaded and the
    leaf itself where not.
    """
    del params
    return None

  def init_loss_state(self) -> Any:
    return {}

  # ---------------------------------------------------------------- steps
  @abc.abstractmethod
  def train_loss(self, params, batch: Batch, rng: jax.Array, loss_state
                 ) -> tuple[jax.Array, tuple[MetricSums, Any]]:
    """-> (scalar loss, (metric sums, new loss state)); differentiated."""

  @abc.abstractmethod
  def eval_step(self, params, batch: Batch) -> tuple[MetricSums, dict[str, jax.Array]]:
    """-> (metric sums, per-example outputs gathered to the host)."""

  def summarize_eval(self, metrics: dict[str, float],
                     outputs: Optional[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Host: final eval metrics from averaged sums and gathered outputs."""
    return metrics

  def prediction_rows(self, outputs: dict[str, np.ndarray]) -> list[dict]:
    """Host: one JSON-able row per eval example, in eval-set order, from the
    gathered `eval_step` outputs (what `bert_jax.predict` writes)."""
    raise NotImplementedError(f'{type(self).__name__} does not predict')

  # ---------------------------------------------------------------- data
  @abc.abstractmethod
  def train_iterator(self, local_batch_size: int, shard_index: int,
                     num_shards: int, seed: int) -> StatefulIterator:
    ...

  def eval_batches(self, local_batch_size: int, shard_index: int,
                   num_shards: int) -> Iterable[dict[str, np.ndarray]]:
    return ()

  def export(self, workdir, params) -> None:
    """Host, process 0, end of training: write artefacts others reuse.

    `params` are host (NumPy) arrays, gathered from every process."""

  def num_train_examples(self) -> Optional[int]:
    """Size of an epoch, for `config.num_epochs`; None if unbounded."""
    features = getattr(self, 'train_features', None)
    return None if features is None else len(next(iter(features.values())))

  def num_eval_examples(self) -> Optional[int]:
    """Rows of the eval set (for a progress bar's total); None if unknown."""
    features = getattr(self, 'eval_features', None)
    return None if features is None else len(next(iter(features.values())))

  def flops_per_example(self) -> Optional[float]:
    """Training FLOPs per example (forward + backward), if known."""
    return None


def model_fields(config) -> dict[str, Any]:
  """The BertConfig fields `config.model` sets, checked (the defaults are
  BertConfig's).

  `config.model` is a free-form section: `init_from` ('' = fresh, 'minilm'
  or a HF directory) and the BertConfig fields a preset or the command line
  sets. An unknown key or a value of the wrong type raises ValueError naming
  `config.model.<key>` (`model.checked_fields`). `init_from` is left out.
  """
  section = config.model.to_dict()
  init_from = section.get('init_from')
  if init_from is not None and not isinstance(init_from, str):
    raise ValueError('config.model.init_from: wrong type: expected str (a '
                     f'short name or a directory), got {init_from!r}')
  return model_lib.checked_fields(section, 'config.model', also=('init_from',))


def check_vocab_size(fields: dict[str, Any], vocab_size: int, vocab) -> None:
  """A fresh model takes its vocabulary size from its vocab (`vocab_size`
  entries, read from `vocab`): a `config.model.vocab_size` that differs is a
  ValueError naming both, never silently replaced."""
  if fields.get('vocab_size', vocab_size) != vocab_size:
    raise ValueError(
        f"config.model.vocab_size={fields['vocab_size']}, but the vocab "
        f'({vocab}) has {vocab_size} entries: a fresh model takes its '
        'vocabulary size from the vocab; leave the key out (or set it to '
        'None)')


def nll_pair(logits: jax.Array, labels: jax.Array, weights: jax.Array
             ) -> tuple[jax.Array, jax.Array]:
  """(sum, count) of the softmax negative log-likelihood: logits [..., C],
  int labels [...], weights [...] (0 masks; a masked label may be anything).
  The eval `ce_loss` of every task, through `losses`' own cross-entropy."""
  w = weights.astype(jnp.float32)
  return losses.get('ce')(logits, labels, weights=w, reduction='sum'), jnp.sum(w)


def mean_pair(values: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
  w = weights.astype(jnp.float32)
  return jnp.sum(values.astype(jnp.float32) * w), jnp.sum(w)


def add_metrics(total: Optional[dict], new: Mapping[str, Any]) -> dict:
  """Host: adds {name: (sum, count)} dicts (numpy)."""
  new = {k: (np.asarray(s, np.float64), np.asarray(c, np.float64))
         for k, (s, c) in jax.device_get(dict(new)).items()}
  if total is None:
    return new
  return {k: (total[k][0] + new[k][0], total[k][1] + new[k][1]) for k in new}


def finalize_metrics(total: Mapping[str, tuple[Any, Any]]) -> dict[str, float]:
  return {k: float(s / c) if c > 0 else float('nan')
          for k, (s, c) in total.items()}
