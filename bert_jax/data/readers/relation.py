"""Relations: SemEval-2010 Task 8 and JSONL with entity spans."""

from __future__ import annotations

import os
import re
from typing import Iterator, Optional, Sequence

from bert_jax.data import examples as ex
from bert_jax.data.readers.errors import (Collector, DataError, PathLike,
                                          ReadReport, describe)
from bert_jax.data.readers.jsonl import iter_json_objects, require_field
from bert_jax.data.readers.lines import (Line, encoding_error, iter_lines,
                                         read_bytes, source_name, strip_eol)


_MARKER = re.compile(r'</?e[12]>')
_SEMEVAL_LABEL = re.compile(r'[A-Za-z][\w-]*(\((e1,e2|e2,e1)\))?')


def _blocks(col: Collector, raw: bytes, encoding: str
            ) -> Iterator[list[Line]]:
  """Groups lines into blank-line separated blocks."""
  block: list[Line] = []
  for line in iter_lines(raw, encoding, notes=col.report.notes):
    if line.text.strip():
      block.append(line)
    elif block:
      yield block
      block = []
  if block:
    yield block


def parse_marked_sentence(sentence: str, source: str = '<data>',
                          line: Optional[int] = None
                          ) -> tuple[tuple[str, ...], tuple[int, int],
                                     tuple[int, int]]:
  """Splits a `<e1>..</e1> .. <e2>..</e2>` sentence into words and spans.

  Words are the whitespace-separated tokens with the markers taken out
  (a marker inside a word splits it, e.g. `anti<e1>body</e1>` gives `anti`,
  `body`). Returns `(words, e1_span, e2_span)` with half-open word spans.
  Raises DataError when a marker is missing, doubled, out of order, when
  the entities overlap or when an entity is empty.
  """
  field = 'sentence'
  found = _MARKER.findall(sentence)
  for marker in ('<e1>', '</e1>', '<e2>', '</e2>'):
    count = found.count(marker)
    if count != 1:
      what = 'missing' if count == 0 else f'appears {count} times'
      raise DataError(source, line, field, f'entity marker {marker} {what}',
                      reason='bad entity markers')
  words: list[str] = []
  position: dict[str, int] = {}
  for piece in re.split(r'(</?e[12]>)', sentence):
    if _MARKER.fullmatch(piece):
      position[piece] = len(words)
    else:
      words.extend(piece.split())
  order = found  # markers in text order
  for e in ('e1', 'e2'):
    if order.index(f'<{e}>') > order.index(f'</{e}>'):
      raise DataError(source, line, field, f'</{e}> comes before <{e}>',
                      reason='bad entity markers')
  e1 = (position['<e1>'], position['</e1>'])
  e2 = (position['<e2>'], position['</e2>'])
  for name, (s, e) in (('e1', e1), ('e2', e2)):
    if e <= s:
      raise DataError(source, line, field, f'entity {name} is empty',
                      reason='bad entity markers')
  first, second = sorted([('e1', order.index('<e1>'), order.index('</e1>')),
                          ('e2', order.index('<e2>'), order.index('</e2>'))],
                         key=lambda t: t[1])
  if second[1] < first[2]:
    raise DataError(source, line, field, 'entities e1 and e2 overlap',
                    reason='bad entity markers')
  if not words:
    raise DataError(source, line, field, 'empty sentence',
                    reason=f'field {field!r}: empty text')
  return tuple(words), e1, e2


def read_semeval(
    path: PathLike, *,
    data: Optional[bytes] = None,
    labelled: bool = True,
    labels: Optional[Sequence[str]] = None,
    on_error: str = 'raise',
    max_examples: Optional[int] = None,
    encoding: str = 'utf-8',
) -> tuple[list[ex.RelationExample], ReadReport]:
  """Reads SemEval-2010 Task 8 files.

  Labelled format (TRAIN_FILE.TXT, TEST_FILE_FULL.TXT): blocks separated by
  a blank line, each

      8001<TAB>"The <e1>author</e1> of a keygen uses a <e2>disassembler</e2>"
      Instrument-Agency(e2,e1)
      Comment:

  The label keeps its direction, giving the usual 19 classes; head/tail are
  e1/e2. With `labelled=False` (TEST_FILE.txt), every non-blank line is a
  sentence line. A missing or doubled entity marker, a bad label line or an
  unexpected extra line is an error naming the line.
  """
  source = source_name(path)
  col = Collector(source, on_error, labels, max_examples)
  raw = read_bytes(path, data)
  if labelled:
    records = _blocks(col, raw, encoding)
  else:
    records = ([l] for l in iter_lines(raw, encoding, notes=col.report.notes)
               if l.text.strip())
  for block in records:
    if col.full:
      break
    try:
      col.add(_semeval_record(col, source, block, labelled))
    except DataError as e:
      col.fail(e)
  return col.finish()


def _semeval_record(col, source, block, labelled):
  for line in block:
    if line.error:
      raise encoding_error(source, line)
  head_line = block[0]
  text = strip_eol(head_line.text)
  if '\t' not in text:
    raise DataError(source, head_line.number, 'sentence',
                    'expected "<id><TAB>\\"<sentence>\\""',
                    reason='bad sentence line')
  sid, sentence = text.split('\t', 1)
  guid = col.guid(sid, head_line.number, 'id', register=False)
  sentence = sentence.strip()
  if len(sentence) >= 2 and sentence[0] == sentence[-1] == '"':
    sentence = sentence[1:-1]
  words, e1, e2 = parse_marked_sentence(sentence, source, head_line.number)
  label = None
  if labelled:
    if len(block) < 2:
      raise DataError(source, head_line.number, 'relation',
                      'missing relation line after the sentence',
                      reason="field 'relation': missing")
    label_line = block[1]
    value = strip_eol(label_line.text).strip()
    if not _SEMEVAL_LABEL.fullmatch(value):
      raise DataError(source, label_line.number, 'relation',
                      f'not a relation label: {value[:40]!r}',
                      reason="field 'relation': not a label")
    label = col.label(value, label_line.number, 'relation')
    for extra in block[2:]:
      if not extra.text.strip().startswith('Comment'):
        raise DataError(source, extra.number, None,
                        'unexpected line (expected "Comment:" or a blank '
                        'line)', reason='unexpected line')
  elif len(block) > 1:
    raise DataError(source, block[1].number, None, 'unexpected line',
                    reason='unexpected line')
  col.guid(sid, head_line.number, 'id')
  return ex.RelationExample(guid, words, e1, e2, label)


def _span(source, line, field, value, num_words, end_inclusive):
  if isinstance(value, dict):
    if 'start' not in value or 'end' not in value:
      raise DataError(source, line, field,
                      "expected {'start': s, 'end': e} or [s, e]",
                      reason=f'field {field!r}: bad span')
    value = [value['start'], value['end']]
  if (not isinstance(value, (list, tuple)) or len(value) != 2 or
      not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
    raise DataError(source, line, field,
                    f'expected a [start, end] pair of integers, got '
                    f'{describe(value)}', reason=f'field {field!r}: bad span')
  start, end = value
  if end_inclusive:
    end += 1
  if not 0 <= start < end <= num_words:
    raise DataError(source, line, field,
                    f'span {list(value)} is not a non-empty range within '
                    f'{num_words} words', reason=f'field {field!r}: bad span')
  return (start, end)


def read_relation_jsonl(
    path: PathLike, *,
    data: Optional[bytes] = None,
    words_field: str = 'tokens',
    head_field: str = 'head',
    tail_field: str = 'tail',
    label_field: Optional[str] = 'relation',
    guid_field: Optional[str] = None,
    span_end_inclusive: bool = False,
    labels: Optional[Sequence[str]] = None,
    on_error: str = 'raise',
    max_examples: Optional[int] = None,
    encoding: str = 'utf-8',
) -> tuple[list[ex.RelationExample], ReadReport]:
  """Reads relation examples from JSON lines with word-offset entity spans.

  Each line holds a list of words and two spans, e.g.
  `{"tokens": [...], "head": [3, 5], "tail": {"start": 7, "end": 8},
  "relation": "founded_by"}`. Spans are half-open word offsets unless
  `span_end_inclusive` (TACRED-style `subj_end`).
  """
  source = source_name(path)
  col = Collector(source, on_error, labels, max_examples)
  raw = read_bytes(path, data)
  for line, obj in iter_json_objects(col, raw, encoding):
    try:
      words = require_field(source, obj, words_field, line)
      if (not isinstance(words, list) or not words or
          not all(isinstance(w, str) and w.strip() for w in words)):
        raise DataError(source, line, words_field,
                        'expected a non-empty list of non-empty strings',
                        reason=f'field {words_field!r}: bad words')
      head = _span(source, line, head_field,
                   require_field(source, obj, head_field, line), len(words),
                   span_end_inclusive)
      tail = _span(source, line, tail_field,
                   require_field(source, obj, tail_field, line), len(words),
                   span_end_inclusive)
      label = None
      if label_field is not None:
        label = col.label(require_field(source, obj, label_field, line), line,
                          label_field)
      if guid_field is not None:
        guid = col.guid(require_field(source, obj, guid_field, line), line,
                        guid_field)
      else:
        guid = f'{os.path.basename(source)}:{line}'
      col.add(ex.RelationExample(guid, words, head, tail, label))
    except DataError as e:
      col.fail(e)
  return col.finish()
