"""A source's bytes (a file, or bytes given) and its lines: split on
b'\\n' and decoded line by line, so that a bad byte is reported on
its own line.
"""

from __future__ import annotations

import codecs
import collections
import itertools
import os
from typing import Iterator, NamedTuple, Optional

from bert_jax.data.readers.errors import DataError, PathLike


def source_name(path: PathLike) -> str:
  """The name errors and reports give a file: its path as given."""
  return os.fspath(path)


def read_bytes(path: PathLike, data: Optional[bytes]) -> bytes:
  """`data` when given, else the bytes of `path`; an unreadable file is a
  `DataError` naming it."""
  if data is not None:
    return data
  try:
    with open(path, 'rb') as f:
      return f.read()
  except OSError as e:
    raise DataError(path, None, None, f'cannot read file: {e.strerror or e}',
                    reason='cannot read file') from e


class Line(NamedTuple):
  """One line of a source, decoded (or not: see `error`)."""
  # A tuple rather than a dataclass: MSRA has 2.2M lines and construction
  # cost matters.
  number: int           # 1-based
  text: str             # decoded, line end included
  error: Optional[str]  # why decoding failed, else None


def iter_lines(raw: bytes, encoding: str = 'utf-8',
               fallback_encoding: Optional[str] = None,
               notes: Optional[collections.Counter] = None,
               keepends: bool = True,
               plain: bool = False) -> Iterator[Line]:
  """Splits bytes on b'\\n' and decodes each line.

  The common case (a file that decodes as a whole) is decoded once. Lines
  that do not decode are yielded with `error` set and the bad bytes
  replaced, so that the reader can drop exactly the record they belong to;
  with `fallback_encoding` they are decoded with it instead and counted in
  `notes`. With `keepends=False` the '\\n' is dropped (a '\\r' before it
  is kept). With `plain=True` the fast path yields plain
  `(number, text, error)` tuples, which are cheaper to make.
  """
  if (raw.startswith(codecs.BOM_UTF8) and
      codecs.lookup(encoding).name == 'utf-8'):
    raw = raw[len(codecs.BOM_UTF8):]
  try:
    text = raw.decode(encoding)
  except UnicodeDecodeError:
    text = None
  if text is not None:
    pieces = text.split('\n')
    if pieces[-1] == '':
      pieces.pop()  # the file ends with a newline: no extra empty line
    if keepends:
      last = len(pieces) - 1
      ends_with_newline = text.endswith('\n')
      pieces = [p + '\n' if i < last or ends_with_newline else p
                for i, p in enumerate(pieces)]
    # zip/count/repeat run in C: this path carries the 2.2M-line MSRA file.
    lines = zip(itertools.count(1), pieces, itertools.repeat(None))
    return lines if plain else map(Line._make, lines)
  return _iter_lines_slow(raw, encoding, fallback_encoding, notes, keepends)


def _iter_lines_slow(raw, encoding, fallback_encoding, notes, keepends):
  pieces = raw.split(b'\n')
  if pieces and pieces[-1] == b'':
    pieces.pop()
  for number, piece in enumerate(pieces, 1):
    ending = ''
    if keepends and (number < len(pieces) or raw.endswith(b'\n')):
      ending = '\n'
    try:
      yield Line(number, piece.decode(encoding) + ending, None)
    except UnicodeDecodeError as e:
      if fallback_encoding is not None:
        try:
          decoded = piece.decode(fallback_encoding)
        except UnicodeDecodeError:
          pass
        else:
          if notes is not None:
            notes[f'lines decoded as {fallback_encoding}'] += 1
          yield Line(number, decoded + ending, None)
          continue
      bad = piece[e.start:e.start + 1].hex()
      yield Line(number, piece.decode(encoding, 'replace') + ending,
                 f'invalid {encoding} (byte 0x{bad} at column {e.start + 1})')


def strip_eol(text: str) -> str:
  """`text` without its line end ('\\n' or '\\r\\n')."""
  return text.rstrip('\r\n')


def encoding_error(source: str, line: Line) -> DataError:
  """The `DataError` of a `Line` that did not decode (`line.error` set)."""
  return DataError(source, line.number, None, line.error,
                   reason=f'invalid {line.error.split()[1]}')
