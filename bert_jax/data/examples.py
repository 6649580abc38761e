"""Example records produced by the fine-tuning data readers.

All examples are frozen dataclasses so that a dataset, once read and
validated, cannot be changed by accident downstream (e.g. by a tokenisation
step that edits a shared list). Sequences are stored as tuples for the same
reason; lists given to the constructors are converted.

Each class checks its own invariants in `__post_init__` and raises
`ValueError` when they do not hold. The readers check the same conditions
first and raise a `readers.DataError` naming the file, line and field, so the
checks here only fire when an example is built by hand.

Task kinds:
  * `ClassificationExample`: single text or text pair with a string label.
  * `MultiLabelExample`: single text or text pair with a set of labels.
  * `TaggingExample`: one tag per word (NER, POS, chunking, Chinese
    character-level NER where each "word" is one character).
  * `RelationExample`: a sentence as words with two entity spans given as
    word offsets, half-open `[start, end)`.
  * `QAExample`: extractive QA; answers are `(text, char_start)` pairs with
    `context[char_start:char_start + len(text)] == text`.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

TASK_KINDS = ('classification', 'multilabel', 'tagging', 'relation', 'qa')


def _nonempty_str(value, what: str) -> None:
  if not isinstance(value, str):
    raise ValueError(f'{what} must be a str, got {type(value).__name__}')
  if not value.strip():
    raise ValueError(f'{what} is empty')


@dataclasses.dataclass(frozen=True)
class ClassificationExample:
  """A text (or text pair) with an optional label.

  Attributes:
    guid: identifier unique within its dataset (e.g. `spam-1/00042`).
    text: the first segment; never empty.
    text_pair: the second segment for pair tasks (NLI, BoolQ), else None.
    label: the label name as a string, or None for unlabelled data. Labels
      are strings, not ids, so a label set can be reordered or extended
      without rewriting examples; `Dataset.label_names` fixes the id order.
  """
  guid: str
  text: str
  text_pair: Optional[str] = None
  label: Optional[str] = None

  def __post_init__(self):
    _nonempty_str(self.text, 'text')
    if self.text_pair is not None:
      _nonempty_str(self.text_pair, 'text_pair')
    if self.label is not None and not isinstance(self.label, str):
      raise ValueError(f'label must be a str or None, got {self.label!r}')


@dataclasses.dataclass(frozen=True)
class MultiLabelExample:
  """A text (or text pair) with any number of labels (multi-label).

  Attributes:
    guid: identifier unique within its dataset.
    text: the first segment; never empty.
    text_pair: the second segment for pair inputs, else None.
    labels: the label names, sorted and distinct; `()` means "none of the
      labels applies" (a valid target in most multi-label sets); None means
      unlabelled.
  """
  guid: str
  text: str
  text_pair: Optional[str] = None
  labels: Optional[tuple[str, ...]] = None

  def __post_init__(self):
    _nonempty_str(self.text, 'text')
    if self.text_pair is not None:
      _nonempty_str(self.text_pair, 'text_pair')
    if self.labels is not None:
      labels = tuple(self.labels)
      for label in labels:
        _nonempty_str(label, 'label')
      if len(set(labels)) != len(labels):
        raise ValueError(f'labels has duplicates: {labels}')
      object.__setattr__(self, 'labels', tuple(sorted(labels)))


@dataclasses.dataclass(frozen=True)
class TaggingExample:
  """A sentence as words with one tag per word.

  Attributes:
    guid: identifier unique within its dataset.
    words: the tokens (for MSRA, single characters).
    tags: one tag per word, or None for unlabelled data.
  """
  guid: str
  words: tuple[str, ...]
  tags: Optional[tuple[str, ...]] = None

  def __post_init__(self):
    object.__setattr__(self, 'words', tuple(self.words))
    if not self.words:
      raise ValueError('a tagging example needs at least one word')
    # map() keeps this cheap: MSRA builds 50k examples of ~45 characters.
    if (not set(map(type, self.words)) <= {str} or '' in self.words
        or any(map(str.isspace, self.words))):
      raise ValueError('words must be non-empty strings')
    if self.tags is not None:
      object.__setattr__(self, 'tags', tuple(self.tags))
      if len(self.tags) != len(self.words):
        raise ValueError(f'{len(self.words)} words but {len(self.tags)} tags')


@dataclasses.dataclass(frozen=True)
class RelationExample:
  """A sentence with two marked entities and the relation between them.

  Entity spans are WORD offsets, half-open: `words[head[0]:head[1]]` are the
  words of the head entity. Word offsets (rather than character offsets) were
  chosen because the relation corpora are word-based and a BERT relation head
  marks entities at word-piece boundaries, which word offsets map onto
  directly.

  For SemEval-2010 Task 8, `head` is the `<e1>` entity and `tail` the `<e2>`
  entity as marked in the text; the direction of the relation stays in the
  label (`Cause-Effect(e2,e1)`), as in the official scorer.

  Attributes:
    guid: identifier unique within its dataset.
    words: the sentence tokens with entity markers removed.
    head: `(start, end)` word span of the first entity.
    tail: `(start, end)` word span of the second entity.
    label: the relation name, or None for unlabelled data.
  """
  guid: str
  words: tuple[str, ...]
  head: tuple[int, int]
  tail: tuple[int, int]
  label: Optional[str] = None

  def __post_init__(self):
    object.__setattr__(self, 'words', tuple(self.words))
    object.__setattr__(self, 'head', tuple(self.head))
    object.__setattr__(self, 'tail', tuple(self.tail))
    if not self.words:
      raise ValueError('a relation example needs at least one word')
    for name, span in (('head', self.head), ('tail', self.tail)):
      if (len(span) != 2 or not all(isinstance(i, int) for i in span)
          or not 0 <= span[0] < span[1] <= len(self.words)):
        raise ValueError(
            f'{name} span {span} is not a non-empty [start, end) range within '
            f'{len(self.words)} words')
    if self.label is not None and not isinstance(self.label, str):
      raise ValueError(f'label must be a str or None, got {self.label!r}')


@dataclasses.dataclass(frozen=True)
class QAExample:
  """An extractive question-answering example (SQuAD style).

  Attributes:
    guid: the question id.
    question: the question text.
    context: the passage the answers are taken from.
    answers: `(text, char_start)` pairs; each `text` is exactly
      `context[char_start:char_start + len(text)]`. Several answers are kept
      for evaluation sets that list alternatives.
    is_impossible: True when the question has no answer in the context
      (SQuAD 2.0); then `answers` is empty.
  """
  guid: str
  question: str
  context: str
  answers: tuple[tuple[str, int], ...] = ()
  is_impossible: bool = False

  def __post_init__(self):
    _nonempty_str(self.question, 'question')
    _nonempty_str(self.context, 'context')
    answers = tuple((a[0], a[1]) for a in self.answers)
    object.__setattr__(self, 'answers', answers)
    if self.is_impossible and answers:
      raise ValueError('an impossible question cannot have answers')
    if not self.is_impossible and not answers:
      raise ValueError('an answerable question needs at least one answer')
    for text, start in answers:
      _nonempty_str(text, 'answer text')
      if self.context[start:start + len(text)] != text or start < 0:
        raise ValueError(f'answer {text!r} is not at offset {start} of the '
                         'context')
