"""Evaluation metrics: classification, entity spans (strict) and SQuAD.

Three families, each with a stated reference it is tested against:

* Classification. Device-side (jnp, jittable) helpers turn one global batch
  into sums and counts (`confusion_matrix_counts`, `accuracy_counts`); the
  host adds those up over the eval set and normalises them with numpy
  (`metrics_from_confusion_matrix`, `classification_metrics`,
  `accuracy_from_counts`). Definitions match scikit-learn with
  `zero_division=0`.
* Multi-label classification (`multilabel_metrics`) on multi-hot
  predictions and gold labels: micro / macro / per-label P/R/F1 as sklearn
  with `zero_division=0` over all labels, example-based F1 as sklearn's
  `average='samples'` with `zero_division=1`, subset accuracy and Hamming
  loss.
* Entity spans (`extract_spans`, `span_f1`) for the IOB2, IOBES (alias BIOES)
  and BMES tagging schemes, in strict mode. Matches `seqeval` with
  `mode='strict'` and an explicit scheme.
* SQuAD v1.1/v2.0 exact match and token F1 (`normalize_answer`,
  `squad_em_f1`, `squad_scores`), as the official v2.0 evaluation script
  scores them (without the no-answer-probability threshold search).

Every host-side result is a plain dict of Python floats/ints/strs (lists for
the confusion matrix) with stable keys, ready for `json.dump(...,
allow_nan=False)`. `format_report` renders either kind of result as a text
table in the layout of sklearn's / seqeval's `classification_report`.

Argument order: the classification helpers take `(preds, labels, ...)`
throughout (device and host alike); `span_f1` takes `(true_seqs, pred_seqs)`
and `squad_scores` takes `(predictions, gold)`. Use keywords when in doubt.
"""

from __future__ import annotations

import collections
import math
import operator
import re
import string
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    'confusion_matrix_counts',
    'accuracy_counts',
    'accuracy_from_counts',
    'confusion_matrix',
    'metrics_from_confusion_matrix',
    'classification_metrics',
    'multilabel_metrics',
    'format_report',
    'SCHEMES',
    'extract_spans',
    'span_f1',
    'normalize_answer',
    'squad_em_f1',
    'squad_scores',
]

Array = jax.Array


def _check_num_classes(num_classes: Any) -> int:
  if isinstance(num_classes, bool):
    raise ValueError(f'num_classes must be a positive int, got {num_classes!r}')
  try:
    n = operator.index(num_classes)
  except TypeError:
    raise ValueError(
        f'num_classes must be a positive int (a static value under jit), got '
        f'{num_classes!r}') from None
  if n < 1:
    raise ValueError(f'num_classes must be a positive int, got {n}')
  return n


# ----------------------------------------------------------------------------
# Device side: sums and counts over one global batch (jnp, jittable).
# ----------------------------------------------------------------------------


def _device_inputs(preds, labels, weights):
  """Validates shapes/dtypes (static, so fine under jit); flattens to [N]."""
  preds = jnp.asarray(preds)
  labels = jnp.asarray(labels)
  if preds.shape != labels.shape:
    raise ValueError(
        f'preds and labels must have the same shape, got {preds.shape} and '
        f'{labels.shape}')
  for name, x in (('preds', preds), ('labels', labels)):
    if not jnp.issubdtype(x.dtype, jnp.integer):
      raise ValueError(f'{name} must be an integer array, got dtype {x.dtype}')
  if weights is None:
    weights = jnp.ones(preds.shape, jnp.float32)
  else:
    weights = jnp.asarray(weights)
    if weights.shape != preds.shape:
      raise ValueError(
          f'weights must have the shape of preds/labels {preds.shape}, got '
          f'{weights.shape}')
    weights = weights.astype(jnp.float32)
  return preds.reshape(-1), labels.reshape(-1), weights.reshape(-1)


def confusion_matrix_counts(preds, labels, weights=None,
                            num_classes=None) -> Array:
  """Weighted confusion-matrix counts for one batch; jittable.

  Args:
    preds: int array [...], predicted class ids.
    labels: int array [...] (same shape), true class ids.
    weights: float array [...] (same shape) or None (all ones). An entry with
      weight 0 contributes nothing, whatever its label or prediction (e.g.
      padding with label -100).
    num_classes: C, a static Python int (mark it static under jit).

  Returns:
    float32 [C, C]: `cm[t, p]` = sum of weights of entries with label t and
    prediction p (rows = true, columns = predicted). Sum these over batches on
    the host in float64 (float32 holds integer counts exactly only up to
    2**24 per cell) and pass the total to `metrics_from_confusion_matrix`.

  Entries whose label or prediction lies outside [0, C) are dropped even when
  their weight is non-zero: there is no way to raise from inside a jitted
  step. The host-side `confusion_matrix` does raise for them. Memory is
  O(N * C) and compute O(N * C^2) for N entries: meant for label sets, not
  vocabularies.

  Works with inputs sharded along any axes (auto or explicit sharding): the
  sum over the sharded entries becomes a cross-device all-reduce, and the
  result is replicated.
  """
  num_classes = _check_num_classes(num_classes)
  preds, labels, weights = _device_inputs(preds, labels, weights)
  # one_hot of an out-of-range id (including negative padding ids) is an
  # all-zero row, so such entries drop out of the sum below.
  true_1h = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  pred_1h = jax.nn.one_hot(preds, num_classes, dtype=jnp.float32)
  # A broadcast-multiply-sum over entries rather than a matmul or a scatter:
  # - a matmul's default precision on TPU (bf16 passes) and recent GPUs (TF32)
  #   would round fractional weights, and a dot contracting the sharded batch
  #   axis is rejected under explicit-sharding meshes without out_sharding;
  # - a scatter-add uses atomics on GPU, so its float sums are not
  #   deterministic.
  # XLA fuses the product into the reduction: the [N, C, C] intermediate is
  # never materialised (the tests check the compiled temp memory on CPU).
  weighted_pred = pred_1h * weights[:, None]
  return jnp.sum(true_1h[:, :, None] * weighted_pred[:, None, :], axis=0)


def accuracy_counts(preds, labels, weights=None) -> tuple[Array, Array]:
  """Weighted correct count and weight total for one batch; jittable.

  Args:
    preds: int array [...], predicted class ids.
    labels: int array [...] (same shape), true class ids.
    weights: float array [...] (same shape) or None (all ones). Weight-0
      entries contribute nothing to either sum. Give padding weight 0: unlike
      `confusion_matrix_counts`, an out-of-range label with non-zero weight
      counts here as a wrong prediction.

  Returns:
    (correct_sum, weight_sum): float32 scalars, `sum(w * (preds == labels))`
    and `sum(w)`. Normalise on the host with `accuracy_from_counts`.
  """
  preds, labels, weights = _device_inputs(preds, labels, weights)
  correct = jnp.sum(jnp.where(preds == labels, weights, 0.0))
  return correct, jnp.sum(weights)


def accuracy_from_counts(correct_sum, weight_sum) -> float:
  """Host-side accuracy from (summed) `accuracy_counts` outputs.

  Args:
    correct_sum: scalar (Python/numpy/jax), summed weight of correct entries.
    weight_sum: scalar, summed weight of all entries; must be > 0.

  Returns:
    correct_sum / weight_sum as a Python float in [0, 1].
  """
  correct = float(np.asarray(correct_sum, np.float64))
  total = float(np.asarray(weight_sum, np.float64))
  if not (math.isfinite(correct) and math.isfinite(total)):
    raise ValueError(f'counts must be finite, got {correct}, {total}')
  if total <= 0:
    raise ValueError(
        f'weight_sum must be > 0 (no examples were counted), got {total}')
  if correct < 0 or correct > total:
    raise ValueError(
        f'correct_sum must lie in [0, weight_sum], got {correct} of {total}')
  return correct / total


# ----------------------------------------------------------------------------
# Host side: classification metrics (numpy).
# ----------------------------------------------------------------------------


def confusion_matrix(preds, labels, num_classes, weights=None) -> np.ndarray:
  """Host-side (numpy) weighted confusion matrix, with input validation.

  Args:
    preds: int array-like [...], predicted class ids.
    labels: int array-like [...] (same shape), true class ids.
    num_classes: C.
    weights: non-negative finite float array-like [...] or None (all ones).
      Weight-0 entries are ignored entirely, so their label/pred need not be
      valid (padding with -100 is fine when its weight is 0).

  Returns:
    float64 [C, C], rows = true, columns = predicted.

  Raises:
    ValueError: shape mismatch, non-integer ids, ids outside [0, C) on an
      entry with non-zero weight, or negative/non-finite weights.
  """
  num_classes = _check_num_classes(num_classes)
  preds = np.asarray(preds)
  labels = np.asarray(labels)
  if preds.shape != labels.shape:
    raise ValueError(
        f'preds and labels must have the same shape, got {preds.shape} and '
        f'{labels.shape}')
  for name, x in (('preds', preds), ('labels', labels)):
    if x.size and not np.issubdtype(x.dtype, np.integer):
      raise ValueError(f'{name} must be an integer array, got dtype {x.dtype}')
  if weights is None:
    weights = np.ones(preds.shape, np.float64)
  else:
    weights = np.asarray(weights, np.float64)
    if weights.shape != preds.shape:
      raise ValueError(
          f'weights must have the shape of preds/labels {preds.shape}, got '
          f'{weights.shape}')
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
      raise ValueError('weights must be finite and non-negative')
  keep = weights.reshape(-1) != 0
  p = preds.reshape(-1)[keep].astype(np.int64)
  t = labels.reshape(-1)[keep].astype(np.int64)
  w = weights.reshape(-1)[keep]
  for name, x in (('preds', p), ('labels', t)):
    bad = (x < 0) | (x >= num_classes)
    if np.any(bad):
      raise ValueError(
          f'{name} has ids outside [0, {num_classes}) on entries with non-zero '
          f'weight, e.g. {x[bad][:5].tolist()}')
  flat = np.bincount(t * num_classes + p, weights=w,
                     minlength=num_classes * num_classes)
  return flat.reshape(num_classes, num_classes)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
  """num / den elementwise, 0 where den == 0 (sklearn's zero_division=0)."""
  out = np.zeros(np.shape(num), np.float64)
  np.divide(num, den, out=out, where=den != 0)
  return out


def metrics_from_confusion_matrix(
    cm, class_names: Optional[Sequence[str]] = None) -> dict:
  """Classification metrics from a (summed) confusion matrix.

  Args:
    cm: [C, C] array-like of non-negative finite (weighted) counts, rows =
      true, columns = predicted (as `confusion_matrix_counts` returns, summed
      over batches). Must not be all zeros.
    class_names: C distinct strings naming the classes in index order, or
      None for '0', '1', ...

  Returns:
    A JSON-serialisable dict with these keys (all floats are Python floats):
      'accuracy': trace / total.
      'micro_f1': pooled F1 over all classes; for single-label classification
        it equals accuracy (as in sklearn).
      'macro_precision', 'macro_recall', 'macro_f1': unweighted means over the
        *present* classes.
      'weighted_precision', 'weighted_recall', 'weighted_f1': means weighted by
        support (support-0 classes get weight 0).
      'support': total weight (float).
      'num_present_classes': int, how many classes the macro means run over.
      'per_class': {name: {'precision', 'recall', 'f1', 'support'}} for all C
        classes in index order; 'support' is the (weighted) true count.
      'confusion_matrix': the input as a list of lists of floats.

  Zero-division and absent classes, as sklearn with `zero_division=0`:
    precision = tp / predicted, 0 when nothing was predicted as the class;
    recall = tp / support, 0 when the class has no support;
    f1 = 2 tp / (support + predicted), 0 when both are 0.
  A class is *present* when its support or its predicted count is non-zero.
  Macro means run over present classes only, as sklearn's default
  `f1_score(y_true, y_pred, average='macro', zero_division=0)` does (its
  labels are those seen in y_true or y_pred): a class that never occurs and
  is never predicted neither helps nor hurts, while one that is predicted
  but never occurs counts with F1 = 0. (sklearn with `labels=range(C)`
  instead averages over all C, counting absent classes as 0.) With weights,
  "seen" means seen with non-zero weight.
  """
  cm = np.asarray(cm, np.float64)
  if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0:
    raise ValueError(f'confusion matrix must be square [C, C], got {cm.shape}')
  if not np.all(np.isfinite(cm)) or np.any(cm < 0):
    raise ValueError('confusion matrix entries must be finite and >= 0')
  total = float(cm.sum())
  if total <= 0:
    raise ValueError('confusion matrix is all zeros: nothing was counted')
  n = cm.shape[0]
  names = _class_names(class_names, n)

  tp = np.diag(cm)
  support = cm.sum(axis=1)
  predicted = cm.sum(axis=0)
  precision = _safe_div(tp, predicted)
  recall = _safe_div(tp, support)
  # 2tp / (support + predicted) is 2PR / (P + R) without the intermediate
  # roundings; it is also how sklearn computes it.
  f1 = _safe_div(2.0 * tp, support + predicted)
  present = (support > 0) | (predicted > 0)

  def weighted(x):
    return float(np.sum(x * support) / total)

  return {
      'accuracy': float(tp.sum() / total),
      'micro_f1': float(tp.sum() / total),
      'macro_precision': float(np.mean(precision[present])),
      'macro_recall': float(np.mean(recall[present])),
      'macro_f1': float(np.mean(f1[present])),
      'weighted_precision': weighted(precision),
      'weighted_recall': weighted(recall),
      'weighted_f1': weighted(f1),
      'support': total,
      'num_present_classes': int(present.sum()),
      'per_class': {
          name: {
              'precision': float(precision[i]),
              'recall': float(recall[i]),
              'f1': float(f1[i]),
              'support': float(support[i]),
          } for i, name in enumerate(names)
      },
      'confusion_matrix': cm.tolist(),
  }


def _class_names(class_names, n: int) -> list[str]:
  if class_names is None:
    return [str(i) for i in range(n)]
  if isinstance(class_names, str):
    raise ValueError('class_names must be a sequence of strings, not a str')
  names = list(class_names)
  if len(names) != n:
    raise ValueError(f'expected {n} class names, got {len(names)}')
  if not all(isinstance(x, str) for x in names):
    raise ValueError('class names must be strings')
  if len(set(names)) != n:
    raise ValueError(f'class names must be distinct, got {names}')
  return names


def classification_metrics(preds, labels, num_classes, weights=None,
                           class_names: Optional[Sequence[str]] = None) -> dict:
  """Classification metrics straight from label/pred arrays (host side).

  `metrics_from_confusion_matrix(confusion_matrix(...), class_names)`; see
  those two for the arguments, validation and the result's keys.
  """
  return metrics_from_confusion_matrix(
      confusion_matrix(preds, labels, num_classes, weights), class_names)


def multilabel_metrics(preds, labels,
                       label_names: Optional[Sequence[str]] = None) -> dict:
  """Multi-label metrics from multi-hot predictions and gold labels (host).

  Args:
    preds: [N, C] predicted label sets, multi-hot (bool or 0/1).
    labels: [N, C] gold label sets, multi-hot (bool or 0/1).
    label_names: C distinct strings in column order, or None for '0', ...

  Returns:
    A JSON-serialisable dict:
      'micro_precision', 'micro_recall', 'micro_f1': from the TP/FP/FN
        pooled over all N x C decisions.
      'macro_precision', 'macro_recall', 'macro_f1': unweighted means of the
        per-label scores over all C labels. A label's scores are 0 where
        their denominator is 0 (sklearn's `zero_division=0`), so a label
        that never occurs and is never predicted counts as 0 (sklearn
        averages multi-hot input over every column).
      'example_f1': mean over examples of 2|P n G| / (|P| + |G|), with 0/0 =
        1: an example with no gold label and no predicted label is right
        (sklearn's `f1_score(average='samples', zero_division=1)`).
      'subset_accuracy': fraction of examples whose predicted set equals the
        gold set exactly.
      'hamming_loss': fraction of the N x C decisions that are wrong.
      'support': N (float).
      'per_label': {name: {'precision', 'recall', 'f1', 'support'}}, support
        = examples carrying the label.
  """
  p = np.asarray(preds)
  g = np.asarray(labels)
  if p.ndim != 2 or p.shape != g.shape or p.shape[0] == 0:
    raise ValueError(f'preds and labels must be non-empty [N, C] multi-hot '
                     f'arrays of one shape, got {p.shape} and {g.shape}')
  for name, x in (('preds', p), ('labels', g)):
    if not np.isin(x, (0, 1)).all():
      raise ValueError(f'{name} must be multi-hot (0/1 or bool)')
  p, g = p.astype(bool), g.astype(bool)
  names = _class_names(label_names, p.shape[1])
  tp = np.sum(p & g, axis=0).astype(np.float64)
  n_pred = p.sum(axis=0).astype(np.float64)
  n_true = g.sum(axis=0).astype(np.float64)
  precision = _safe_div(tp, n_pred)
  recall = _safe_div(tp, n_true)
  f1 = _safe_div(2.0 * tp, n_pred + n_true)
  micro_p, micro_r, micro_f1 = (float(x) for x in (
      _safe_div(tp.sum(), n_pred.sum()), _safe_div(tp.sum(), n_true.sum()),
      _safe_div(2.0 * tp.sum(), n_pred.sum() + n_true.sum())))
  # Per example; 0/0 (nothing predicted, nothing gold) is a perfect answer.
  ex_tp = np.sum(p & g, axis=1)
  ex_den = p.sum(axis=1) + g.sum(axis=1)
  ex_f1 = np.where(ex_den > 0, 2.0 * ex_tp / np.maximum(ex_den, 1), 1.0)
  return {
      'micro_precision': micro_p,
      'micro_recall': micro_r,
      'micro_f1': micro_f1,
      'macro_precision': float(np.mean(precision)),
      'macro_recall': float(np.mean(recall)),
      'macro_f1': float(np.mean(f1)),
      'example_f1': float(np.mean(ex_f1)),
      'subset_accuracy': float(np.mean(np.all(p == g, axis=1))),
      'hamming_loss': float(np.mean(p != g)),
      'support': float(p.shape[0]),
      'per_label': {
          name: {
              'precision': float(precision[i]),
              'recall': float(recall[i]),
              'f1': float(f1[i]),
              'support': float(n_true[i]),
          } for i, name in enumerate(names)
      },
  }


def _fmt_support(x, digits: int) -> str:
  x = float(x)
  return str(int(x)) if x.is_integer() else f'{x:.{digits}f}'


def format_report(metrics: Mapping[str, Any],
                  class_names: Optional[Sequence[str]] = None,
                  digits: int = 2) -> str:
  """Per-class precision/recall/F1/support table.

  Args:
    metrics: a result of `metrics_from_confusion_matrix` /
      `classification_metrics` (rows per class, then accuracy, macro avg,
      weighted avg: sklearn's `classification_report` layout), of
      `multilabel_metrics` (rows per label, then micro, macro avg and the
      example-based 'samples avg' F1) or of `span_f1` (rows per entity type,
      then micro, macro, weighted avg: seqeval's layout).
    class_names: row labels to print instead of the dict's keys, one per row
      in the dict's order; None prints the keys.
    digits: decimals for the scores.

  Returns:
    The table as a string ending in a newline.
  """
  if 'per_class' in metrics:
    rows = metrics['per_class']
    averages = [('accuracy', None, None, metrics['accuracy']),
                ('macro avg', metrics['macro_precision'],
                 metrics['macro_recall'], metrics['macro_f1']),
                ('weighted avg', metrics['weighted_precision'],
                 metrics['weighted_recall'], metrics['weighted_f1'])]
  elif 'per_label' in metrics:
    rows = metrics['per_label']
    averages = [(f'{avg} avg', metrics[f'{avg}_precision'],
                 metrics[f'{avg}_recall'], metrics[f'{avg}_f1'])
                for avg in ('micro', 'macro')]
    averages.append(('samples avg', None, None, metrics['example_f1']))
  elif 'per_type' in metrics:
    rows = metrics['per_type']
    averages = [(f'{avg} avg', metrics[f'{avg}_precision'],
                 metrics[f'{avg}_recall'], metrics[f'{avg}_f1'])
                for avg in ('micro', 'macro', 'weighted')]
  else:
    raise ValueError(
        "metrics must come from classification_metrics / "
        "metrics_from_confusion_matrix ('per_class') or span_f1 ('per_type')")
  keys = list(rows)
  if class_names is None:
    labels = keys
  else:
    labels = _class_names(class_names, len(keys))
  total = _fmt_support(metrics['support'], digits)
  width = max([len('weighted avg'), digits] + [len(x) for x in labels])
  lines = [f'{"":>{width}}  {"precision":>9} {"recall":>9} '
           f'{"f1-score":>9} {"support":>9}', '']
  for label, key in zip(labels, keys):
    r = rows[key]
    lines.append(f'{label:>{width}}  {r["precision"]:>9.{digits}f} '
                 f'{r["recall"]:>9.{digits}f} {r["f1"]:>9.{digits}f} '
                 f'{_fmt_support(r["support"], digits):>9}')
  lines.append('')
  for name, p, r, f in averages:
    if p is None:  # The accuracy row has no precision/recall columns.
      lines.append(f'{name:>{width}}  {"":>9} {"":>9} {f:>9.{digits}f} '
                   f'{total:>9}')
    else:
      lines.append(f'{name:>{width}}  {p:>9.{digits}f} {r:>9.{digits}f} '
                   f'{f:>9.{digits}f} {total:>9}')
  return '\n'.join(lines) + '\n'


# ----------------------------------------------------------------------------
# Entity spans, strict mode.
# ----------------------------------------------------------------------------

# Scheme name (upper-cased) -> (canonical name, allowed chunk prefixes).
# BMES is IOBES with M for I: its tags are mapped onto IOBES and decoded by the
# same code.
SCHEMES = {
    'IOB2': ('IOB2', frozenset('BI')),
    'IOBES': ('IOBES', frozenset('BIES')),
    'BIOES': ('IOBES', frozenset('BIES')),
    'BMES': ('BMES', frozenset('BMES')),
}


def _scheme(scheme: str) -> tuple[str, frozenset]:
  if not isinstance(scheme, str) or scheme.upper() not in SCHEMES:
    raise ValueError(
        f'unknown tagging scheme {scheme!r}; expected one of '
        f'{sorted(SCHEMES)} (case-insensitive)')
  return SCHEMES[scheme.upper()]


def _parse_tags(tags, scheme: str) -> list[tuple[str, str]]:
  """tags (sequence of str) -> [(prefix in 'OBIES', type)], validated.

  BMES 'M' comes back as 'I' so that BMES decodes as IOBES.
  """
  if isinstance(tags, str):
    raise ValueError(
        f'expected a sequence of tags, got the string {tags[:40]!r}')
  name, allowed = _scheme(scheme)
  parsed = []
  cache = {}  # Tags repeat heavily: validate each distinct one once.
  for i, tag in enumerate(tags):
    hit = cache.get(tag) if isinstance(tag, str) else None
    if hit is None:
      hit = _parse_tag(tag, i, name, allowed)
      cache[tag] = hit
    parsed.append(hit)
  return parsed


def _parse_tag(tag, i: int, name: str, allowed: frozenset):
  if not isinstance(tag, str):
    raise ValueError(f'tag at position {i} is not a str: {tag!r}')
  if tag == 'O':
    return ('O', '')
  prefix, dash, kind = tag[:1], tag[1:2], tag[2:]
  if prefix not in allowed or dash != '-' or not kind:
    raise ValueError(
        f"invalid {name} tag {tag!r} at position {i}: expected 'O' or "
        f"'<P>-<TYPE>' with P in {''.join(sorted(allowed))} and a non-empty "
        f"TYPE")
  if prefix == 'M':
    prefix = 'I'
  return (prefix, kind)


def extract_spans(tags: Sequence[str],
                  scheme: str) -> list[tuple[str, int, int]]:
  """Entity spans of one tag sequence, strict mode.

  Args:
    tags: sequence of str tags, each 'O' or '<P>-<TYPE>' (TYPE = everything
      after the first '-', non-empty). P must belong to the scheme.
    scheme: 'IOB2', 'IOBES' (alias 'BIOES') or 'BMES'; case-insensitive.

  Returns:
    [(type, start, end)] in order of start, `end` exclusive.

  Strict mode keeps a span only when its tags are well formed in the scheme,
  exactly as `seqeval` does with `mode='strict'` and `scheme=IOB2/IOBES`:
    IOB2: B-X followed by the longest run of I-X. An I-X not preceded by
      B-X/I-X starts nothing and is ignored.
    IOBES: S-X alone, or B-X, any number of I-X, then E-X. A B-X whose run of
      I-X is not closed by E-X yields nothing (decoding resumes at the tag
      that broke the run); stray I-X / E-X are ignored.
    BMES: as IOBES with M-X in place of I-X.
  seqeval's default (non-strict, conlleval-like) mode instead repairs
  ill-formed sequences, e.g. it reads a leading I-X as the start of an X
  chunk and B-X I-Y as two chunks. Example where they disagree (IOB2):
    true = [['B-PER', 'I-PER']], pred = [['I-PER', 'I-PER']]
    seqeval f1_score(true, pred)                               -> 1.0
    seqeval f1_score(true, pred, mode='strict', scheme=IOB2)   -> 0.0
    span_f1(true, pred, 'IOB2')['micro_f1']                    -> 0.0
  Beware that seqeval silently falls back to the default mode when given
  mode='strict' without a scheme.

  Raises:
    ValueError: unknown scheme, or a tag that is not valid in it (e.g. 'E-X'
      in IOB2, 'M-X' in IOBES, 'B', 'O-X', 'b-X').
  """
  parsed = _parse_tags(tags, scheme)
  iob2 = _scheme(scheme)[0] == 'IOB2'
  spans = []
  n = len(parsed)
  i = 0
  while i < n:
    prefix, kind = parsed[i]
    if prefix == 'S':
      spans.append((kind, i, i + 1))
      i += 1
    elif prefix == 'B':
      j = i + 1
      while j < n and parsed[j] == ('I', kind):
        j += 1
      if iob2:
        spans.append((kind, i, j))
        i = j
      elif j < n and parsed[j] == ('E', kind):
        spans.append((kind, i, j + 1))
        i = j + 1
      else:
        i = j  # Unclosed chunk: dropped; parsed[j] may start the next one.
    else:
      i += 1
  return spans


def _prf(tp, n_pred, n_true):
  """(precision, recall, f1) with zero_division=0, as Python floats."""
  p = tp / n_pred if n_pred else 0.0
  r = tp / n_true if n_true else 0.0
  f = 2.0 * tp / (n_pred + n_true) if n_pred + n_true else 0.0
  return p, r, f


def span_f1(true_seqs: Sequence[Sequence[str]],
            pred_seqs: Sequence[Sequence[str]], scheme: str) -> dict:
  """Entity-level (strict) precision/recall/F1 over a corpus.

  Args:
    true_seqs: list of gold tag sequences (one per sentence).
    pred_seqs: list of predicted tag sequences, same count and lengths.
    scheme: 'IOB2', 'IOBES' (alias 'BIOES') or 'BMES'. Spans are decoded with
      `extract_spans` (strict mode; see there for how it differs from
      seqeval's default mode). A predicted span is correct when its type,
      start and end all equal a gold span's in the same sentence.

  Returns:
    A JSON-serialisable dict, equal to seqeval's strict-mode
    `classification_report(..., mode='strict', scheme=..., zero_division=0)`:
      'micro_precision', 'micro_recall', 'micro_f1': pooled over all types.
      'macro_precision', 'macro_recall', 'macro_f1': unweighted means over
        the types that occur in gold or predicted spans (0.0 when there are
        none at all, where seqeval gives NaN).
      'weighted_precision', 'weighted_recall', 'weighted_f1': means weighted
        by gold support (0.0 when there are no gold spans).
      'support': int, number of gold spans (= 'num_true').
      'num_true', 'num_pred', 'num_correct': ints.
      'per_type': {type: {'precision', 'recall', 'f1', 'support'}}, types
        sorted; 'support' is the int gold count.
    Zero divisions give 0.0, as sklearn/seqeval with zero_division=0.

  Raises:
    ValueError: different numbers of sentences or different sentence lengths
      (naming the first offending sentence), a str where a sequence of tags
      was expected, or an invalid scheme/tag.
  """
  for name, seqs in (('true_seqs', true_seqs), ('pred_seqs', pred_seqs)):
    if isinstance(seqs, str):
      raise ValueError(f'{name} must be a list of tag sequences, not a str')
  if len(true_seqs) != len(pred_seqs):
    raise ValueError(
        f'true_seqs has {len(true_seqs)} sentences but pred_seqs has '
        f'{len(pred_seqs)}')
  _scheme(scheme)
  n_true = collections.Counter()
  n_pred = collections.Counter()
  n_correct = collections.Counter()
  for k, (t, p) in enumerate(zip(true_seqs, pred_seqs)):
    for name, seq in (('true_seqs', t), ('pred_seqs', p)):
      if isinstance(seq, str):
        raise ValueError(
            f'{name}[{k}] is a str; expected a sequence of tags (did you pass '
            f'a flat list of tags instead of a list of sentences?)')
    if len(t) != len(p):
      raise ValueError(
          f'sentence {k}: {len(t)} gold tags but {len(p)} predicted tags')
    true_spans = set(extract_spans(t, scheme))
    pred_spans = set(extract_spans(p, scheme))
    n_true.update(kind for kind, _, _ in true_spans)
    n_pred.update(kind for kind, _, _ in pred_spans)
    n_correct.update(kind for kind, _, _ in true_spans & pred_spans)

  types = sorted(set(n_true) | set(n_pred))
  per_type = {}
  for kind in types:
    p, r, f = _prf(n_correct[kind], n_pred[kind], n_true[kind])
    per_type[kind] = {'precision': p, 'recall': r, 'f1': f,
                      'support': n_true[kind]}
  tot_true, tot_pred = sum(n_true.values()), sum(n_pred.values())
  tot_correct = sum(n_correct.values())
  micro = _prf(tot_correct, tot_pred, tot_true)

  def mean(key):
    if not types:
      return 0.0
    return float(np.mean([per_type[x][key] for x in types]))

  def weighted(key):
    if not tot_true:
      return 0.0
    return float(np.average([per_type[x][key] for x in types],
                            weights=[n_true[x] for x in types]))

  return {
      'micro_precision': micro[0],
      'micro_recall': micro[1],
      'micro_f1': micro[2],
      'macro_precision': mean('precision'),
      'macro_recall': mean('recall'),
      'macro_f1': mean('f1'),
      'weighted_precision': weighted('precision'),
      'weighted_recall': weighted('recall'),
      'weighted_f1': weighted('f1'),
      'support': tot_true,
      'num_true': tot_true,
      'num_pred': tot_pred,
      'num_correct': tot_correct,
      'per_type': per_type,
  }


# ----------------------------------------------------------------------------
# SQuAD exact match / F1.
# ----------------------------------------------------------------------------

_PUNCTUATION = frozenset(string.punctuation)  # ASCII only, as officially.
# Whole-word articles; \b is Unicode-aware for str patterns.
_ARTICLES = re.compile(r'\b(?:a|an|the)\b')


def normalize_answer(text: str) -> str:
  """SQuAD answer normalisation, in the official script's order.

  Lower-case; delete ASCII punctuation (`string.punctuation`, deleted, not
  replaced by a space: "don't" -> "dont", "the-end" -> "theend"); replace
  the whole words a/an/the by a space; collapse runs of whitespace to one
  space and strip. Because punctuation goes first, "a." is an article while
  "the-end" is not.

  Args:
    text: str.

  Returns:
    The normalised str.
  """
  if not isinstance(text, str):
    raise ValueError(f'answers must be str, got {type(text).__name__}')
  text = text.lower()
  text = ''.join(ch for ch in text if ch not in _PUNCTUATION)
  text = _ARTICLES.sub(' ', text)
  return ' '.join(text.split())


def _token_f1(gold_tokens: list[str], pred_tokens: list[str]) -> float:
  if not gold_tokens or not pred_tokens:
    # No-answer on either side: right only if both are no-answer.
    return float(gold_tokens == pred_tokens)
  # Bag-of-tokens overlap: a repeated token matches at most as many times as
  # it occurs on the side where it is rarer.
  common = collections.Counter(gold_tokens) & collections.Counter(pred_tokens)
  same = sum(common.values())
  if same == 0:
    return 0.0
  precision = same / len(pred_tokens)
  recall = same / len(gold_tokens)
  # Same expression as the official script, so results agree bit for bit.
  return (2 * precision * recall) / (precision + recall)


def squad_em_f1(prediction: str,
                gold_answers: Sequence[str]) -> tuple[float, float]:
  """Exact match and token F1 of one prediction, each in [0, 1].

  Args:
    prediction: the predicted answer text ('' to abstain).
    gold_answers: list of gold answer texts. Gold answers that normalise to ''
      are dropped; when none remain (in particular for the empty list of an
      unanswerable SQuAD v2.0 question) the only gold answer is '', so a
      prediction scores 1 exactly when it normalises to '' (the official
      script's rule, so a prediction such as 'the' or '.' also counts as
      abstaining).

  Returns:
    (exact_match, f1): maxima over the gold answers.
  """
  if isinstance(gold_answers, str):
    raise ValueError(
        f'gold answers must be a list of str, got the str {gold_answers!r}')
  pred_norm = normalize_answer(prediction)
  golds = [normalize_answer(g) for g in gold_answers]
  golds = [g for g in golds if g] or ['']
  pred_tokens = pred_norm.split()
  em = max(float(g == pred_norm) for g in golds)
  f1 = max(_token_f1(g.split(), pred_tokens) for g in golds)
  return em, f1


def squad_scores(predictions: Mapping[str, str],
                 gold: Mapping[str, Sequence[str]]) -> dict:
  """SQuAD v1.1/v2.0 scores in percent, as the official v2.0 script.

  Args:
    predictions: {question id: predicted answer text ('' to abstain)}.
    gold: {question id: list of gold answer texts; [] if unanswerable}.
      Must have exactly the ids of `predictions` (the official scripts skip or
      crash on missing ones; here both a missing and an unexpected id are
      errors, since either means the wrong file or split).

  Returns:
    A JSON-serialisable dict:
      'exact_match', 'f1': means over all questions of `squad_em_f1`, x 100.
      'total': int, number of questions.
      'has_ans_exact', 'has_ans_f1', 'has_ans_total': the same over questions
        whose gold list is non-empty (the official HasAns_* keys).
      'no_ans_exact', 'no_ans_f1', 'no_ans_total': over questions with an
        empty gold list (NoAns_*).
    A subset with no questions (e.g. no_ans on SQuAD v1.1) has total 0 and
    None (JSON null) for its exact/f1, where the official script omits them.
  """
  if not isinstance(predictions, Mapping) or not isinstance(gold, Mapping):
    raise ValueError('predictions and gold must be dicts keyed by question id')
  if not gold:
    raise ValueError('gold is empty: there is nothing to score')
  missing = [k for k in gold if k not in predictions]
  extra = [k for k in predictions if k not in gold]
  if missing or extra:
    raise ValueError(
        f'prediction ids do not match gold ids: {len(missing)} missing '
        f'(e.g. {missing[:3]}), {len(extra)} unexpected (e.g. {extra[:3]})')
  sums = {'all': [0.0, 0.0, 0], 'has_ans': [0.0, 0.0, 0],
          'no_ans': [0.0, 0.0, 0]}
  for qid, answers in gold.items():
    if isinstance(answers, str) or not isinstance(answers, Sequence):
      raise ValueError(
          f'gold[{qid!r}] must be a list of answer strings, got {answers!r}')
    if not isinstance(predictions[qid], str):
      raise ValueError(f'predictions[{qid!r}] must be a str')
    em, f1 = squad_em_f1(predictions[qid], answers)
    # As officially, answerable = the raw gold list is non-empty.
    for group in ('all', 'has_ans' if len(answers) else 'no_ans'):
      sums[group][0] += em
      sums[group][1] += f1
      sums[group][2] += 1

  def pct(x, n):
    return 100.0 * x / n if n else None

  out = {}
  for group, prefix in (('all', ''), ('has_ans', 'has_ans_'),
                        ('no_ans', 'no_ans_')):
    em, f1, n = sums[group]
    out[prefix + ('exact_match' if group == 'all' else 'exact')] = pct(em, n)
    out[prefix + 'f1'] = pct(f1, n)
    out[prefix + 'total'] = n
  return out


# ----------------------------------------------------------------------------
# Word segmentation (untyped B/M/E/S, B/I/E/S or B/I tags) and plain per-token
# labels (POS).
# ----------------------------------------------------------------------------

# Untyped segmentation schemes: tag letters, and which letters start / end a
# word. BMES and BIES differ only in the letter of a word's middle; in BIO
# ('B' starts a word, 'I' continues it) a word ends wherever the next starts.
SEGMENTATION_SCHEMES = {
    'BMES': ('BMES', frozenset('BS'), frozenset('ES')),
    'BIES': ('BIES', frozenset('BS'), frozenset('ES')),
    'BIO': ('BI', frozenset('B'), frozenset()),
}


def _seg_scheme(scheme: str):
  if not isinstance(scheme, str) or scheme.upper() not in SEGMENTATION_SCHEMES:
    raise ValueError(f'unknown segmentation scheme {scheme!r}; expected one '
                     f'of {sorted(SEGMENTATION_SCHEMES)}')
  return SEGMENTATION_SCHEMES[scheme.upper()]


def segment_words(tags: Sequence[str], scheme: str) -> list[tuple[int, int]]:
  """Word spans [(start, end)] (end exclusive) of one untyped tag sequence.

  Every position belongs to exactly one word, whatever the tags: a word
  starts at position 0, at a start tag (B or S) and after an end tag (E or
  S). So an ill-formed predicted sequence still reads as a segmentation
  (e.g. BMES 'M M' is one two-character word, 'E E' two one-character
  words), as the SIGHAN scorer reads any segmented output.

  Args:
    tags: bare tags, each a letter of the scheme ('B', 'M', 'E', 'S' for
      'BMES'; 'B', 'I', 'E', 'S' for 'BIES'; 'B', 'I' for 'BIO').
    scheme: 'BMES', 'BIES' or 'BIO' (case-insensitive).

  Raises:
    ValueError: unknown scheme or a tag that is not one of its letters.
  """
  if isinstance(tags, str):
    raise ValueError(f'expected a sequence of tags, got the string '
                     f'{tags[:40]!r}')
  letters, starts, ends = _seg_scheme(scheme)
  spans, begin = [], 0
  for i, tag in enumerate(tags):
    if not isinstance(tag, str) or len(tag) != 1 or tag not in letters:
      raise ValueError(f'invalid {scheme.upper()} segmentation tag {tag!r} at '
                       f'position {i}: expected one of {", ".join(letters)}')
    if i > begin and tag in starts:
      spans.append((begin, i))
      begin = i
    if tag in ends:
      spans.append((begin, i + 1))
      begin = i + 1
  if begin < len(tags):
    spans.append((begin, len(tags)))
  return spans


def segmentation_scores(true_seqs: Sequence[Sequence[str]],
                        pred_seqs: Sequence[Sequence[str]], scheme: str,
                        sentences: Sequence[Sequence[str]],
                        train_words) -> dict:
  """Word segmentation scores as the SIGHAN bakeoff scorer gives them.

  A predicted word is correct when its character span equals a gold word's
  span in the same sentence. Precision = correct / predicted words, recall =
  correct / gold words, F1 their harmonic mean. A gold word is
  in-vocabulary (IV) when its text occurs among the training words, else
  out-of-vocabulary (OOV); `iv_recall` / `oov_recall` are the recalls over
  those gold words, and `oov_rate` = OOV gold words / gold words (counted
  per occurrence, as the bakeoff's `score` script does).

  Args:
    true_seqs, pred_seqs: per sentence, the gold and predicted tag
      sequences (see `segment_words`); same counts and lengths.
    scheme: 'BMES', 'BIES' or 'BIO'.
    sentences: per sentence, its characters (one string per tag); a word's
      text is the concatenation of its characters.
    train_words: the training word vocabulary (a set of strings).

  Returns:
    {'precision', 'recall', 'f1', 'iv_recall', 'oov_recall', 'oov_rate'}
    (floats, 0.0 where a denominator is 0) and the counts 'num_true',
    'num_pred', 'num_correct', 'num_oov', 'num_oov_correct'.
  """
  if not (len(true_seqs) == len(pred_seqs) == len(sentences)):
    raise ValueError(f'{len(true_seqs)} gold, {len(pred_seqs)} predicted tag '
                     f'sequences and {len(sentences)} sentences')
  vocab = frozenset(train_words)
  n_true = n_pred = n_correct = n_oov = n_oov_correct = 0
  for k, (t, p, chars) in enumerate(zip(true_seqs, pred_seqs, sentences)):
    if not len(t) == len(p) == len(chars):
      raise ValueError(f'sentence {k}: {len(chars)} characters, {len(t)} gold '
                       f'tags, {len(p)} predicted tags')
    gold = segment_words(t, scheme)
    pred = set(segment_words(p, scheme))
    n_true += len(gold)
    n_pred += len(pred)
    for span in gold:
      hit = span in pred
      n_correct += hit
      if ''.join(chars[span[0]:span[1]]) not in vocab:
        n_oov += 1
        n_oov_correct += hit
  p, r, f = _prf(n_correct, n_pred, n_true)
  n_iv = n_true - n_oov
  return {
      'precision': p, 'recall': r, 'f1': f,
      'iv_recall': (n_correct - n_oov_correct) / n_iv if n_iv else 0.0,
      'oov_recall': n_oov_correct / n_oov if n_oov else 0.0,
      'oov_rate': n_oov / n_true if n_true else 0.0,
      'num_true': n_true, 'num_pred': n_pred, 'num_correct': n_correct,
      'num_oov': n_oov, 'num_oov_correct': n_oov_correct,
  }


def tag_classification_metrics(true_seqs: Sequence[Sequence[str]],
                               pred_seqs: Sequence[Sequence[str]],
                               tag_names: Sequence[str]) -> dict:
  """Per-token metrics of a plain label set (POS): every word is a sample.

  `classification_metrics` over the flattened words (sklearn's definitions,
  zero_division=0): 'accuracy' is token accuracy, 'per_class' has each
  tag's precision / recall / F1 / support, 'macro_f1' averages the tags
  present in gold or predictions.

  Raises:
    ValueError: different sentence counts or lengths, or a tag outside
      `tag_names`.
  """
  if len(true_seqs) != len(pred_seqs):
    raise ValueError(f'true_seqs has {len(true_seqs)} sentences but pred_seqs '
                     f'has {len(pred_seqs)}')
  index = {t: i for i, t in enumerate(tag_names)}
  flat_true, flat_pred = [], []
  for k, (t, p) in enumerate(zip(true_seqs, pred_seqs)):
    if len(t) != len(p):
      raise ValueError(
          f'sentence {k}: {len(t)} gold tags but {len(p)} predicted tags')
    for tag in list(t) + list(p):
      if tag not in index:
        raise ValueError(f'sentence {k}: tag {tag!r} is not in the tag set '
                         f'{list(tag_names)}')
    flat_true.extend(index[x] for x in t)
    flat_pred.extend(index[x] for x in p)
  return classification_metrics(np.asarray(flat_pred), np.asarray(flat_true),
                                len(tag_names), class_names=list(tag_names))
