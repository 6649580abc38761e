"""Token tagging (NER, chunking, Chinese character NER) with any loss.

Data: a tagging dataset (`msra_ner`, `conll_sample`, or a CoNLL file), one tag
per word. `config.data.scheme` is 'IOB2', 'BIOES' (alias 'IOBES') or 'BMES',
or 'auto' to infer it from the training tag set: BMES if any tag has an M-
prefix, BIOES if any has E- or S-, else IOB2. Every tag must be valid in the
scheme. `config.data.max_train_examples` / `max_eval_examples` (0 = all)
keep a seeded sample of N sentences of a split, for quick runs.

Features: the words go through `encode_pretokenized_batch`, so a word may
become several sub-tokens. The tag of a word is the label of its FIRST
sub-token; continuation pieces, [CLS], [SEP] and padding get label weight 0,
so they count in neither the loss nor the metrics. A sentence longer than
`config.data.max_seq_length` sub-tokens (with [CLS]/[SEP]) is cut at the
end; the numbers of truncated sentences and of words cut off are logged and
reported with the eval results. A word cut off (or a word that normalises
to no sub-token at all, e.g. only control characters) is predicted 'O' at
word level, so its entities count as misses in the span F1: the metrics are
always over the full gold sentences, never over the truncated view. A
sentence that gives no sub-token at all is an error.

Loss: any loss of `losses` from `config.loss` on logits [B, T, C] with
labels [B, T] and weights [B, T] (label weight x row weight); class counts
for count-based losses are tag counts over the training words.

Eval: word-level tags are rebuilt from the first sub-tokens, then scored
with strict entity-level span F1 (`metrics.span_f1`; micro P/R/F1 as
`span_precision/span_recall/span_f1`, `span_macro_f1`, `span_weighted_f1`,
per-type `f1/<TYPE>`), plus `token_accuracy` over all words. `accuracy` and
`ce_loss` are the device-side sub-token values (first sub-tokens of kept
words only). Predictions rows are `{guid, words, gold, pred}`. With
`config.eval_logit_adjustment_tau > 0` each token's logits are also
post-hoc adjusted by the training tag prior (Menon et al. 2021) and the same
metrics are reported as `adjusted_*`, the rows gaining `adjusted_pred`.

Sampling: with `config.data.sampling_q`, sentences are q-power sampled by
their rarest entity type (`sampling.sentence_classes`).
"""

from __future__ import annotations

from typing import Optional, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import metrics as metrics_lib
from bert_jax import tokenization
from bert_jax.data import datasets
from bert_jax.data import sampling
from bert_jax.heads import BertForTokenClassification
from bert_jax.tasks import base
from bert_jax.tasks import finetune

import losses

# config.data.scheme value (upper-cased) -> the name metrics.span_f1 takes.
SCHEMES = {'IOB2': 'IOB2', 'BIOES': 'BIOES', 'IOBES': 'BIOES', 'BMES': 'BMES'}


def infer_scheme(tags: Sequence[str]) -> str:
  """'BMES' if any tag is M-X, 'BIOES' if any is E-X or S-X, else 'IOB2'."""
  prefixes = {t.split('-', 1)[0] for t in tags if t != 'O'}
  if 'M' in prefixes:
    return 'BMES'
  if prefixes & {'E', 'S'}:
    return 'BIOES'
  return 'IOB2'


def resolve_scheme(scheme: str, tags: Sequence[str], where: str) -> str:
  """Validates config.data.scheme against the tag set `tags`.

  Returns the scheme name for `metrics.span_f1`. Raises ValueError for an
  unknown scheme or a tag that is not valid in it.
  """
  if not isinstance(scheme, str) or (scheme.lower() != 'auto'
                                     and scheme.upper() not in SCHEMES):
    raise ValueError(f'config.data.scheme={scheme!r}; known: auto, '
                     f'{", ".join(sorted(SCHEMES))}')
  name = (infer_scheme(tags) if scheme.lower() == 'auto'
          else SCHEMES[scheme.upper()])
  try:
    # Parses every tag of the set; extract_spans raises on an invalid one.
    metrics_lib.extract_spans(list(tags), name)
  except ValueError as e:
    raise ValueError(f'{where}: the tag set {list(tags)} is not {name} '
                     f'(config.data.scheme={scheme!r}): {e}') from e
  return name


def encode_tagging(tokenizer: tokenization.BertTokenizer, examples,
                   tag_index: dict[str, int], max_seq_length: int,
                   where: str = '<data>'):
  """Sub-token features of tagging examples, label on each word's first piece.

  Args:
    tokenizer: the WordPiece tokenizer.
    examples: `TaggingExample`s with tags (N of them).
    tag_index: tag -> class id; every tag must be in it.
    max_seq_length: T, [CLS] and [SEP] included.
    where: dataset name for error messages.

  Returns:
    (features, first_positions, stats):
      features: input_ids, token_type_ids, attention_mask, labels int32
        [N, T]; label_weights float32 [N, T] (1 on the first sub-token of each
        word that was kept, else 0); weights float32 [N] (row weights, 1);
        example_index int32 [N] (row -> example, to put eval outputs back in
        order).
      first_positions: per example an int32 [num_words] array: the position
        of each word's first sub-token, -1 for a word cut off by truncation
        or one with no sub-token.
      stats: {'truncated_sentences', 'truncated_words', 'words_without_tokens'}.

  Raises:
    ValueError: an unlabelled example, a tag outside `tag_index`, or a
      sentence without words or without any sub-token (naming the guid).
  """
  t = max_seq_length
  if t < 3:
    raise ValueError(f'config.data.max_seq_length={t} leaves no room for a '
                     'word besides [CLS] and [SEP]')
  for e in examples:
    if not e.words:
      raise ValueError(f'{where}: example {e.guid!r} is an empty sentence')
    if e.tags is None:
      raise ValueError(f'{where}: example {e.guid!r} has no tags; tagging '
                       'needs labelled data')
    for tag in e.tags:
      if tag not in tag_index:
        raise ValueError(
            f'{where}: example {e.guid!r} has tag {tag!r}, which is not in the '
            f'training tag set {sorted(tag_index)}')
  # No truncation here: the full encoding tells which words the cut removes.
  encs = tokenizer.encode_pretokenized_batch([list(e.words) for e in examples],
                                             truncation=None)
  n = len(examples)
  input_ids = np.zeros((n, t), np.int32)
  attention_mask = np.zeros((n, t), np.int32)
  labels = np.zeros((n, t), np.int32)
  label_weights = np.zeros((n, t), np.float32)
  first_positions = []
  stats = dict(truncated_sentences=0, truncated_words=0, words_without_tokens=0)
  for i, (e, enc) in enumerate(zip(examples, encs)):
    # Word index of each body token (the encoding is [CLS] body [SEP]).
    word = np.asarray(enc.word_ids[1:-1], np.int64)
    if word.size == 0:
      raise ValueError(f'{where}: example {e.guid!r} gives no sub-tokens (all '
                       f'{len(e.words)} word(s) normalise to nothing): an '
                       'empty sentence')
    # Pieces of one word are contiguous, so a first piece is where the word
    # index changes.
    is_first = np.ones(word.size, bool)
    is_first[1:] = word[1:] != word[:-1]
    body = min(word.size, t - 2)
    first = np.full(len(e.words), -1, np.int32)
    starts = np.flatnonzero(is_first)
    kept = starts[starts < body]
    first[word[kept]] = kept + 1          # +1 for [CLS]
    cut = len(starts) - len(kept)
    stats['truncated_words'] += cut
    stats['truncated_sentences'] += int(word.size > body)
    stats['words_without_tokens'] += len(e.words) - len(starts)
    ids = enc.ids[:body + 1] + [tokenizer.sep_id]
    input_ids[i, :len(ids)] = ids
    attention_mask[i, :len(ids)] = 1
    tags = np.asarray([tag_index[x] for x in e.tags], np.int32)
    labels[i, kept + 1] = tags[word[kept]]
    label_weights[i, kept + 1] = 1.0
    first_positions.append(first)
  features = dict(
      input_ids=input_ids, token_type_ids=np.zeros((n, t), np.int32),
      attention_mask=attention_mask, labels=labels,
      label_weights=label_weights, weights=np.ones(n, np.float32),
      example_index=np.arange(n, dtype=np.int32))
  return features, first_positions, stats


def word_tags(first_positions: np.ndarray, token_preds: np.ndarray,
              tag_names: Sequence[str]) -> list[str]:
  """Word-level tags from sub-token predictions.

  first_positions: int [num_words] (see `encode_tagging`); token_preds: int
  [T] class ids. A word without a kept first sub-token gets 'O'.
  """
  names = np.asarray(list(tag_names) + ['O'], dtype=object)
  ids = np.where(first_positions >= 0,
                 token_preds[np.maximum(first_positions, 0)], len(tag_names))
  return names[ids].tolist()



class TaggingTask(finetune.FinetuneTask):
  """Token tagging with any loss of `losses`; strict span F1 at eval."""

  def __init__(self, config):
    super().__init__(config)
    d = config.data
    self.tokenizer = finetune.tokenizer_for(config)
    self.train_ds = finetune.load_split(config, 'train')
    self.eval_ds = finetune.load_split(config, 'eval')
    for which, ds in (('train', self.train_ds), ('eval', self.eval_ds)):
      if ds.task_kind != 'tagging':
        raise ValueError(f'config.data.{which}={ds.name!r} is a '
                         f'{ds.task_kind} dataset, not tagging')
    self.tag_names = list(self.train_ds.label_names)
    self.scheme = resolve_scheme(d.get('scheme', 'auto'), self.tag_names,
                                 f'{self.train_ds.name}/{self.train_ds.split}')
    # Cut-off words are predicted 'O'; the head must be able to say it too.
    self.added_tags = [] if 'O' in self.tag_names else ['O']
    self.tag_names += self.added_tags
    self.tag_index = {tag: i for i, tag in enumerate(self.tag_names)}
    self.class_counts = datasets.class_counts(self.train_ds)
    self.class_counts += [0] * (len(self.tag_names) - len(self.class_counts))
    self.bert = finetune.bert_config(config, self.tokenizer.vocab_size)
    self.model = BertForTokenClassification(self.bert,
                                            num_labels=len(self.tag_names))
    self.loss = finetune.loss_spec(config, len(self.tag_names),
                                   self.class_counts)
    self.tau = finetune.posthoc_tau(config, self.class_counts, self.tag_names,
                                    exempt=self.added_tags)
    self.stats = {}
    self.train_features, _ = self._features(self.train_ds, 'train')
    self.eval_features, self.eval_first = self._features(self.eval_ds, 'eval')
    logging.info('tagging (%s): %d train / %d eval sentences, tags %s, train '
                 'counts %s, loss %s', self.scheme, len(self.train_ds),
                 len(self.eval_ds), self.tag_names, self.class_counts,
                 self.loss.name)

  def adjusted_logits(self, logits: np.ndarray) -> np.ndarray:
    """[..., C] logits -> post-hoc adjusted `z - tau log pi` (Menon et al.
    2021) with the training tag prior. A tag this task added (never a
    training target, so without a prior) is never predicted by them."""
    logits = np.asarray(logits, np.float32)
    real = [i for i, t in enumerate(self.tag_names) if t not in self.added_tags]
    adjusted = np.full_like(logits, np.finfo(np.float32).min)
    adjusted[..., real] = losses.logit_adjustment.adjust_logits(
        logits[..., real], np.asarray(self.class_counts)[real], self.tau)
    return adjusted

  def _features(self, ds, which):
    features, first, stats = encode_tagging(
        self.tokenizer, ds.examples, self.tag_index,
        self.config.data.max_seq_length, where=f'{ds.name}/{ds.split}')
    self.stats[which] = stats
    if stats['truncated_sentences'] or stats['words_without_tokens']:
      logging.warning('%s/%s: %d of %d sentences truncated to %d sub-tokens '
                      '(%d words cut off); %d words give no sub-token; such '
                      'words are predicted O', ds.name, ds.split,
                      stats['truncated_sentences'], len(ds),
                      self.config.data.max_seq_length, stats['truncated_words'],
                      stats['words_without_tokens'])
    return features, first

  # ---------------------------------------------------------------- data
  def sampler_labels(self):
    """A sentence's class is its rarest entity type (sampling.sentence_classes)."""
    labels, _ = sampling.sentence_classes(
        [e.tags for e in self.train_ds.examples])
    return labels

  # ---------------------------------------------------------------- model
  @staticmethod
  def _token_weights(batch):
    """float32 [B, T]: first sub-tokens of kept words in real (not padding)
    rows."""
    return batch['label_weights'] * batch['weights'][:, None]

  def train_loss(self, params, batch, rng, loss_state):
    logits = self._logits(params, batch, deterministic=False, rng=rng)
    w = self._token_weights(batch)
    loss, loss_state = self.loss(logits, batch['labels'], weights=w,
                                 state=loss_state)
    hit = jnp.argmax(logits, -1) == batch['labels']
    return loss, ({'accuracy': base.mean_pair(hit, w)}, loss_state)

  def eval_step(self, params, batch):
    logits = self._logits(params, batch, deterministic=True)
    w = self._token_weights(batch)
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits),
                               batch['labels'][..., None], -1)[..., 0]
    hit = jnp.argmax(logits, -1) == batch['labels']
    metrics = {'accuracy': base.mean_pair(hit, w),
               'ce_loss': base.mean_pair(nll, w)}
    return metrics, {'logits': logits, 'weights': batch['weights'],
                     'example_index': batch['example_index']}

  def word_predictions(self, outputs) -> list[list[str]]:
    """Word-level predicted tags of every eval sentence, in dataset order.

    outputs: 'logits' float [M, T, C], 'weights' [M] (0 = padding row),
    'example_index' int [M], as gathered from `eval_step`.
    """
    keep = outputs['weights'] > 0
    token_preds = np.argmax(outputs['logits'][keep], -1)
    preds = [None] * len(self.eval_ds)
    for i, p in zip(outputs['example_index'][keep], token_preds):
      preds[int(i)] = word_tags(self.eval_first[int(i)], p, self.tag_names)
    missing = sum(p is None for p in preds)
    if missing:
      raise RuntimeError(f'{missing} eval sentences got no prediction; the '
                         'eval batches do not cover the eval set')
    return preds

  def prediction_rows(self, outputs) -> list[dict]:
    """`{guid, tokens, tags, spans}` per eval sentence, in order; spans are
    strict `{type, start, end, text}` (word offsets, end exclusive)."""
    rows = []
    for e, tags in zip(self.eval_ds.examples, self.word_predictions(outputs)):
      spans = [dict(type=t, start=a, end=b, text=' '.join(e.words[a:b]))
               for t, a, b in metrics_lib.extract_spans(tags, self.scheme)]
      rows.append(dict(guid=e.guid, tokens=list(e.words), tags=tags,
                       spans=spans))
    return rows

  def summarize_eval(self, metrics, outputs):
    preds = self.word_predictions(outputs)
    gold = [list(e.tags) for e in self.eval_ds.examples]
    spans, out = self._span_metrics(gold, preds)
    stats = self.stats['eval']
    out = dict(
        ce_loss=metrics['ce_loss'], accuracy=metrics['accuracy'], **out,
        truncated_sentences=stats['truncated_sentences'],
        truncated_words=stats['truncated_words'],
        words_without_tokens=stats['words_without_tokens'],
        train_truncated_sentences=self.stats['train']['truncated_sentences'],
        train_truncated_words=self.stats['train']['truncated_words'],
        per_type=spans['per_type'])
    note = ''
    if stats['truncated_words'] or stats['words_without_tokens']:
      note = (f'({stats["truncated_words"]} words cut off by max_seq_length in '
              f'{stats["truncated_sentences"]} sentences and '
              f'{stats["words_without_tokens"]} words without sub-tokens were '
              "predicted 'O')\n")
    out['report'] = (f'{self.scheme} strict span F1, token accuracy '
                     f'{out["token_accuracy"]:.4f}\n{note}'
                     + metrics_lib.format_report(spans))
    rows = [dict(guid=e.guid, words=list(e.words), gold=list(e.tags), pred=p)
            for e, p in zip(self.eval_ds.examples, preds)]
    if self.tau:
      # Post-hoc logit adjustment per token, with the training tag prior.
      adjusted = self.adjusted_logits(outputs['logits'])
      adjusted_preds = self.word_predictions(dict(outputs, logits=adjusted))
      _, adjusted_out = self._span_metrics(gold, adjusted_preds)
      out.update({f'adjusted_{k}': v for k, v in adjusted_out.items()})
      for row, p in zip(rows, adjusted_preds):   # the sweep report bootstraps these
        row['adjusted_pred'] = p
    out['_predictions'] = rows
    return out

  def _span_metrics(self, gold, preds):
    """(metrics.span_f1's dict, the flat span and token metrics of a run)."""
    spans = metrics_lib.span_f1(gold, preds, self.scheme)
    n_words = sum(len(g) for g in gold)
    right = sum(a == b for g, p in zip(gold, preds) for a, b in zip(g, p))
    out = dict(
        span_precision=spans['micro_precision'],
        span_recall=spans['micro_recall'], span_f1=spans['micro_f1'],
        span_macro_f1=spans['macro_f1'], span_weighted_f1=spans['weighted_f1'],
        token_accuracy=right / n_words, num_gold_spans=spans['num_true'],
        num_pred_spans=spans['num_pred'],
        num_correct_spans=spans['num_correct'])
    for kind, v in spans['per_type'].items():
      out[f'f1/{kind}'] = v['f1']
    return spans, out
