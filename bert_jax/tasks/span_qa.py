"""Extractive span QA: SQuAD v1.1, and v2.0 with unanswerable questions.

Features. Each example becomes one or more windows
`[CLS] question [SEP] passage-window [SEP]`, padded to
`T = config.data.max_seq_length`. The question keeps its first
`config.data.max_query_length` WordPiece tokens (the number of questions cut
is logged and kept in `self.truncated`). The passage is tokenised once and
cut into windows of up to `T - len(question) - 3` tokens; each window starts
`config.data.doc_stride` tokens after the previous one (the window advance,
as in google-research/bert, not the overlap as in HF `stride`), and the last
window ends at the passage's end. A window's label is the token positions of
the first answer's first and last character (found through the tokenizer's
character offsets) when the whole answer lies inside the window, else
position 0 ([CLS]); unanswerable questions always label 0 (the SQuAD v2
convention, also used for v1 windows that miss the answer). `logit_mask`
allows the passage tokens and [CLS]. Per-window metadata stays on the host
(`Window`: example index, character offsets of its passage tokens, and
which tokens have their maximal context in this window) for decoding.
Training samples windows, so `config.num_epochs` counts passes over the
training windows (more than the questions when passages are long).

Loss. The mean of the start-position and end-position losses, each any
softmax loss of `losses` (`config.loss`) with the T positions as classes.
Losses that need class counts (`class_balanced_ce`, `logit_adjusted_ce`,
`alpha='inverse_freq'`...) are rejected, since positions have no class
frequencies; sigmoid/multi-label losses are rejected too. A stateful loss
(GHM) keeps two states, `{'start': ..., 'end': ...}`: the start and end
heads have different gradient-norm distributions, and one shared EMA
histogram would be updated twice per step with alternating populations.

Decoding (`decode`). Per window, the `config.n_best_size` best start and end
positions among its passage tokens form candidate spans with
`end >= start`, length <= `config.max_answer_length` tokens, and a start
token whose maximal context is this window (a token seen in several windows
is judged only where it has the most context on both sides, as in
google-research/bert). Candidates from all windows of a question are ranked
by start + end logit; the answer text is the original context substring
between the first token's start and the last token's end character. The
null score is start[0] + end[0] ([CLS]), its minimum over the windows. With
`config.data.version_2_with_negative`, "" is predicted when
`null - best_non_null > config.null_score_diff_threshold` (or when no span
is valid); v1.1 always predicts the best span.

Eval. `metrics.squad_scores` (exact_match, f1 and their has_ans/no_ans
splits, in percent), the mean start/end cross-entropy and position accuracy
of the labelled windows, and for v2 the best threshold on this eval set
(`best_f1`, `best_f1_thresh`, as the official v2 script; an oracle number
for choosing `null_score_diff_threshold`, not a held-out score). Rows of
predictions.jsonl: `{guid, question, prediction, gold}`.

`empty_answer_baseline` and `first_sentence_baseline` score trivial
predictors on an eval set, as floors for recorded results.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import metrics as metrics_lib
from bert_jax import tokenization
from bert_jax.data import batching
from bert_jax.data import examples as ex
from bert_jax.heads import BertForSpanQA
from bert_jax.tasks import base
from bert_jax.tasks import finetune

# Losses whose labels are 0/1 of the logits' shape: they cannot take a
# position index as the label.
_SIGMOID_LOSSES = ('bce', 'sigmoid_focal', 'sigmoid_ghm', 'multilabel_ce')


@dataclasses.dataclass(frozen=True)
class Window:
  """Host-side metadata of one feature (one window of one example).

  Attributes:
    example_index: index of the example in its dataset.
    passage_start: feature position of the window's first passage token
      (`len(question) + 2`).
    offsets: int32 [L, 2], the `[start, end)` characters in the example's
      context of the window's L passage tokens (feature positions
      `passage_start .. passage_start + L - 1`).
    max_context: bool [L], whether each passage token has its maximal
      context in this window among all windows of the example.
  """
  example_index: int
  passage_start: int
  offsets: np.ndarray
  max_context: np.ndarray

  @property
  def length(self) -> int:
    return len(self.offsets)


@dataclasses.dataclass
class FeatureStats:
  """Counts from building features, for the log and the report."""
  examples: int = 0
  windows: int = 0
  questions_truncated: int = 0
  # Answerable examples whose answer covers no token (e.g. only characters
  # the normaliser removes); their windows are left out of training.
  answers_without_tokens: int = 0
  # Answers that start or end inside a WordPiece token: the labelled span
  # (whole tokens) is then longer than the gold text.
  answers_mid_token: int = 0


def window_starts(num_tokens: int, max_tokens: int, stride: int) -> list[int]:
  """Passage token index where each window starts.

  Windows hold up to `max_tokens` tokens; the next one starts
  `min(stride, window length)` later, so a stride larger than a window never
  skips tokens; the last window reaches the end. An empty passage still gets
  one (empty) window, so every question has a null score.
  """
  if max_tokens < 1 or stride < 1:
    raise ValueError(f'max_tokens={max_tokens} and stride={stride} must be >= 1')
  starts, start = [], 0
  while True:
    starts.append(start)
    length = min(num_tokens - start, max_tokens)
    if start + length >= num_tokens:
      return starts
    start += min(length, stride)


def max_context_masks(num_tokens: int, starts: Sequence[int],
                      max_tokens: int) -> list[np.ndarray]:
  """bool [L_w] per window: the token's maximal-context window is this one.

  A token's context in a window is min(tokens left of it, tokens right of
  it) + 0.01 * window length; the first window with the maximum wins ties
  (google-research/bert's `_check_is_max_context`).
  """
  lengths = [min(num_tokens - s, max_tokens) for s in starts]
  best = np.full(num_tokens, -np.inf)
  owner = np.full(num_tokens, -1)
  for w, (s, n) in enumerate(zip(starts, lengths)):
    pos = np.arange(n)
    score = np.minimum(pos, n - 1 - pos) + 0.01 * n
    better = score > best[s:s + n]
    best[s:s + n] = np.where(better, score, best[s:s + n])
    owner[s:s + n] = np.where(better, w, owner[s:s + n])
  return [owner[s:s + n] == w for w, (s, n) in enumerate(zip(starts, lengths))]


def answer_token_span(offsets: np.ndarray, char_start: int, char_end: int
                      ) -> Optional[tuple[int, int]]:
  """First and last passage token overlapping characters [char_start, char_end).

  offsets: int [N, 2] token character spans, increasing. None if no token
  overlaps (the answer is only characters the tokenizer drops).
  """
  if len(offsets) == 0:
    return None
  first = int(np.searchsorted(offsets[:, 1], char_start, side='right'))
  last = int(np.searchsorted(offsets[:, 0], char_end, side='left')) - 1
  if first > last or first >= len(offsets) or last < 0:
    return None
  return first, last


def build_features(tokenizer: tokenization.BertTokenizer,
                   examples: Sequence[ex.QAExample], *, max_seq_length: int,
                   doc_stride: int, max_query_length: int
                   ) -> tuple[dict[str, np.ndarray], list[Window], FeatureStats]:
  """Windows of `examples` as padded arrays plus host metadata.

  Returns:
    (arrays, windows, stats). arrays, with F windows and T = max_seq_length:
      input_ids, token_type_ids, attention_mask, logit_mask: int32 [F, T];
      start_positions, end_positions: int32 [F] (0 = [CLS]);
      example_index, feature_index: int32 [F]; weights: float32 [F] (ones).
    windows: F `Window`s in feature order.
  """
  t = max_seq_length
  if max_query_length < 1:
    raise ValueError(f'config.data.max_query_length={max_query_length} must '
                     'be >= 1')
  stats = FeatureStats(examples=len(examples))
  questions = tokenizer.encode_batch(
      [e.question for e in examples], max_length=max_query_length,
      truncation='longest_first', add_special_tokens=False)
  passages = tokenizer.encode_batch([e.context for e in examples],
                                    truncation=None, add_special_tokens=False)
  cls, sep = tokenizer.cls_id, tokenizer.sep_id
  rows = {k: [] for k in ('input_ids', 'token_type_ids', 'logit_mask',
                          'start_positions', 'end_positions', 'example_index')}
  windows = []
  for i, (e, q, p) in enumerate(zip(examples, questions, passages)):
    stats.questions_truncated += q.num_truncated > 0
    max_tokens = t - len(q.ids) - 3
    if max_tokens < 1:
      raise ValueError(
          f'max_seq_length={t} leaves no room for the passage after a '
          f'{len(q.ids)}-token question; lower max_query_length '
          f'({max_query_length}) or raise max_seq_length')
    doc_ids = np.asarray(p.ids, np.int32)
    offsets = np.asarray(p.offsets, np.int32).reshape(-1, 2)
    n = len(doc_ids)
    answer = None   # (first, last) passage token of the first answer
    if not e.is_impossible:
      text, char_start = e.answers[0]
      answer = answer_token_span(offsets, char_start, char_start + len(text))
      if answer is None:
        stats.answers_without_tokens += 1
        logging.warning('%s: answer %r covers no token; its windows are left '
                        'out of training', e.guid, text)
      elif (offsets[answer[0], 0] != char_start
            or offsets[answer[1], 1] != char_start + len(text)):
        stats.answers_mid_token += 1
    starts = window_starts(n, max_tokens, doc_stride)
    contexts = max_context_masks(n, starts, max_tokens)
    head = [cls] + list(q.ids) + [sep]
    for s, max_context in zip(starts, contexts):
      length = len(max_context)
      ids = head + doc_ids[s:s + length].tolist() + [sep]
      types = [0] * len(head) + [1] * (length + 1)
      allowed = [1] + [0] * (len(head) - 1) + [1] * length + [0]
      start_pos = end_pos = 0
      if answer is not None and s <= answer[0] and answer[1] < s + length:
        start_pos = answer[0] - s + len(head)
        end_pos = answer[1] - s + len(head)
      # Answerable but untokenisable: no correct label exists; -1 marks the
      # window so the task can drop it from training.
      if not e.is_impossible and answer is None:
        start_pos = end_pos = -1
      rows['input_ids'].append(batching.pad_to(ids, t))
      rows['token_type_ids'].append(batching.pad_to(types, t))
      rows['logit_mask'].append(batching.pad_to(allowed, t))
      rows['start_positions'].append(start_pos)
      rows['end_positions'].append(end_pos)
      rows['example_index'].append(i)
      windows.append(Window(i, len(head), offsets[s:s + length], max_context))
  stats.windows = f = len(windows)
  stack = lambda key: (np.stack(rows[key]) if f
                       else np.zeros((0, t), np.int32))
  # Built from the window lengths rather than from `ids != [PAD]`, so the
  # mask does not depend on which id the vocabulary gives [PAD].
  lengths = np.asarray([w.passage_start + w.length + 1 for w in windows],
                       np.int32).reshape(f)
  arrays = dict(
      input_ids=stack('input_ids'),
      token_type_ids=stack('token_type_ids'),
      attention_mask=(np.arange(t)[None, :] < lengths[:, None]).astype(np.int32),
      logit_mask=stack('logit_mask'),
      start_positions=np.asarray(rows['start_positions'], np.int32),
      end_positions=np.asarray(rows['end_positions'], np.int32),
      example_index=np.asarray(rows['example_index'], np.int32),
      feature_index=np.arange(f, dtype=np.int32),
      weights=np.ones(f, np.float32))
  return arrays, windows, stats


# ---------------------------------------------------------------- decoding
@dataclasses.dataclass
class Decoded:
  """The decoding of one question.

  Attributes:
    text: the prediction ('' = no answer).
    best_span: text of the best non-null span ('' if there is none).
    null_score_diff: null score - best span score (+inf without a span);
      v2 predicts '' when it exceeds the threshold.
    nbest: up to n_best_size (text, score) of distinct texts, best first.
    best_start: character offset of `best_span` in the context (-1 if none).
  """
  text: str
  best_span: str
  null_score_diff: float
  nbest: list[tuple[str, float]]
  best_start: int = -1


def decode(start_logits: np.ndarray, end_logits: np.ndarray,
           windows: Sequence[Window], examples: Sequence[ex.QAExample], *,
           n_best_size: int = 20, max_answer_length: int = 30,
           version_2_with_negative: bool = False,
           null_score_diff_threshold: float = 0.0,
           require_max_context: bool = True) -> dict[str, Decoded]:
  """Answer texts from start/end logits of every window.

  Args:
    start_logits, end_logits: float [F, T], row f for `windows[f]`.
    windows: the `Window`s of the features, any order; every example needs
      at least one.
    examples: the examples the windows index.
    n_best_size: start and end positions kept per window, and spans kept.
    max_answer_length: longest span in tokens.
    version_2_with_negative: allow the null answer.
    null_score_diff_threshold: predict '' when null - best span > this.
    require_max_context: only spans whose start token has its maximal
      context in the window (google-research/bert). When that window cuts
      the answer off (short windows, long answers) no window offers the
      answer; False keeps every window's spans.

  Returns:
    {guid: Decoded} for every example.
  """
  start_logits = np.asarray(start_logits, np.float64)
  end_logits = np.asarray(end_logits, np.float64)
  if start_logits.shape != end_logits.shape or len(start_logits) != len(windows):
    raise ValueError(f'{len(windows)} windows but start logits '
                     f'{start_logits.shape}, end logits {end_logits.shape}')
  # Per example, arrays per window of candidate (score, char start, end).
  spans = [[] for _ in examples]
  null = np.full(len(examples), np.inf)
  for w, s_row, e_row in zip(windows, start_logits, end_logits):
    i = w.example_index
    null[i] = min(null[i], s_row[0] + e_row[0])
    if w.length == 0:
      continue
    ps = s_row[w.passage_start:w.passage_start + w.length]
    pe = e_row[w.passage_start:w.passage_start + w.length]
    k = min(n_best_size, w.length)
    top_s = np.argsort(-ps, kind='stable')[:k]
    top_e = np.argsort(-pe, kind='stable')[:k]
    length = top_e[None, :] - top_s[:, None] + 1      # [k, k] span lengths
    ok = (length >= 1) & (length <= max_answer_length)
    if require_max_context:
      ok &= w.max_context[top_s][:, None]
    a, b = np.nonzero(ok)
    s, e = top_s[a], top_e[b]
    spans[i].append((ps[s] + pe[e], w.offsets[s, 0], w.offsets[e, 1]))
  out = {}
  for i, example in enumerate(examples):
    if not np.isfinite(null[i]):
      raise ValueError(f'example {example.guid!r} has no window')
    nbest, seen, best_start = [], set(), -1
    if spans[i]:
      scores, c0s, c1s = (np.concatenate(x) for x in zip(*spans[i]))
    else:
      scores = c0s = c1s = np.zeros(0)
    for j in np.argsort(-scores, kind='stable'):
      score = scores[j]
      text = example.context[int(c0s[j]):int(c1s[j])]
      if text in seen:
        continue
      seen.add(text)
      if not nbest:
        best_start = int(c0s[j])
      nbest.append((text, float(score)))
      if len(nbest) == n_best_size:
        break
    best_text, best_score = nbest[0] if nbest else ('', -np.inf)
    diff = float(null[i] - best_score)
    text = best_text
    if version_2_with_negative and diff > null_score_diff_threshold:
      text = ''
    out[example.guid] = Decoded(text, best_text, diff, nbest, best_start)
  return out


def gold_answers(examples: Sequence[ex.QAExample]) -> dict[str, list[str]]:
  """{guid: gold answer texts}; [] for unanswerable questions."""
  return {e.guid: [text for text, _ in e.answers] for e in examples}


def best_threshold(decoded: dict[str, Decoded],
                   gold: dict[str, list[str]]) -> dict[str, Optional[float]]:
  """The null threshold with the best F1 (and EM) on this set (v2).

  The rule is the one `decode` applies: '' iff null_score_diff > thr. Every
  distinct split of the sorted diffs is tried. An oracle on the set it is
  chosen on: use it to set `null_score_diff_threshold` for another set.

  Returns:
    best_f1, best_exact (percent) and best_f1_thresh, best_exact_thresh (a
    threshold giving that split; None if it would have to be infinite).
  """
  guids = list(gold)
  diffs = np.asarray([decoded[g].null_score_diff for g in guids])
  span = np.asarray([metrics_lib.squad_em_f1(decoded[g].best_span, gold[g])
                     for g in guids]).reshape(-1, 2)
  empty = np.asarray([metrics_lib.squad_em_f1('', gold[g]) for g in guids]
                     ).reshape(-1, 2)
  order = np.argsort(diffs, kind='stable')
  sorted_diffs = diffs[order]
  # totals[j]: the j smallest diffs answer with their span, the rest abstain.
  totals = empty.sum(0)[None, :] + np.concatenate(
      [np.zeros((1, 2)), np.cumsum((span - empty)[order], 0)])
  # Equal diffs switch together: only splits between distinct values exist.
  n = len(guids)
  valid = np.ones(n + 1, bool)
  valid[1:n] = sorted_diffs[:-1] < sorted_diffs[1:]
  out = {}
  for col, name in ((1, 'f1'), (0, 'exact')):
    j = int(np.argmax(np.where(valid, totals[:, col], -np.inf)))
    thresh = sorted_diffs[0] - 1.0 if j == 0 else sorted_diffs[j - 1]
    out[f'best_{name}'] = float(100.0 * totals[j, col] / n)
    out[f'best_{name}_thresh'] = float(thresh) if np.isfinite(thresh) else None
  return out


# ---------------------------------------------------------------- baselines
def empty_answer_baseline(examples: Sequence[ex.QAExample]) -> dict:
  """`squad_scores` of always abstaining ('' for every question)."""
  return metrics_lib.squad_scores({e.guid: '' for e in examples},
                                  gold_answers(examples))


_SENTENCE_END = re.compile(r'[.!?](?=\s|$)')


def first_sentence(context: str) -> str:
  """The context up to its first '.', '!' or '?' that ends a word."""
  m = _SENTENCE_END.search(context)
  return (context[:m.end()] if m else context).strip()


def first_sentence_baseline(examples: Sequence[ex.QAExample]) -> dict:
  """`squad_scores` of answering every question with the first sentence."""
  return metrics_lib.squad_scores(
      {e.guid: first_sentence(e.context) for e in examples},
      gold_answers(examples))


# ---------------------------------------------------------------- task
def qa_loss_spec(config, num_positions: int):
  """`finetune.loss_spec` for T-way position softmax, with clear refusals."""
  name = config.loss.name
  if name in _SIGMOID_LOSSES:
    raise ValueError(
        f'config.loss.name={name!r} is a sigmoid/multi-label loss; span QA '
        'classifies one position among T, so it needs a softmax loss (ce, '
        'focal, ghm, dsc, dice, tversky, weighted_ce with a per-position '
        'alpha list)')
  try:
    return finetune.loss_spec(config, num_positions, None)
  except ValueError as e:
    if 'class_counts' in str(e):
      raise ValueError(
          f'config.loss: {name!r} (as configured) needs training-set class '
          'counts, which span QA does not have: its classes are token '
          f'positions. Use a loss without count-derived weights. ({e})'
      ) from e
    raise


class SpanQATask(finetune.FinetuneTask):
  """SQuAD-style extractive QA with any softmax loss of `losses`."""

  def __init__(self, config):
    super().__init__(config)
    d = config.data
    if not d.train:
      raise ValueError('config.data.train must name a QA dataset (disfl_qa) or '
                       'a SQuAD JSON file')
    if d.get('sampling_q') is not None:
      raise ValueError('config.data.sampling_q (q-power class sampling) does '
                       'not apply to span QA')
    if config.get('eval_logit_adjustment_tau'):
      raise ValueError('config.eval_logit_adjustment_tau (post-hoc logit '
                       'adjustment by class prior) does not apply to span QA: '
                       'its classes are token positions, which have no prior')
    self.version_2 = bool(d.version_2_with_negative)
    self.tokenizer = finetune.tokenizer_for(config)
    self.train_ds = finetune.load_split(config, 'train')
    self.eval_ds = finetune.load_split(config, 'eval')
    for which, ds in (('train', self.train_ds), ('eval', self.eval_ds)):
      if ds.task_kind != 'qa':
        raise ValueError(f'config.data.{which}={ds.name!r} is a '
                         f'{ds.task_kind} dataset, not QA')
      # Unlabelled questions (prediction) are read as unanswerable.
      impossible = (sum(e.is_impossible for e in ds.examples)
                    - ds.report.notes.get('unlabelled', 0))
      if impossible and not self.version_2:
        raise ValueError(
            f'config.data.{which}={ds.name!r} has {impossible} unanswerable '
            'questions; set config.data.version_2_with_negative=True (SQuAD '
            'v2.0 mode)')
      guids = [e.guid for e in ds.examples]
      if len(set(guids)) != len(guids):
        raise ValueError(f'config.data.{which}={ds.name!r}: question ids are '
                         'not unique, so predictions cannot be keyed by id')
    self.bert_config = finetune.bert_config(config, self.tokenizer.vocab_size)
    self.model = BertForSpanQA(self.bert_config)
    t = d.max_seq_length
    self.loss = qa_loss_spec(config, t)
    self.stats, self.truncated = {}, {}
    self.train_features, _ = self._features(self.train_ds, 'train')
    self.eval_features, self.eval_windows = self._features(self.eval_ds, 'eval')
    # Windows of untokenisable answers (label -1) teach nothing true.
    keep = self.train_features['start_positions'] >= 0
    self.train_features = {k: v[keep] for k, v in self.train_features.items()
                           if k not in ('feature_index', 'example_index')}
    if not len(self.train_features['input_ids']):
      raise ValueError(f'config.data.train={d.train!r}: no training windows')
    logging.info('span QA (v%s): %d train / %d eval questions in %d / %d '
                 'windows of %d tokens, loss %s', '2.0' if self.version_2
                 else '1.1', len(self.train_ds), len(self.eval_ds),
                 len(self.train_features['input_ids']), len(self.eval_windows),
                 t, self.loss.name)

  def _features(self, ds, which):
    d = self.config.data
    arrays, windows, stats = build_features(
        self.tokenizer, ds.examples, max_seq_length=d.max_seq_length,
        doc_stride=d.doc_stride, max_query_length=d.max_query_length)
    self.stats[which] = stats
    self.truncated[which] = stats.questions_truncated
    if stats.questions_truncated:
      logging.info('%s/%s: %d of %d questions truncated to %d tokens',
                   ds.name, ds.split, stats.questions_truncated,
                   stats.examples, d.max_query_length)
    logging.info('%s/%s: %s', ds.name, ds.split, stats)
    if which == 'eval':
      # Eval labels are only for the eval loss: untokenisable answers count
      # as null there rather than break the gather.
      for k in ('start_positions', 'end_positions'):
        arrays[k] = np.maximum(arrays[k], 0)
    return arrays, windows

  # ---------------------------------------------------------------- model
  def _logits(self, params, batch, *, deterministic, rng=None):
    """-> (start, end) float32 [B, T], NEG_LOGIT outside passage and [CLS]."""
    return self._apply(
        params, batch, batch['input_ids'], batch['token_type_ids'],
        batch['attention_mask'], logit_mask=batch['logit_mask'],
        deterministic=deterministic,
        rngs=None if deterministic else {'dropout': rng})

  def init_params(self, rng, batch):
    return self.model.init(rng, batch['input_ids'], batch['token_type_ids'],
                           batch['attention_mask'],
                           logit_mask=batch['logit_mask'])['params']

  def init_loss_state(self):
    if not self.loss.stateful:
      return {}
    return {'start': self.loss.init_state(), 'end': self.loss.init_state()}

  def train_loss(self, params, batch, rng, loss_state):
    start, end = self._logits(params, batch, deterministic=False, rng=rng)
    w = batch['weights']
    stateful = self.loss.stateful
    start_loss, start_state = self.loss(
        start, batch['start_positions'], weights=w,
        state=loss_state['start'] if stateful else None)
    end_loss, end_state = self.loss(
        end, batch['end_positions'], weights=w,
        state=loss_state['end'] if stateful else None)
    new_state = {'start': start_state, 'end': end_state} if stateful else {}
    metrics = {
        'start_accuracy': base.mean_pair(
            jnp.argmax(start, -1) == batch['start_positions'], w),
        'end_accuracy': base.mean_pair(
            jnp.argmax(end, -1) == batch['end_positions'], w)}
    return (start_loss + end_loss) / 2, (metrics, new_state)

  def eval_step(self, params, batch):
    start, end = self._logits(params, batch, deterministic=True)
    w = batch['weights']
    (start_sum, count), (end_sum, _) = (
        base.nll_pair(start, batch['start_positions'], w),
        base.nll_pair(end, batch['end_positions'], w))
    metrics = {
        'ce_loss': ((start_sum + end_sum) / 2, count),
        'start_accuracy': base.mean_pair(
            jnp.argmax(start, -1) == batch['start_positions'], w),
        'end_accuracy': base.mean_pair(
            jnp.argmax(end, -1) == batch['end_positions'], w)}
    return metrics, {'start_logits': start, 'end_logits': end,
                     'feature_index': batch['feature_index'], 'weights': w}

  def _window_logits(self, outputs):
    """Gathered eval outputs -> start, end logits float32 [windows, T]."""
    keep = outputs['weights'] > 0
    index = outputs['feature_index'][keep]
    start = np.zeros((len(self.eval_windows), outputs['start_logits'].shape[1]),
                     np.float32)
    end = np.zeros_like(start)
    start[index] = outputs['start_logits'][keep]
    end[index] = outputs['end_logits'][keep]
    seen = np.zeros(len(self.eval_windows), bool)
    seen[index] = True
    if not seen.all():
      raise ValueError(f'eval outputs cover {seen.sum()} of '
                       f'{len(seen)} windows')
    return start, end

  def prediction_rows(self, outputs) -> list[dict]:
    """`{guid, answer, score, start, end}` per eval question, in order.

    `score` is the answer's start + end logit (the null score, [CLS]'s, when
    the answer is ''); `start`/`end` its character offsets in the context
    (end exclusive), None for ''.
    """
    decoded = self.decode(*self._window_logits(outputs))
    rows = []
    for e in self.eval_ds.examples:
      d = decoded[e.guid]
      best = d.nbest[0][1] if d.nbest else float('-inf')
      if d.text:
        score, start, end = best, d.best_start, d.best_start + len(d.text)
      else:
        score, start, end = best + d.null_score_diff, None, None
      rows.append(dict(guid=e.guid, answer=d.text, score=float(score),
                       start=start, end=end))
    return rows

  def summarize_eval(self, metrics, outputs):
    decoded = self.decode(*self._window_logits(outputs))
    gold = gold_answers(self.eval_ds.examples)
    scores = metrics_lib.squad_scores(
        {g: dcd.text for g, dcd in decoded.items()}, gold)
    out = dict(metrics)
    out.update(scores)
    if self.version_2:
      out.update(best_threshold(decoded, gold))
    out['eval_windows'] = len(self.eval_windows)
    out['questions_truncated'] = self.truncated['eval']
    out['report'] = self._report(out)
    out['_predictions'] = [
        dict(guid=e.guid, question=e.question,
             prediction=decoded[e.guid].text, gold=gold[e.guid])
        for e in self.eval_ds.examples]
    return out

  def decode(self, start_logits, end_logits) -> dict[str, Decoded]:
    c = self.config
    return decode(start_logits, end_logits, self.eval_windows,
                  self.eval_ds.examples, n_best_size=c.n_best_size,
                  max_answer_length=c.max_answer_length,
                  version_2_with_negative=self.version_2,
                  null_score_diff_threshold=c.null_score_diff_threshold)

  def _report(self, s) -> str:
    lines = [f"span QA (SQuAD v{'2.0' if self.version_2 else '1.1'}): "
             f"EM {s['exact_match']:.2f}  F1 {s['f1']:.2f}  over "
             f"{s['total']} questions ({s['eval_windows']} windows, "
             f"{s['questions_truncated']} questions truncated)"]
    for part in ('has_ans', 'no_ans'):
      if s[f'{part}_total']:
        lines.append(f"  {part:8s} EM {s[f'{part}_exact']:.2f}  F1 "
                     f"{s[f'{part}_f1']:.2f}  ({s[f'{part}_total']} questions)")
    if self.version_2:
      thresh = s['best_f1_thresh']
      lines.append(f"  best null threshold on this set: "
                   f"{'inf' if thresh is None else f'{thresh:.3f}'} -> F1 "
                   f"{s['best_f1']:.2f} (used: "
                   f"{self.config.null_score_diff_threshold})")
    return '\n'.join(lines) + '\n'
