"""CoNLL column files."""

from __future__ import annotations

import os
from typing import Optional, Sequence

from bert_jax.data import examples as ex
from bert_jax.data.readers.errors import (Collector, ConfigError, DataError,
                                          PathLike, ReadReport)
from bert_jax.data.readers.lines import (Line, encoding_error, iter_lines,
                                         read_bytes, source_name)


def read_conll(
    path: PathLike, *,
    data: Optional[bytes] = None,
    token_column: int = 0,
    tag_column: Optional[int] = -1,
    num_columns: Optional[int] = None,
    delimiter: Optional[str] = None,
    docstart: Optional[str] = '-DOCSTART-',
    labels: Optional[Sequence[str]] = None,
    on_error: str = 'raise',
    max_examples: Optional[int] = None,
    encoding: str = 'utf-8',
) -> tuple[list[ex.TaggingExample], ReadReport]:
  """Reads a CoNLL-style column file: one token per line, blank line between
  sentences.

  Covers CoNLL-2003 (`token POS chunk NER`, `token_column=0,
  tag_column=3` or -1) and MSRA (`char TAG`, two columns, CRLF).

  Args:
    token_column, tag_column: 0-based (negative counts from the end) column
      indices. `tag_column=None` reads untagged text.
    num_columns: the number of columns every token line must have; None
      takes it from the first token line. A line with another number of
      columns is an error naming that line.
    delimiter: column separator; None splits on runs of whitespace. Use
      '\\t' when tokens may contain spaces.
    docstart: lines starting with this mark document boundaries; they end
      the current sentence and are not tokens (counted in
      `report.notes['documents']`). None disables the check.
    labels: the tag set; a tag outside it is an error naming the line.
    Others as for `read_delimited`.

  A record is a sentence: in skip mode a sentence with any bad line is
  dropped as a whole, because a sentence with a missing token would shift
  the entity spans. The error names the first bad line.
  """
  source = source_name(path)
  col = Collector(source, on_error, labels, max_examples)
  raw = read_bytes(path, data)
  parser = _ConllSentences(col, os.path.basename(source), token_column,
                           tag_column, num_columns, delimiter)
  sentence: list[str] = []
  start = 0
  bad: Optional[Line] = None   # first undecodable line of the sentence
  for number, text, error in iter_lines(raw, encoding,
                                        notes=col.report.notes,
                                        keepends=False, plain=True):
    if (text and not text.isspace() and
        (docstart is None or not text.startswith(docstart))):
      if not sentence:
        start = number
      sentence.append(text)
      if error and bad is None:
        bad = Line(number, text, error)
      continue
    if sentence:
      if col.full:
        break
      parser.add(sentence, start, bad)
      sentence, bad = [], None
    if text and not text.isspace():
      col.report.notes['documents'] += 1
  else:
    if sentence and not col.full:
      parser.add(sentence, start, bad)
  return col.finish()


class _ConllSentences:
  """Validates CoNLL sentences and adds them to a collector.

  The common case is checked with list comprehensions over the whole
  sentence; only when something is wrong are the lines walked one by one,
  so that the error names the first bad line.
  """

  def __init__(self, col, stem, token_column, tag_column, num_columns,
               delimiter):
    self.col = col
    self.stem = stem
    self.token_column = token_column
    self.tag_column = tag_column
    self.columns = num_columns
    self.delimiter = delimiter
    self.checked = False
    # Raw tag -> validated tag; new tags go through `col.label` once.
    self.known: dict[str, str] = {}

  def add(self, lines: list[str], start: int, bad: Optional[Line]) -> None:
    col = self.col
    try:
      example = self._fast(lines, start) if bad is None else None
      if example is None:
        # Either a line is bad (this raises the first error) or the sentence
        # has tags not seen before (this validates and records them).
        self._slow(lines, start, bad)
        example = self._fast(lines, start)
        assert example is not None, 'CoNLL fast and slow checks disagree'

    except DataError as e:
      if isinstance(e, ConfigError):
        raise
      col.fail(e)
      return
    col.add(example)

  def _split(self, text: str) -> list[str]:
    if self.delimiter is None:
      return text.split()
    return text.rstrip('\r').split(self.delimiter)

  def _check_columns(self, line: int) -> None:
    if self.checked:
      return
    for what, index in (('token', self.token_column),
                        ('tag', self.tag_column)):
      if index is not None and not -self.columns <= index < self.columns:
        # A setting that does not fit the file: raised in both modes.
        raise ConfigError(self.col.source, line, what,
                          f'column {index} does not exist in a '
                          f'{self.columns}-column file')
    self.checked = True

  def _fast(self, lines, start):
    """The sentence as an example, or None when any line is bad."""
    if self.delimiter is None:
      cells = [t.split() for t in lines]
    else:
      cells = [t.rstrip('\r').split(self.delimiter) for t in lines]
    if self.columns is None:
      self.columns = len(cells[0])
    self._check_columns(start)
    if set(map(len, cells)) != {self.columns}:
      return None
    words = [c[self.token_column] for c in cells]
    if '' in words or any(map(str.isspace, words)):
      return None
    tags = None
    if self.tag_column is not None:
      raw_tags = [c[self.tag_column] for c in cells]
      known = self.known
      if not known.keys() >= set(raw_tags):
        return None
      tags = tuple([known[t] for t in raw_tags])
    return ex.TaggingExample(f'{self.stem}:{start}', tuple(words), tags)

  def _slow(self, lines, start, bad):
    source = self.col.source
    for number, text in enumerate(lines, start):
      if bad is not None and bad.number == number:
        raise encoding_error(source, bad)
      cells = self._split(text)
      if self.columns is None:
        self.columns = len(cells)
      if len(cells) != self.columns:
        raise DataError(source, number, None,
                        f'expected {self.columns} columns, got {len(cells)}',
                        reason='wrong number of columns')
      self._check_columns(number)
      token = cells[self.token_column]
      if not token or token.isspace():
        raise DataError(source, number, 'token', 'empty token',
                        reason="field 'token': empty")
      if self.tag_column is not None:
        tag = cells[self.tag_column]
        if tag not in self.known:
          self.known[tag] = self.col.label(tag, number, 'tag')
