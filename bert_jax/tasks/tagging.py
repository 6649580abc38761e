"""Token tagging: NER, chunking, word segmentation, POS, with or without a CRF.

Data: a tagging dataset (`msra_ner`, `conll_sample`, `wsj_pos`,
`hkcancor_cws`, `hkcancor_pos`, or a CoNLL file), one tag per word.
`config.data.max_train_examples` / `max_eval_examples` (0 = all) keep a
seeded sample of N sentences of a split, for quick runs.

Schemes (`config.data.scheme`, case-insensitive):
  'IOB2', 'BIOES' (alias 'IOBES'), 'BMES'   typed entity spans: tags 'O'
      and '<P>-<TYPE>' (B-PER, M-LOC); scored by strict span F1.
  'seg_BMES', 'seg_BIES', 'seg_BIO'         untyped word segmentation: bare
      tags (B, M, E, S / B, I, E, S / B, I), no 'O'; each span is a word.
      Scored as the SIGHAN bakeoff does (word P/R/F1, IV/OOV recall).
  'none'                                    any per-token label set (POS):
      token accuracy, per-tag and macro F1.
  'auto'  (default) from the training tag set: no tag of the form
      '<P>-<TYPE>' or a bare B/I/M/E/S -> 'none'; typed tags -> BMES if an
      M- occurs, BIOES if I- and E-/S- occur, IOB2 if only B-/I-; bare tags
      -> seg_BMES if M occurs, seg_BIES if I and E/S occur, seg_BIO if only
      B/I. A set that fits two schemes (typed or bare B/E/S without M or I),
      mixes typed and bare tags, mixes scheme tags with other labels, or has
      both M and I is an error naming the tags and the choices.
The bare names 'BMES' etc. always mean the typed schemes; segmentation has
its own names so that a config never depends on which tags a subset drew.

Features: the words go through `encode_pretokenized_batch`, so a word may
become several sub-tokens. The tag of a word is the label of its FIRST
sub-token; continuation pieces, [CLS], [SEP] and padding get label weight 0,
so they count in neither the loss nor the metrics. A sentence longer than
`config.data.max_seq_length` sub-tokens (with [CLS]/[SEP]) is cut at the
end; the numbers of truncated sentences and of words cut off are logged and
reported with the eval results. A word cut off (or a word that normalises
to no sub-token at all, e.g. only control characters) gets the scheme's
fallback tag: 'O' for entity schemes, a one-character word ('S', or 'B' in
seg_BIO) for segmentation, the most frequent training tag for 'none'. The
metrics are always over the full gold sentences, never over the truncated
view. A sentence that gives no sub-token at all is an error.

Gold tags: a tag seen only in the eval split is an error naming it. A gold
sequence that breaks its scheme (an I-LOC after O, an E with no B, a span
left open) is counted per split, logged with its first occurrence and
reported as `ill_formed_sentences` (kept as it is) by default; with
`config.data.ill_formed_tags='raise'` it is an error naming the file, line
and tag. (Not `config.data.on_error`: its default is 'raise' for unreadable
lines, and MSRA ships 17 sentences cut inside an entity.)

Loss without CRF: any loss of `losses` from `config.loss` on logits
[B, T, C] with labels [B, T] and weights [B, T] (label weight x row weight);
class counts for count-based losses are tag counts over the training words.

CRF (`config.crf=True`): a linear-chain CRF (`bert_jax.crf`) over WORD-level
emissions: the logits at each kept word's first sub-token, gathered into a
word axis [B, W] (W = max_seq_length, a prefix mask over the kept words), so
transitions run between words, never between sub-tokens. The head learns
transitions [C, C] and start/end scores [C] (params `crf/`). The training
loss is the CRF negative log-likelihood, a mean over sentences:
  loss = NLL_crf + config.crf_emission_loss_weight * config.loss(emissions)
where the second term is the per-token loss named by `config.loss` on the
sub-token logits (as without CRF). The weight is 0 by default, so
`config.loss.name='ce'` means the CRF alone; naming another loss (focal,
dice, GHM, ...) requires a weight > 0, and loss hyperparameters set while
the weight is 0 are an error, since they would change nothing. Training
uses the learned transitions as they are; eval decodes with Viterbi, with
the transitions, starts and ends that the scheme forbids held at -inf
(`config.crf_constrained=True`, the default), so predictions are always
well formed. Post-hoc logit adjustment is per-token and is refused with a
CRF.

Eval: word-level tags are rebuilt from the first sub-tokens (argmax, or the
Viterbi path with a CRF), then scored by the scheme's metrics:
  spans         strict entity-level span F1 (`metrics.span_f1`):
                `span_precision/span_recall/span_f1`, `span_macro_f1`,
                `span_weighted_f1`, per-type `f1/<TYPE>`;
  segmentation  `metrics.segmentation_scores`: `seg_precision/seg_recall/
                seg_f1`, `iv_recall`, `oov_recall`, `oov_rate` (IV/OOV
                against the training words);
  none          `macro_f1`, `weighted_f1`, per-tag `f1/<TAG>`;
each plus `token_accuracy` over all words. `accuracy` and `ce_loss` are the
device-side sub-token values (first sub-tokens of kept words only; with a
CRF `accuracy` is the Viterbi path's, and `crf_nll` is added).
`config.best_metric` must be one of the scheme's keys (checked at start).
Predictions rows are `{guid, words, gold, pred}`, plus `gold_text` and
`pred_text` (the words joined by spaces) for segmentation. With
`config.eval_logit_adjustment_tau > 0` each token's logits are also
post-hoc adjusted by the training tag prior (Menon et al. 2021) and the same
metrics are reported as `adjusted_*`, the rows gaining `adjusted_pred`.

Sampling: with `config.data.sampling_q`, sentences are q-power sampled by
their rarest entity type (`sampling.sentence_classes`); entity and 'none'
schemes only.
"""

from __future__ import annotations

import math
import re
from typing import Optional, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import crf as crf_lib
from bert_jax import metrics as metrics_lib
from bert_jax import tokenization
from bert_jax.data import datasets
from bert_jax.data import sampling
from bert_jax.heads import BertForTokenClassification
from bert_jax.tasks import base
from bert_jax.tasks import finetune

import losses

# config.data.scheme value (upper-cased) -> canonical scheme name.
SCHEMES = {'IOB2': 'IOB2', 'BIOES': 'BIOES', 'IOBES': 'BIOES', 'BMES': 'BMES',
           'SEG_BMES': 'seg_BMES', 'SEG_BIES': 'seg_BIES', 'SEG_BIO': 'seg_BIO',
           'NONE': 'none'}
# Canonical scheme -> the scheme name `crf.allowed_transitions` takes.
CRF_SCHEMES = {'IOB2': 'IOB2', 'BIOES': 'BIOES', 'BMES': 'BMES',
               'seg_BMES': 'BMES', 'seg_BIES': 'BIES', 'seg_BIO': 'BIO',
               'none': 'none'}
# Segmentation scheme -> the name `metrics.segmentation_scores` takes.
SEGMENTATION = {'seg_BMES': 'BMES', 'seg_BIES': 'BIES', 'seg_BIO': 'BIO'}
ILL_FORMED_CHOICES = ('count', 'raise')
_TYPED = re.compile(r'([BIMES])-(.+)', re.S)
_CHOICES = 'auto, IOB2, BIOES (IOBES), BMES, seg_BMES, seg_BIES, seg_BIO, none'


def scheme_kind(scheme: str) -> str:
  """'span', 'segmentation' or 'none' for a canonical scheme name."""
  if scheme in SEGMENTATION:
    return 'segmentation'
  return 'none' if scheme == 'none' else 'span'


def infer_scheme(tags: Sequence[str]) -> str:
  """The scheme of a tag set (see the module docstring for the rules).

  Raises:
    ValueError: the set fits several schemes or mixes kinds of tags; the
      message names the tags and the choices.
  """
  tags = sorted(set(tags))
  others = [t for t in tags if t != 'O']
  bare = [t for t in others if len(t) == 1 and t in 'BIMES']
  typed = [t for t in others if _TYPED.fullmatch(t)]
  plain = [t for t in others if t not in bare and t not in typed]

  def fail(why):
    raise ValueError(f'config.data.scheme=auto: the tag set {tags} {why}; set '
                     f'config.data.scheme to one of {_CHOICES}')

  if not bare and not typed:
    return 'none'
  if plain:
    fail(f'mixes scheme tags {bare + typed} with other labels {plain} (a '
         "plain label set is scheme 'none')")
  if bare and typed:
    fail(f'mixes bare tags {bare} with typed tags {typed}')
  letters = set(bare) if bare else {t[0] for t in typed}
  if 'M' in letters and 'I' in letters:
    fail('has both M and I')
  if bare and 'O' in tags:
    fail("has 'O' with bare tags (segmentation tags have no 'O')")
  pre = 'seg_' if bare else ''
  if 'M' in letters:
    return pre + 'BMES'
  if 'I' in letters:
    if letters & {'E', 'S'}:
      return pre + ('BIES' if bare else 'BIOES')
    return pre + 'BIO' if bare else 'IOB2'
  if letters & {'E', 'S'}:
    fail(f'fits both {pre}BMES and {pre}{"BIES" if bare else "BIOES"} (no M '
         'or I tag to tell them apart)')
  return pre + 'BIO' if bare else 'IOB2'


def resolve_scheme(scheme: str, tags: Sequence[str], where: str) -> str:
  """Validates config.data.scheme against the tag set `tags`.

  Returns the canonical scheme name (a value of `SCHEMES`). Raises
  ValueError for an unknown scheme or a tag that is not valid in it.
  """
  if not isinstance(scheme, str) or (scheme.lower() != 'auto'
                                     and scheme.upper() not in SCHEMES):
    raise ValueError(f'config.data.scheme={scheme!r}; known: {_CHOICES}')
  if scheme.lower() == 'auto':
    try:
      return infer_scheme(tags)
    except ValueError as e:
      raise ValueError(f'{where}: {e}') from e
  name = SCHEMES[scheme.upper()]
  try:
    if scheme_kind(name) == 'span':
      # Parses every tag of the set; extract_spans raises on an invalid one.
      metrics_lib.extract_spans(list(tags), name)
    elif scheme_kind(name) == 'segmentation':
      metrics_lib.segment_words(list(tags), SEGMENTATION[name])
  except ValueError as e:
    raise ValueError(f'{where}: the tag set {list(tags)} is not {name} '
                     f'(config.data.scheme={scheme!r}; choices: {_CHOICES}): '
                     f'{e}') from e
  return name


def fallback_tag(scheme: str, class_counts: Sequence[int],
                 tag_names: Sequence[str]) -> str:
  """The tag of a word the model never sees (cut off, or no sub-token)."""
  if scheme_kind(scheme) == 'span':
    return 'O'
  if scheme_kind(scheme) == 'segmentation':
    return 'B' if scheme == 'seg_BIO' else 'S'
  return tag_names[int(np.argmax(class_counts))]


def first_violation(tag_ids: Sequence[int], allowed) -> Optional[tuple[int, str]]:
  """Where a tag sequence first breaks its scheme, or None.

  allowed: (trans [C, C], start [C], end [C]) bool, from
  `crf.allowed_transitions`. Returns (position, what is wrong).
  """
  trans, start, end = allowed
  if not len(tag_ids):
    return None
  if not start[tag_ids[0]]:
    return 0, 'cannot start a sentence'
  for i in range(1, len(tag_ids)):
    if not trans[tag_ids[i - 1], tag_ids[i]]:
      return i, 'cannot follow the tag before it'
  if not end[tag_ids[-1]]:
    return len(tag_ids) - 1, 'leaves a span open at the end of the sentence'
  return None


def _line_of(guid: str, position: int, sentence_per_line: bool) -> str:
  """'file:line' of word `position` of a sentence whose guid is 'file:N'."""
  stem, sep, line = guid.rpartition(':')
  if not sep or not line.isdigit():
    return f'{guid} (word {position + 1})'
  if sentence_per_line:
    return f'{stem}:{line} (word {position + 1})'
  return f'{stem}:{int(line) + position}'


def encode_tagging(tokenizer: tokenization.BertTokenizer, examples,
                   tag_index: dict[str, int], max_seq_length: int,
                   where: str = '<data>', word_axis: bool = False):
  """Sub-token features of tagging examples, label on each word's first piece.

  Args:
    tokenizer: the WordPiece tokenizer.
    examples: `TaggingExample`s with tags (N of them).
    tag_index: tag -> class id; every tag must be in it.
    max_seq_length: T, [CLS] and [SEP] included.
    where: dataset name for error messages.
    word_axis: also give the word-level features a CRF runs over.

  Returns:
    (features, first_positions, stats):
      features: input_ids, token_type_ids, attention_mask, labels int32
        [N, T]; label_weights float32 [N, T] (1 on the first sub-token of each
        word that was kept, else 0); weights float32 [N] (row weights, 1);
        example_index int32 [N] (row -> example, to put eval outputs back in
        order). With `word_axis`, also word_positions int32 [N, T] (the
        first sub-token position of the k-th kept word, 0 past the last),
        word_labels int32 [N, T] (its tag id) and word_mask int32 [N, T] (1
        for k < number of kept words: a prefix mask).
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
  word_positions = np.zeros((n, t), np.int32)
  word_labels = np.zeros((n, t), np.int32)
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
    # Kept words in order: positions are increasing, so sorting them gives
    # the words in sentence order.
    word_positions[i, :len(kept)] = kept + 1
    word_labels[i, :len(kept)] = tags[word[kept]]
    first_positions.append(first)
  features = dict(
      input_ids=input_ids, token_type_ids=np.zeros((n, t), np.int32),
      attention_mask=attention_mask, labels=labels,
      label_weights=label_weights, weights=np.ones(n, np.float32),
      example_index=np.arange(n, dtype=np.int32))
  if word_axis:
    features.update(word_positions=word_positions, word_labels=word_labels,
                    word_mask=(word_positions > 0).astype(np.int32))
  return features, first_positions, stats


def word_tags(first_positions: np.ndarray, token_preds: np.ndarray,
              tag_names: Sequence[str], fallback: str = 'O') -> list[str]:
  """Word-level tags from sub-token predictions.

  first_positions: int [num_words] (see `encode_tagging`); token_preds: int
  [T] class ids. A word without a kept first sub-token gets `fallback`.
  """
  names = np.asarray(list(tag_names) + [fallback], dtype=object)
  ids = np.where(first_positions >= 0,
                 token_preds[np.maximum(first_positions, 0)], len(tag_names))
  return names[ids].tolist()


def word_gold_probs(first_positions: np.ndarray, token_probs: np.ndarray,
                    gold_ids: Sequence[int]) -> list[Optional[float]]:
  """Probability of each word's gold tag at its first sub-token.

  first_positions: int [num_words]; token_probs: float [T, C] (softmax of
  the logits); gold_ids: num_words class ids. A word without a kept first
  sub-token gets None (it is predicted the fallback tag, not by the model).
  """
  return [round(float(token_probs[f, g]), 6) if f >= 0 else None
          for f, g in zip(first_positions, gold_ids)]


def crf_word_tags(first_positions: np.ndarray, word_preds: np.ndarray,
                  tag_names: Sequence[str], fallback: str) -> list[str]:
  """Word-level tags from a CRF path over the kept words.

  first_positions: int [num_words]; word_preds: int [W] class ids of the
  kept words in order (the word axis of `encode_tagging`). A word without a
  kept first sub-token gets `fallback`.
  """
  kept = np.flatnonzero(first_positions >= 0)
  out = [fallback] * len(first_positions)
  for j, i in enumerate(kept):
    out[i] = tag_names[int(word_preds[j])]
  return out



class TaggingTask(finetune.FinetuneTask):
  """Token tagging with any loss of `losses`, optionally through a CRF."""

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
    self.kind = scheme_kind(self.scheme)
    self.class_counts = datasets.class_counts(self.train_ds)
    # Cut-off words get the fallback tag; the head must be able to say it.
    self.fallback = fallback_tag(self.scheme, self.class_counts,
                                 self.tag_names)
    self.added_tags = ([] if self.fallback in self.tag_names
                       else [self.fallback])
    self.tag_names += self.added_tags
    self.tag_index = {tag: i for i, tag in enumerate(self.tag_names)}
    self.class_counts += [0] * (len(self.tag_names) - len(self.class_counts))
    self.use_crf = bool(config.get('crf', False))
    self.emission_weight = _crf_loss_check(config, self.use_crf)
    if d.get('sampling_q') is not None and self.kind == 'segmentation':
      raise ValueError('config.data.sampling_q samples sentences by their '
                       'rarest entity type; a segmentation scheme '
                       f'({self.scheme}) has no types')
    self.bert_config = finetune.bert_config(config, self.tokenizer.vocab_size)
    self.model = BertForTokenClassification(
        self.bert_config, num_labels=len(self.tag_names), crf=self.use_crf)
    self.loss = finetune.loss_spec(config, len(self.tag_names),
                                   self.class_counts)
    self.tau = finetune.posthoc_tau(config, self.class_counts, self.tag_names,
                                    exempt=self.added_tags)
    if self.tau and self.use_crf:
      raise ValueError('config.eval_logit_adjustment_tau adjusts per-token '
                       'softmax predictions; with config.crf=True the '
                       'prediction is a Viterbi path: set it to 0')
    # What the scheme allows, for the gold-sequence check and CRF decoding.
    self.allowed = crf_lib.allowed_transitions(self.tag_names,
                                               CRF_SCHEMES[self.scheme])
    self.constrained = bool(config.get('crf_constrained', True))
    self.ill_formed = {}
    for which, ds in (('train', self.train_ds), ('eval', self.eval_ds)):
      self.ill_formed[which] = self._check_gold(ds)
    self.train_words = set()
    if self.kind == 'segmentation':
      seg = SEGMENTATION[self.scheme]
      for e in self.train_ds.examples:
        for s, t in metrics_lib.segment_words(e.tags, seg):
          self.train_words.add(''.join(e.words[s:t]))
    self._check_best_metric(config.get('best_metric', ''))
    self.stats = {}
    self.train_features, _ = self._features(self.train_ds, 'train')
    self.eval_features, self.eval_first = self._features(self.eval_ds, 'eval')
    logging.info('tagging (%s%s): %d train / %d eval sentences, tags %s, '
                 'train counts %s, loss %s', self.scheme,
                 ', CRF' if self.use_crf else '', len(self.train_ds),
                 len(self.eval_ds), self.tag_names, self.class_counts,
                 self.loss.name)

  # ---------------------------------------------------------------- checks
  def _check_gold(self, ds) -> int:
    """Counts (or, with config.data.ill_formed_tags='raise', refuses) gold
    sequences that break the scheme. Tags outside the training set are
    refused by `encode_tagging`, so only known tags are checked here."""
    mode = self.config.data.get('ill_formed_tags', 'count')
    if mode not in ILL_FORMED_CHOICES:
      raise ValueError(f'config.data.ill_formed_tags={mode!r}; choices: '
                       f'{ILL_FORMED_CHOICES}')
    if self.kind == 'none':
      return 0
    per_line = ds.name in datasets.SENTENCE_PER_LINE
    bad, first = 0, None
    for e in ds.examples:
      if e.tags is None or any(t not in self.tag_index for t in e.tags):
        continue
      hit = first_violation([self.tag_index[t] for t in e.tags], self.allowed)
      if hit is None:
        continue
      bad += 1
      if first is None:
        i, why = hit
        before = f' after {e.tags[i - 1]!r}' if i else ''
        first = (f'{_line_of(e.guid, i, per_line)}: tag {e.tags[i]!r} (word '
                 f'{e.words[i]!r}){before} {why} in {self.scheme}')
        if mode == 'raise':
          raise ValueError(
              f'{ds.name}/{ds.split}: {first} (config.data.ill_formed_tags='
              "'raise'; 'count' keeps such sentences and counts them)")
    if bad:
      logging.warning('%s/%s: %d of %d gold sentences break %s (kept, as '
                      'given); the first: %s', ds.name, ds.split, bad, len(ds),
                      self.scheme, first)
    return bad

  def metric_keys(self) -> list[str]:
    """The scalar keys `summarize_eval` reports (per-tag keys aside)."""
    common = ['accuracy', 'ce_loss', 'token_accuracy'] + (
        ['crf_nll'] if self.use_crf else [])
    return common + {
        'span': ['span_precision', 'span_recall', 'span_f1', 'span_macro_f1',
                 'span_weighted_f1'],
        'segmentation': ['seg_precision', 'seg_recall', 'seg_f1',
                         'iv_recall', 'oov_recall', 'oov_rate'],
        'none': ['macro_f1', 'weighted_f1'],
    }[self.kind]

  def _check_best_metric(self, best):
    keys = self.metric_keys()
    ok = (not best or best in keys or best.startswith('f1/')
          or (self.tau and best.startswith('adjusted_')
              and best[len('adjusted_'):] in keys))
    if not ok:
      raise ValueError(f'config.best_metric={best!r} is not reported by the '
                       f'{self.scheme} tagging eval; choices: {keys}')

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
        self.config.data.max_seq_length, where=f'{ds.name}/{ds.split}',
        word_axis=self.use_crf)
    self.stats[which] = stats
    if stats['truncated_sentences'] or stats['words_without_tokens']:
      logging.warning('%s/%s: %d of %d sentences truncated to %d sub-tokens '
                      '(%d words cut off); %d words give no sub-token; such '
                      'words are predicted %r', ds.name, ds.split,
                      stats['truncated_sentences'], len(ds),
                      self.config.data.max_seq_length, stats['truncated_words'],
                      stats['words_without_tokens'], self.fallback)
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

  @staticmethod
  def word_emissions(logits, batch):
    """[B, T, C] sub-token logits -> [B, W, C] at each kept word's first
    sub-token (rows past the last kept word repeat position 0: masked)."""
    return jnp.take_along_axis(logits, batch['word_positions'][..., None],
                               axis=1)

  @staticmethod
  def _crf_params(params):
    p = params['crf']
    return p['transitions'], p['start'], p['end']

  def _crf_nll(self, logits, params, batch, reduction='mean'):
    trans, start, end = self._crf_params(params)
    return crf_lib.nll(self.word_emissions(logits, batch),
                       batch['word_labels'], batch['word_mask'] > 0, trans,
                       start, end, weights=batch['weights'],
                       reduction=reduction)

  def train_loss(self, params, batch, rng, loss_state):
    logits = self._logits(params, batch, deterministic=False, rng=rng)
    w = self._token_weights(batch)
    hit = jnp.argmax(logits, -1) == batch['labels']
    metrics = {'accuracy': base.mean_pair(hit, w)}
    if not self.use_crf:
      loss, loss_state = self.loss(logits, batch['labels'], weights=w,
                                   state=loss_state)
      return loss, (metrics, loss_state)
    loss = self._crf_nll(logits, params, batch)
    rows = batch['weights'] * jnp.any(batch['word_mask'] > 0, axis=1)
    metrics['crf_nll'] = (loss * jnp.sum(rows), jnp.sum(rows))
    if self.emission_weight:
      aux, loss_state = self.loss(logits, batch['labels'], weights=w,
                                  state=loss_state)
      metrics['emission_loss'] = (aux, jnp.ones(()))
      loss = loss + self.emission_weight * aux
    return loss, (metrics, loss_state)

  def decode(self, params, logits, batch):
    """Viterbi word tags int32 [B, W] (0 past the kept words)."""
    trans, start, end = self._crf_params(params)
    if self.constrained:
      trans, start, end = crf_lib.apply_constraints(trans, start, end,
                                                    self.allowed)
    tags, _ = crf_lib.viterbi_decode(self.word_emissions(logits, batch),
                                     batch['word_mask'] > 0, trans, start, end)
    return tags

  def eval_step(self, params, batch):
    logits = self._logits(params, batch, deterministic=True)
    w = self._token_weights(batch)
    hit = jnp.argmax(logits, -1) == batch['labels']
    metrics = {'accuracy': base.mean_pair(hit, w),
               'ce_loss': base.nll_pair(logits, batch['labels'], w)}
    outputs = {'logits': logits, 'weights': batch['weights'],
               'example_index': batch['example_index']}
    if self.use_crf:
      tags = self.decode(params, logits, batch)
      word_w = (batch['word_mask'] > 0) * batch['weights'][:, None]
      metrics['accuracy'] = base.mean_pair(tags == batch['word_labels'], word_w)
      per_seq = self._crf_nll(logits, params, batch, reduction='none')
      rows = batch['weights'] * jnp.any(batch['word_mask'] > 0, axis=1)
      metrics['crf_nll'] = base.mean_pair(jnp.where(rows > 0, per_seq, 0),
                                          rows)
      outputs['crf_tags'] = tags
    return metrics, outputs

  def word_predictions(self, outputs) -> list[list[str]]:
    """Word-level predicted tags of every eval sentence, in dataset order.

    outputs: 'logits' float [M, T, C] (or 'crf_tags' int [M, W] with a CRF),
    'weights' [M] (0 = padding row), 'example_index' int [M], as gathered
    from `eval_step`.
    """
    keep = outputs['weights'] > 0
    crf_tags = outputs.get('crf_tags')
    if crf_tags is not None:
      rows = crf_tags[keep]
    else:
      rows = np.argmax(outputs['logits'][keep], -1)
    preds = [None] * len(self.eval_ds)
    for i, p in zip(outputs['example_index'][keep], rows):
      first = self.eval_first[int(i)]
      preds[int(i)] = (
          crf_word_tags(first, p, self.tag_names, self.fallback)
          if crf_tags is not None else
          word_tags(first, p, self.tag_names, self.fallback))
    missing = sum(p is None for p in preds)
    if missing:
      raise RuntimeError(f'{missing} eval sentences got no prediction; the '
                         'eval batches do not cover the eval set')
    return preds

  def prediction_rows(self, outputs) -> list[dict]:
    """`{guid, tokens, tags, spans}` per eval sentence, in order. Entity
    schemes: spans are strict `{type, start, end, text}` (word offsets, end
    exclusive). Segmentation: spans are the words `{start, end, text}`, and
    `text` is the segmented sentence. `none` (POS): no spans."""
    rows = []
    for e, tags in zip(self.eval_ds.examples, self.word_predictions(outputs)):
      row = dict(guid=e.guid, tokens=list(e.words), tags=tags, spans=[])
      if self.kind == 'span':
        row['spans'] = [dict(type=t, start=a, end=b, text=' '.join(e.words[a:b]))
                        for t, a, b in metrics_lib.extract_spans(tags, self.scheme)]
      elif self.kind == 'segmentation':
        words = metrics_lib.segment_words(tags, SEGMENTATION[self.scheme])
        row['spans'] = [dict(start=a, end=b, text=''.join(e.words[a:b]))
                        for a, b in words]
        row['text'] = self.segmented_text(row['tokens'], tags)
      rows.append(row)
    return rows

  def summarize_eval(self, metrics, outputs):
    preds = self.word_predictions(outputs)
    gold = [list(e.tags) for e in self.eval_ds.examples]
    table, out = self._scheme_metrics(gold, preds)
    stats = self.stats['eval']
    out = dict(
        ce_loss=metrics['ce_loss'], accuracy=metrics['accuracy'], **out,
        truncated_sentences=stats['truncated_sentences'],
        truncated_words=stats['truncated_words'],
        words_without_tokens=stats['words_without_tokens'],
        train_truncated_sentences=self.stats['train']['truncated_sentences'],
        train_truncated_words=self.stats['train']['truncated_words'],
        ill_formed_sentences=self.ill_formed['eval'],
        train_ill_formed_sentences=self.ill_formed['train'])
    if 'crf_nll' in metrics:
      out['crf_nll'] = metrics['crf_nll']
    if 'per_type' in table:
      out['per_type'] = table['per_type']
    note = ''
    if stats['truncated_words'] or stats['words_without_tokens']:
      note = (f'({stats["truncated_words"]} words cut off by max_seq_length in '
              f'{stats["truncated_sentences"]} sentences and '
              f'{stats["words_without_tokens"]} words without sub-tokens were '
              f'predicted {self.fallback!r})\n')
    if self.ill_formed['eval']:
      note += (f'({self.ill_formed["eval"]} gold sentences break '
               f'{self.scheme}; scored as given)\n')
    out['report'] = self._report(out, table, note)
    rows = [dict(guid=e.guid, words=list(e.words), gold=list(e.tags), pred=p)
            for e, p in zip(self.eval_ds.examples, preds)]
    if not self.use_crf:
      # The model's probability of each gold tag (the tune report's
      # histogram); a CRF's emissions are not probabilities.
      keep = outputs['weights'] > 0
      probs = np.asarray(jax.nn.softmax(
          np.asarray(outputs['logits'][keep], np.float32), -1))
      for i, p in zip(outputs['example_index'][keep], probs):
        e = self.eval_ds.examples[int(i)]
        rows[int(i)]['gold_probs'] = word_gold_probs(
            self.eval_first[int(i)], p, [self.tag_index[t] for t in e.tags])
    if self.kind == 'segmentation':
      for row in rows:
        row['gold_text'] = self.segmented_text(row['words'], row['gold'])
        row['pred_text'] = self.segmented_text(row['words'], row['pred'])
    if self.tau:
      # Post-hoc logit adjustment per token, with the training tag prior.
      adjusted = self.adjusted_logits(outputs['logits'])
      adjusted_preds = self.word_predictions(dict(outputs, logits=adjusted))
      _, adjusted_out = self._scheme_metrics(gold, adjusted_preds)
      out.update({f'adjusted_{k}': v for k, v in adjusted_out.items()})
      for row, p in zip(rows, adjusted_preds):   # the sweep report bootstraps these
        row['adjusted_pred'] = p
    out['_predictions'] = rows
    return out

  def segmented_text(self, chars, tags) -> str:
    """The words of a tagged sentence joined by spaces."""
    return ' '.join(''.join(chars[s:e]) for s, e in
                    metrics_lib.segment_words(tags, SEGMENTATION[self.scheme]))

  def _report(self, out, table, note):
    head = f'token accuracy {out["token_accuracy"]:.4f}'
    if self.kind == 'span':
      return (f'{self.scheme} strict span F1, {head}\n{note}'
              + metrics_lib.format_report(table))
    if self.kind == 'none':
      return (f'per-tag scores (scheme none), {head}\n{note}'
              + metrics_lib.format_report(table))
    return (f'{self.scheme} word segmentation (SIGHAN scoring), {head}\n'
            f'{note}words: P {out["seg_precision"]:.4f} R '
            f'{out["seg_recall"]:.4f} F1 {out["seg_f1"]:.4f}; IV recall '
            f'{out["iv_recall"]:.4f}, OOV recall {out["oov_recall"]:.4f}, OOV '
            f'rate {out["oov_rate"]:.4f} ({table["num_oov"]} of '
            f'{table["num_true"]} gold words)\n')

  def _scheme_metrics(self, gold, preds):
    """(the metrics table of the scheme, the flat metrics of a run)."""
    n_words = sum(len(g) for g in gold)
    right = sum(a == b for g, p in zip(gold, preds) for a, b in zip(g, p))
    out = dict(token_accuracy=right / n_words)
    if self.kind == 'span':
      spans = metrics_lib.span_f1(gold, preds, self.scheme)
      out.update(
          span_precision=spans['micro_precision'],
          span_recall=spans['micro_recall'], span_f1=spans['micro_f1'],
          span_macro_f1=spans['macro_f1'],
          span_weighted_f1=spans['weighted_f1'],
          num_gold_spans=spans['num_true'], num_pred_spans=spans['num_pred'],
          num_correct_spans=spans['num_correct'])
      for kind, v in spans['per_type'].items():
        out[f'f1/{kind}'] = v['f1']
      return spans, out
    if self.kind == 'segmentation':
      seg = metrics_lib.segmentation_scores(
          gold, preds, SEGMENTATION[self.scheme],
          [e.words for e in self.eval_ds.examples], self.train_words)
      out.update(seg_precision=seg['precision'], seg_recall=seg['recall'],
                 seg_f1=seg['f1'], iv_recall=seg['iv_recall'],
                 oov_recall=seg['oov_recall'], oov_rate=seg['oov_rate'],
                 num_gold_words=seg['num_true'],
                 num_pred_words=seg['num_pred'],
                 num_correct_words=seg['num_correct'])
      return seg, out
    table = metrics_lib.tag_classification_metrics(gold, preds, self.tag_names)
    out.update(macro_f1=table['macro_f1'], weighted_f1=table['weighted_f1'])
    for tag, v in table['per_class'].items():
      if v['support'] or tag not in self.added_tags:
        out[f'f1/{tag}'] = v['f1']
    return table, out


def _crf_loss_check(config, use_crf: bool) -> float:
  """config.crf_emission_loss_weight, checked against config.loss; returns
  the weight (0.0: the CRF NLL alone)."""
  w = config.get('crf_emission_loss_weight', 0.0) or 0.0
  if (isinstance(w, bool) or not isinstance(w, (int, float))
      or not math.isfinite(w) or w < 0):
    raise ValueError(f'config.crf_emission_loss_weight={w!r} must be a finite '
                     'number >= 0')
  if not use_crf:
    if w:
      raise ValueError(f'config.crf_emission_loss_weight={w} weighs a loss on '
                       'the emissions next to the CRF NLL; it needs '
                       'config.crf=True (without a CRF, config.loss is the '
                       'whole loss)')
    return 0.0
  name = config.loss.name
  if not w:
    if name != 'ce':
      raise ValueError(
          f"config.loss.name={name!r} with config.crf=True: the CRF's loss is "
          'its negative log-likelihood; to add this loss on the emissions set '
          'config.crf_emission_loss_weight > 0, or keep config.loss.name=ce '
          'for the CRF alone')
    set_keys = [k for k, v in config.loss.to_dict().items()
                if k != 'name' and v is not None]
    if set_keys:
      raise ValueError(
          f'config.loss.{set_keys[0]} is set but has no effect: with '
          'config.crf=True and config.crf_emission_loss_weight=0 the loss is '
          'the CRF negative log-likelihood alone')
  return float(w)
