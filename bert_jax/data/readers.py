"""Readers for fine-tuning data: delimited, JSONL, CoNLL, SemEval, SQuAD, tfds.

Multi-label variants (`read_multilabel_jsonl`, `read_multilabel_delimited`)
read a list of labels per example.

Every reader returns `(examples, report)`:
  * `examples`: a list of frozen example records (see `examples.py`);
  * `report`: a `ReadReport` counting what was read and what was skipped.

Bad input is never trained on silently. With `on_error='raise'` (the
default) the first bad record raises a `DataError` whose message names the
file, the line and the field, e.g.

  drugsComTrain.tsv:17: field 'rating': unknown label 'postive' (known:
  negative, neutral, positive)

With `on_error='skip'` the bad record is dropped, counted in
`report.skipped` and `report.skipped_reasons`, and the first few errors are
kept in `report.errors` so they can be printed. For every reader,
`report.read + report.skipped` is the number of records in the input (a
record is a line for JSONL and delimited files, a sentence for CoNLL, a
sentence block for SemEval and a question for SQuAD). Errors in the
configuration (a column name that is not in the header) and errors that make
the whole input unreadable (a SQuAD file that is not JSON, an empty file)
raise in both modes, since there is no record to skip.

Labels: a reader takes an optional `labels` list. A label not in it is a
`DataError` naming the file, line and field. Without one, the labels seen are
collected and sorted (numerically when all of them are integers, else as
strings) into `report.labels`, so label ids do not depend on file order.
Label values have surrounding whitespace removed; texts are kept as they are
but a text that is empty or only whitespace is a `DataError`.

Encoding: files are read as bytes and decoded line by line, so an invalid
UTF-8 byte is reported on the line where it occurs (and, in skip mode, drops
only the record containing it). Only ASCII-compatible encodings are
supported, because lines are split on the byte `\\n`. `\\r\\n` line ends are
accepted everywhere.
"""

from __future__ import annotations

import codecs
import collections
import csv
import dataclasses
import importlib
import itertools
import json
import os
import pathlib
import re
from typing import (Any, Callable, Iterator, NamedTuple, Optional, Sequence,
                    Union)

from bert_jax.data import examples as ex

PathLike = Union[str, os.PathLike]
FieldRef = Union[str, int]

# How many skipped errors a report keeps verbatim (the rest are only counted).
MAX_KEPT_ERRORS = 20


class DataError(ValueError):
  """Bad input data, located by file, line and field.

  Attributes:
    path: the file (or source name) the record came from.
    line: 1-based line number where the bad record starts (for tfds sources,
      the 1-based record number), or None when the problem concerns the
      whole input.
    field: the field or column at fault, or None.
    message: what is wrong.
    reason: a short category used to count skips (e.g. 'unknown label'),
      without the record-specific details.
  """

  def __init__(self, path: Optional[PathLike], line: Optional[int],
               field: Optional[FieldRef], message: str, *,
               reason: Optional[str] = None):
    self.path = None if path is None else str(path)
    self.line = line
    self.field = field
    self.message = message
    self.reason = reason or message
    super().__init__(self._format())

  def _format(self) -> str:
    location = self.path if self.path is not None else '<data>'
    if self.line is not None:
      location += f':{self.line}'
    parts = [location]
    if self.field is not None:
      parts.append(f'field {self.field!r}')
    parts.append(self.message)
    return ': '.join(parts)

  def __reduce__(self):
    # The default exception pickling passes only the message to __init__;
    # errors are pickled when readers run in worker processes.
    return (_rebuild_data_error,
            (self.path, self.line, self.field, self.message, self.reason))


def _rebuild_data_error(path, line, field, message, reason):
  return DataError(path, line, field, message, reason=reason)


class ConfigError(DataError):
  """The reader's settings do not fit the input (e.g. a column name that is
  not in the header). Raised in both `on_error` modes: no record is at fault,
  so there is nothing to skip."""

  def __reduce__(self):
    return (ConfigError, (self.path, self.line, self.field, self.message))


@dataclasses.dataclass
class ReadReport:
  """What a reader did with its input.

  Attributes:
    source: the file or source name.
    read: records turned into examples.
    skipped: records dropped with `on_error='skip'`.
    skipped_reasons: skip counts by short reason, e.g.
      `{"field 'label': unknown label": 3}`.
    truncated: True when reading stopped at `max_examples` before the end.
    notes: counted things that were kept but are worth knowing, e.g.
      `{'lines decoded as cp1252': 1, 'unlabelled': 3245}`.
    labels: the label set: the `labels` given to the reader, else the labels
      seen, sorted.
    errors: the first `MAX_KEPT_ERRORS` skipped errors, for printing.
  """
  source: str
  read: int = 0
  skipped: int = 0
  skipped_reasons: collections.Counter = dataclasses.field(
      default_factory=collections.Counter)
  truncated: bool = False
  notes: collections.Counter = dataclasses.field(
      default_factory=collections.Counter)
  labels: tuple[str, ...] = ()
  errors: list[DataError] = dataclasses.field(default_factory=list)

  @property
  def records(self) -> int:
    """Records seen: every one was either read or skipped."""
    return self.read + self.skipped

  def summary(self) -> str:
    text = f'{self.source}: read {self.read}, skipped {self.skipped}'
    if self.skipped_reasons:
      reasons = ', '.join(f'{r}: {n}'
                          for r, n in self.skipped_reasons.most_common())
      text += f' ({reasons})'
    if self.truncated:
      text += ', truncated at max_examples'
    if self.notes:
      text += '; notes: ' + ', '.join(f'{k}: {v}'
                                      for k, v in sorted(self.notes.items()))
    return text


def merge_reports(source: str, reports: Sequence[ReadReport],
                  labels: Sequence[str] = ()) -> ReadReport:
  """Sums the counts of several reports (e.g. one per file of a corpus)."""
  merged = ReadReport(source, labels=tuple(labels))
  for r in reports:
    merged.read += r.read
    merged.skipped += r.skipped
    merged.skipped_reasons.update(r.skipped_reasons)
    merged.notes.update(r.notes)
    merged.truncated = merged.truncated or r.truncated
    room = MAX_KEPT_ERRORS - len(merged.errors)
    merged.errors.extend(r.errors[:max(room, 0)])
  return merged


def sort_labels(labels) -> tuple[str, ...]:
  """Deterministic label order: numeric when all labels are integers.

  Plain string sorting would put '10' before '2', which is surprising for
  star ratings.
  """
  labels = set(labels)
  if labels and all(re.fullmatch(r'-?\d+', l) for l in labels):
    return tuple(sorted(labels, key=int))
  return tuple(sorted(labels))


class Collector:
  """Collects examples and applies the `on_error` policy for one source."""

  def __init__(self, source: str, on_error: str,
               labels: Optional[Sequence[str]] = None,
               max_examples: Optional[int] = None):
    if on_error not in ('raise', 'skip'):
      raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if max_examples is not None and max_examples < 0:
      raise ValueError(f'max_examples must be >= 0, got {max_examples}')
    self.source = source
    self.on_error = on_error
    self.max_examples = max_examples
    self.report = ReadReport(source)
    self.examples: list = []
    if labels is not None:
      labels = tuple(str(l) for l in labels)
      if len(set(labels)) != len(labels):
        raise ValueError(f'labels contains duplicates: {labels}')
    self.labels = labels
    self._label_set = None if labels is None else frozenset(labels)
    self._seen_labels: set[str] = set()
    self._guids: set[str] = set()

  @property
  def full(self) -> bool:
    """True once `max_examples` examples were read; marks the truncation."""
    if self.max_examples is not None and self.report.read >= self.max_examples:
      self.report.truncated = True
      return True
    return False

  def label(self, value: Any, line: Optional[int], field: FieldRef) -> str:
    """Validates one label value and returns it as a stripped string."""
    if isinstance(value, bool):
      value = str(value)  # JSON true/false: 'True'/'False', as BoolQ names
    elif isinstance(value, int):
      value = str(value)
    if not isinstance(value, str):
      raise DataError(self.source, line, field,
                      f'expected a string label, got {_describe(value)}',
                      reason=f'field {field!r}: label is not a string')
    value = value.strip()
    if not value:
      raise DataError(self.source, line, field, 'empty label',
                      reason=f'field {field!r}: empty label')
    if self._label_set is not None and value not in self._label_set:
      known = ', '.join(self.labels)
      raise DataError(self.source, line, field,
                      f'unknown label {value!r} (known: {known})',
                      reason=f'field {field!r}: unknown label')
    self._seen_labels.add(value)
    return value

  def guid(self, value: Any, line: Optional[int], field: FieldRef, *,
           register: bool = True) -> str:
    """Validates an id taken from the data: non-empty and unique.

    Readers register the id only once the rest of the record is valid, so
    that a skipped record does not make a later, good one a duplicate.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int)):
      raise DataError(self.source, line, field,
                      f'expected a string or integer id, got '
                      f'{_describe(value)}', reason=f'field {field!r}: bad id')
    value = str(value).strip()
    if not value:
      raise DataError(self.source, line, field, 'empty id',
                      reason=f'field {field!r}: empty id')
    if value in self._guids:
      raise DataError(self.source, line, field, f'duplicate id {value!r}',
                      reason=f'field {field!r}: duplicate id')
    if register:
      self._guids.add(value)
    return value

  def fail(self, error: DataError) -> None:
    """Raises `error`, or counts it as a skipped record."""
    if self.on_error == 'raise':
      raise error
    self.report.skipped += 1
    self.report.skipped_reasons[error.reason] += 1
    if len(self.report.errors) < MAX_KEPT_ERRORS:
      self.report.errors.append(error)

  def add(self, example) -> None:
    self.examples.append(example)
    self.report.read += 1

  def finish(self):
    # An input without a single record is almost always a wrong path or a
    # failed export; training on nothing must not look like success.
    if self.report.records == 0 and not self.report.truncated:
      raise DataError(self.source, None, None,
                      'no records (empty input)', reason='empty input')
    self.report.labels = (self.labels if self.labels is not None
                          else sort_labels(self._seen_labels))
    return self.examples, self.report


def _describe(value: Any) -> str:
  text = repr(value)
  if len(text) > 40:
    text = text[:37] + '...'
  return f'{type(value).__name__} {text}'


def check_text(source: str, value: Any, line: Optional[int], field: FieldRef,
               transform: Optional[Callable[[str], str]] = None) -> str:
  """Validates a text value: a string that is not empty or only whitespace."""
  if not isinstance(value, str):
    raise DataError(source, line, field,
                    f'expected a string, got {_describe(value)}',
                    reason=f'field {field!r}: not a string')
  if transform is not None:
    value = transform(value)
  if not value.strip():
    raise DataError(source, line, field, 'empty text',
                    reason=f'field {field!r}: empty text')
  return value


# ---------------------------------------------------------------------------
# Bytes and lines.


def _source_name(path: PathLike) -> str:
  return os.fspath(path)


def _read_bytes(path: PathLike, data: Optional[bytes]) -> bytes:
  if data is not None:
    return data
  try:
    with open(path, 'rb') as f:
      return f.read()
  except OSError as e:
    raise DataError(path, None, None, f'cannot read file: {e.strerror or e}',
                    reason='cannot read file') from e


class _Line(NamedTuple):
  # A tuple rather than a dataclass: MSRA has 2.2M lines and construction
  # cost matters.
  number: int           # 1-based
  text: str             # decoded, line end included
  error: Optional[str]  # why decoding failed, else None


def _iter_lines(raw: bytes, encoding: str = 'utf-8',
                fallback_encoding: Optional[str] = None,
                notes: Optional[collections.Counter] = None,
                keepends: bool = True,
                plain: bool = False) -> Iterator[_Line]:
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
    return lines if plain else map(_Line._make, lines)
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
      yield _Line(number, piece.decode(encoding) + ending, None)
    except UnicodeDecodeError as e:
      if fallback_encoding is not None:
        try:
          decoded = piece.decode(fallback_encoding)
        except UnicodeDecodeError:
          pass
        else:
          if notes is not None:
            notes[f'lines decoded as {fallback_encoding}'] += 1
          yield _Line(number, decoded + ending, None)
          continue
      bad = piece[e.start:e.start + 1].hex()
      yield _Line(number, piece.decode(encoding, 'replace') + ending,
                  f'invalid {encoding} (byte 0x{bad} at column {e.start + 1})')


def _strip_eol(text: str) -> str:
  return text.rstrip('\r\n')


def _encoding_error(source: str, line: _Line) -> DataError:
  return DataError(source, line.number, None, line.error,
                   reason=f'invalid {line.error.split()[1]}')


# ---------------------------------------------------------------------------
# Delimited (TSV/CSV) classification files.

_QUOTING = {'minimal': csv.QUOTE_MINIMAL, 'none': csv.QUOTE_NONE}


def read_delimited(
    path: PathLike, *,
    data: Optional[bytes] = None,
    delimiter: str = '\t',
    text_field: FieldRef = 'text',
    text_pair_field: Optional[FieldRef] = None,
    label_field: Optional[FieldRef] = 'label',
    guid_field: Optional[FieldRef] = None,
    header: bool = True,
    num_columns: Optional[int] = None,
    quoting: str = 'minimal',
    labels: Optional[Sequence[str]] = None,
    allow_unlabelled: bool = False,
    text_transform: Optional[Callable[[str], str]] = None,
    on_error: str = 'raise',
    max_examples: Optional[int] = None,
    encoding: str = 'utf-8',
    example_fn: Optional[Callable[..., Any]] = None,
) -> tuple[list[ex.ClassificationExample], ReadReport]:
  """Reads a TSV/CSV file of texts (or text pairs) and labels.

  Args:
    path: the file; when `data` is given, only its name (used in messages).
    data: the file's bytes, e.g. read from an archive member.
    delimiter: field separator ('\\t' for TSV, ',' for CSV).
    text_field, text_pair_field, label_field, guid_field: columns, by header
      name (when `header`) or by 0-based index (always allowed). Pass
      `label_field=None` for unlabelled data and `guid_field=None` to use
      `<file name>:<line>` as the id.
    header: whether the first record is a header row.
    num_columns: without a header, the number of columns every record must
      have; None takes it from the first record (so a bad first record makes
      every later record an error: give it when skipping).
    quoting: 'minimal' (standard CSV quoting: a field may be quoted and
      contain delimiters, newlines and doubled quotes) or 'none' (quotes are
      ordinary characters, as in GLUE TSV files).
    labels: the label set; a label outside it is an error.
    allow_unlabelled: an empty label gives an unlabelled example (counted in
      `report.notes['unlabelled']`) instead of an error.
    text_transform: applied to text fields before the empty-text check (e.g.
      to unescape HTML entities).
    on_error: 'raise' or 'skip' (see module docstring).
    max_examples: stop after this many examples (`report.truncated`).
    encoding: an ASCII-compatible encoding.
    example_fn: builds the example of a record instead of a
      `ClassificationExample`, as `example_fn(col, source, line, row, columns,
      refs)` (`columns` maps the roles 'text', 'text_pair', 'label', 'guid' to
      column indices, `refs` to the configured fields); other example kinds
      reuse this parser through it (`read_multilabel_delimited`).

  A field longer than `csv.field_size_limit()` (128 KiB by default; the
  limit is process-wide, so it is not changed here) is an error. Every
  record must have as many columns as the header (or, without a
  header, as the first record). The line of a record that spans several
  lines (a quoted field with newlines) is the line where it starts.
  """
  source = _source_name(path)
  if quoting not in _QUOTING:
    raise ValueError(f"quoting must be one of {sorted(_QUOTING)}, got "
                     f'{quoting!r}')
  col = Collector(source, on_error, labels, max_examples)
  raw = _read_bytes(path, data)
  consumed: list[_Line] = []

  def feed():
    for line in _iter_lines(raw, encoding, notes=col.report.notes):
      consumed.append(line)
      yield line.text

  reader = csv.reader(feed(), delimiter=delimiter, quoting=_QUOTING[quoting],
                      strict=True)
  columns: Optional[dict] = None   # field ref -> column index
  header_names: Optional[list[str]] = None
  refs = {'text': text_field, 'text_pair': text_pair_field,
          'label': label_field, 'guid': guid_field}

  while True:
    consumed.clear()
    try:
      row = next(reader)
      parse_error = None
    except StopIteration:
      break
    except csv.Error as e:
      row, parse_error = None, str(e)
    if not consumed:
      break
    first, last = consumed[0].number, consumed[-1].number
    span = f' (record spans lines {first}-{last})' if last > first else ''
    if parse_error is None and (row == [] or
                                (len(row) == 1 and not row[0].strip())):
      continue  # a blank (or whitespace-only) line is not a record
    if columns is None and header and header_names is None:
      # The header is configuration, not data: its problems always raise.
      bad = next((l for l in consumed if l.error), None)
      if bad is not None:
        raise _encoding_error(source, bad)
      if parse_error is not None:
        raise DataError(source, first, None,
                        f'cannot parse header: {parse_error}')
      header_names = [h.strip() for h in row]
      if num_columns is not None and num_columns != len(row):
        raise ConfigError(source, first, None,
                          f'header has {len(row)} columns, num_columns is '
                          f'{num_columns}')
      num_columns = len(row)
      columns = _resolve_columns(source, first, refs, header_names,
                                 num_columns)
      continue
    if col.full:
      break
    if columns is None and (row is not None or num_columns is not None):
      # Without a header the column count is given or taken from the first
      # parsable record.
      if num_columns is None:
        num_columns = len(row)
      columns = _resolve_columns(source, first, refs, None, num_columns)
    try:
      bad = next((l for l in consumed if l.error), None)
      if bad is not None:
        raise _encoding_error(source, bad)
      if parse_error is not None:
        raise DataError(source, first, None,
                        f'cannot parse record: {parse_error}{span}',
                        reason='cannot parse record')
      if len(row) != num_columns:
        raise DataError(source, first, None,
                        f'expected {num_columns} columns, got {len(row)}'
                        f'{span}', reason='wrong number of columns')
      if example_fn is not None:
        col.add(example_fn(col, source, first, row, columns, refs))
        continue
      example = _delimited_example(col, source, first, row, columns, refs,
                                   allow_unlabelled, text_transform)
      col.add(example)
      if example.label is None and 'label' in columns:
        col.report.notes['unlabelled'] += 1
    except DataError as e:
      col.fail(e)
  if header and header_names is None:
    raise DataError(source, None, None, 'file is empty (no header)',
                    reason='empty file')
  return col.finish()


def _resolve_columns(source, line, refs, header_names, num_columns):
  """Maps each configured field (name or index) to a column index."""
  columns = {}
  for role, ref in refs.items():
    if ref is None:
      continue
    if isinstance(ref, int) and not isinstance(ref, bool):
      if not -num_columns <= ref < num_columns:
        raise ConfigError(source, line, ref,
                          f'column index {ref} out of range for '
                          f'{num_columns} columns')
      columns[role] = ref
    elif header_names is None:
      raise ConfigError(source, line, ref,
                        f'{role} field {ref!r} is a name but the file has no '
                        'header; give a 0-based column index')
    else:
      found = [i for i, h in enumerate(header_names) if h == ref]
      if len(found) != 1:
        what = 'no' if not found else 'more than one'
        raise ConfigError(source, line, ref,
                          f'{what} column {ref!r} in header (columns: '
                          f'{", ".join(repr(h) for h in header_names)})')
      columns[role] = found[0]
  return columns


def _delimited_example(col, source, line, row, columns, refs,
                       allow_unlabelled, transform):
  def cell(role):
    try:
      return row[columns[role]]
    except IndexError:
      raise DataError(source, line, refs[role],
                      f'missing: the record has only {len(row)} columns',
                      reason=f'field {refs[role]!r}: missing') from None

  text = check_text(source, cell('text'), line, refs['text'], transform)
  pair = None
  if 'text_pair' in columns:
    pair = check_text(source, cell('text_pair'), line, refs['text_pair'],
                      transform)
  label = None
  if 'label' in columns:
    value = cell('label')
    if not (allow_unlabelled and not value.strip()):
      label = col.label(value, line, refs['label'])
  if 'guid' in columns:
    guid = col.guid(cell('guid'), line, refs['guid'])
  else:
    guid = f'{os.path.basename(source)}:{line}'
  return ex.ClassificationExample(guid, text, pair, label)


# ---------------------------------------------------------------------------
# JSON lines.


def iter_json_objects(col: Collector, raw: bytes, encoding: str
                       ) -> Iterator[tuple[int, dict]]:
  """Yields (line, object) for each non-blank line; bad lines go to `col`."""
  source = col.source
  for line in _iter_lines(raw, encoding, notes=col.report.notes):
    if not line.text.strip():
      continue  # blank lines (e.g. a trailing one) are not records
    if col.full:
      return
    try:
      if line.error:
        raise _encoding_error(source, line)
      try:
        obj = json.loads(line.text)
      except json.JSONDecodeError as e:
        raise DataError(source, line.number, None,
                        f'invalid JSON: {e.msg} at column {e.colno}',
                        reason='invalid JSON') from None
      except RecursionError:
        raise DataError(source, line.number, None,
                        'invalid JSON: nested too deeply',
                        reason='invalid JSON') from None
      if not isinstance(obj, dict):
        raise DataError(source, line.number, None,
                        f'expected a JSON object, got {type(obj).__name__}',
                        reason='not a JSON object')
    except DataError as e:
      col.fail(e)
      continue
    yield line.number, obj


def require_field(source, obj: dict, field: str, line: int):
  if field not in obj:
    raise DataError(source, line, field, 'missing',
                    reason=f'field {field!r}: missing')
  return obj[field]


def _json_texts(source, obj, line, text_field, text_pair_field,
                text_transform):
  """(text, text pair or None) of a JSON record, each checked (non-empty,
  a string), errors naming file, line and field."""
  text = check_text(source, require_field(source, obj, text_field, line),
                    line, text_field, text_transform)
  pair = None
  if text_pair_field is not None:
    pair = check_text(source, require_field(source, obj, text_pair_field, line),
                      line, text_pair_field, text_transform)
  return text, pair


def read_jsonl(
    path: PathLike, *,
    data: Optional[bytes] = None,
    text_field: str = 'text',
    text_pair_field: Optional[str] = None,
    label_field: Optional[str] = 'label',
    guid_field: Optional[str] = None,
    labels: Optional[Sequence[str]] = None,
    allow_unlabelled: bool = False,
    text_transform: Optional[Callable[[str], str]] = None,
    on_error: str = 'raise',
    max_examples: Optional[int] = None,
    encoding: str = 'utf-8',
) -> tuple[list[ex.ClassificationExample], ReadReport]:
  """Reads one JSON object per line as a classification example.

  Labels may be JSON strings, integers or booleans (`true` becomes 'True').
  With `allow_unlabelled`, a missing or null label gives an unlabelled
  example, counted in `report.notes['unlabelled']`; otherwise it is an
  error. Blank lines are ignored. Other arguments as for `read_delimited`.
  """
  source = _source_name(path)
  col = Collector(source, on_error, labels, max_examples)
  raw = _read_bytes(path, data)
  for line, obj in iter_json_objects(col, raw, encoding):
    try:
      text, pair = _json_texts(source, obj, line, text_field, text_pair_field,
                               text_transform)
      label = None
      if label_field is not None:
        value = obj.get(label_field)
        if value is None and allow_unlabelled:
          pass  # counted in notes once the record is read
        elif value is None:
          raise DataError(source, line, label_field, 'missing',
                          reason=f'field {label_field!r}: missing')
        else:
          label = col.label(value, line, label_field)
      if guid_field is not None:
        guid = col.guid(require_field(source, obj, guid_field, line), line,
                        guid_field)
      else:
        guid = f'{os.path.basename(source)}:{line}'
      col.add(ex.ClassificationExample(guid, text, pair, label))
      if label is None and label_field is not None:
        col.report.notes['unlabelled'] += 1
    except DataError as e:
      col.fail(e)
  return col.finish()


# ---------------------------------------------------------------------------
# Multi-label classification: JSON lines and TSV/CSV with a list of labels.


def label_list(col: Collector, values: Sequence[Any], line: int,
               field: FieldRef, *, allow_empty: bool) -> tuple[str, ...]:
  """Validates one record's labels; returns them sorted.

  Each label is checked as a single label is (`Collector.label`: a string,
  not empty, in the label set when one is given). A label named twice, or no
  label where `allow_empty` is False, is a `DataError`. Labels are added to
  the collected label set only when the whole list is valid, so a skipped
  record cannot add one.
  """
  seen = set(col._seen_labels)  # pylint: disable=protected-access
  try:
    labels = [col.label(v, line, field) for v in values]
    dup = sorted({l for l in labels if labels.count(l) > 1})
    if dup:
      raise DataError(col.source, line, field,
                      f'label(s) {", ".join(map(repr, dup))} given twice',
                      reason=f'field {field!r}: duplicate label')
    if not labels and not allow_empty:
      raise DataError(col.source, line, field,
                      'no labels (an empty label list is not allowed here: '
                      'allow_empty_labels is off)',
                      reason=f'field {field!r}: empty label list')
  except DataError:
    col._seen_labels = seen  # pylint: disable=protected-access
    raise
  return tuple(sorted(labels))


def read_multilabel_jsonl(
    path: PathLike, *,
    data: Optional[bytes] = None,
    text_field: str = 'text',
    text_pair_field: Optional[str] = None,
    label_field: str = 'labels',
    guid_field: Optional[str] = None,
    labels: Optional[Sequence[str]] = None,
    allow_empty_labels: bool = True,
    text_transform: Optional[Callable[[str], str]] = None,
    on_error: str = 'raise',
    max_examples: Optional[int] = None,
    encoding: str = 'utf-8',
) -> tuple[list[ex.MultiLabelExample], ReadReport]:
  """Reads `{"text": ..., "labels": ["a", "b"]}` lines (multi-label).

  `label_field` must hold a JSON list of labels (strings or integers); a
  missing field, `null`, or any other JSON type is an error naming the file,
  line and field. `[]` means "no label applies" and is allowed unless
  `allow_empty_labels=False`; examples without labels are counted in
  `report.notes['no labels']`. Other arguments as for `read_jsonl`.
  """
  source = _source_name(path)
  col = Collector(source, on_error, labels, max_examples)
  raw = _read_bytes(path, data)
  for line, obj in iter_json_objects(col, raw, encoding):
    try:
      text, pair = _json_texts(source, obj, line, text_field, text_pair_field,
                               text_transform)
      values = require_field(source, obj, label_field, line)
      if not isinstance(values, list):
        raise DataError(source, line, label_field,
                        f'expected a list of labels, got {_describe(values)}',
                        reason=f'field {label_field!r}: not a list')
      if guid_field is not None:
        guid = col.guid(require_field(source, obj, guid_field, line), line,
                        guid_field, register=False)
      else:
        guid = f'{os.path.basename(source)}:{line}'
      found = label_list(col, values, line, label_field,
                         allow_empty=allow_empty_labels)
      if guid_field is not None:
        col.guid(guid, line, guid_field)
      col.add(ex.MultiLabelExample(guid, text, pair, found))
      if not found:
        col.report.notes['no labels'] += 1
    except DataError as e:
      col.fail(e)
  return col.finish()


def read_multilabel_delimited(
    path: PathLike, *,
    data: Optional[bytes] = None,
    delimiter: str = '\t',
    text_field: FieldRef = 'text',
    text_pair_field: Optional[FieldRef] = None,
    label_field: FieldRef = 'labels',
    label_separator: str = '|',
    guid_field: Optional[FieldRef] = None,
    header: bool = True,
    num_columns: Optional[int] = None,
    quoting: str = 'minimal',
    labels: Optional[Sequence[str]] = None,
    allow_empty_labels: bool = True,
    text_transform: Optional[Callable[[str], str]] = None,
    on_error: str = 'raise',
    max_examples: Optional[int] = None,
    encoding: str = 'utf-8',
) -> tuple[list[ex.MultiLabelExample], ReadReport]:
  """Reads a TSV/CSV file whose label column lists labels, e.g. `a|b`.

  The label cell is split on `label_separator` and each part stripped; an
  empty part (`a||b`, a trailing `|`) is an error, and an empty cell means
  "no label applies" (allowed unless `allow_empty_labels=False`; counted in
  `report.notes['no labels']`). With `delimiter=','` and
  `label_separator=','` the label cell must be quoted (`"a,b"`). Other
  arguments as for `read_delimited`.
  """
  if not isinstance(label_separator, str) or not label_separator:
    raise ValueError(f'label_separator must be a non-empty string, got '
                     f'{label_separator!r}')
  if label_field is None:
    raise ValueError('label_field is required for multi-label data')

  def example(col, source, line, row, columns, refs):
    def cell(role):
      if columns[role] >= len(row) or columns[role] < -len(row):
        raise DataError(source, line, refs[role],
                        f'missing: the record has only {len(row)} columns',
                        reason=f'field {refs[role]!r}: missing')
      return row[columns[role]]
    text = check_text(source, cell('text'), line, refs['text'],
                      text_transform)
    pair = None
    if 'text_pair' in columns:
      pair = check_text(source, cell('text_pair'), line, refs['text_pair'],
                        text_transform)
    value = cell('label').strip()
    parts = value.split(label_separator) if value else []
    guid = (col.guid(cell('guid'), line, refs['guid'], register=False)
            if 'guid' in columns else f'{os.path.basename(source)}:{line}')
    found = label_list(col, parts, line, refs['label'],
                       allow_empty=allow_empty_labels)
    if 'guid' in columns:
      col.guid(guid, line, refs['guid'])
    if not found:
      col.report.notes['no labels'] += 1
    return ex.MultiLabelExample(guid, text, pair, found)

  return read_delimited(
      path, data=data, delimiter=delimiter, text_field=text_field,
      text_pair_field=text_pair_field, label_field=label_field,
      guid_field=guid_field, header=header, num_columns=num_columns,
      quoting=quoting, labels=labels, on_error=on_error,
      max_examples=max_examples, encoding=encoding, example_fn=example)


# ---------------------------------------------------------------------------
# CoNLL column files.


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
  source = _source_name(path)
  col = Collector(source, on_error, labels, max_examples)
  raw = _read_bytes(path, data)
  parser = _ConllSentences(col, os.path.basename(source), token_column,
                           tag_column, num_columns, delimiter)
  sentence: list[str] = []
  start = 0
  bad: Optional[_Line] = None   # first undecodable line of the sentence
  for number, text, error in _iter_lines(raw, encoding,
                                         notes=col.report.notes,
                                         keepends=False, plain=True):
    if (text and not text.isspace() and
        (docstart is None or not text.startswith(docstart))):
      if not sentence:
        start = number
      sentence.append(text)
      if error and bad is None:
        bad = _Line(number, text, error)
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

  def add(self, lines: list[str], start: int, bad: Optional[_Line]) -> None:
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
        raise _encoding_error(source, bad)
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


# ---------------------------------------------------------------------------
# Relations: SemEval-2010 Task 8 and JSONL with spans.

_MARKER = re.compile(r'</?e[12]>')
_SEMEVAL_LABEL = re.compile(r'[A-Za-z][\w-]*(\((e1,e2|e2,e1)\))?')


def _blocks(col: Collector, raw: bytes, encoding: str
            ) -> Iterator[list[_Line]]:
  """Groups lines into blank-line separated blocks."""
  block: list[_Line] = []
  for line in _iter_lines(raw, encoding, notes=col.report.notes):
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
  source = _source_name(path)
  col = Collector(source, on_error, labels, max_examples)
  raw = _read_bytes(path, data)
  if labelled:
    records = _blocks(col, raw, encoding)
  else:
    records = ([l] for l in _iter_lines(raw, encoding, notes=col.report.notes)
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
      raise _encoding_error(source, line)
  head_line = block[0]
  text = _strip_eol(head_line.text)
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
    value = _strip_eol(label_line.text).strip()
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
                    f'{_describe(value)}', reason=f'field {field!r}: bad span')
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
  source = _source_name(path)
  col = Collector(source, on_error, labels, max_examples)
  raw = _read_bytes(path, data)
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


# ---------------------------------------------------------------------------
# SQuAD JSON.


class _IdLines:
  """Finds the line of a question id in the raw JSON, for error messages.

  The json module does not report where an object was, so the line is found
  by searching for the `"id": "<qid>"` member; built lazily because it is
  only needed when something is wrong.
  """

  def __init__(self, text: str):
    self._text = text
    self._lines: Optional[dict[str, int]] = None

  def __call__(self, qid: Any) -> Optional[int]:
    if self._lines is None:
      self._lines = {}
      pattern = re.compile(r'"id"\s*:\s*("(?:[^"\\]|\\.)*"|-?\d+)')
      line, last = 1, 0
      for m in pattern.finditer(self._text):
        line += self._text.count('\n', last, m.start())
        last = m.start()
        try:
          key = str(json.loads(m.group(1)))
        except ValueError:
          continue
        self._lines.setdefault(key, line)
    return self._lines.get(str(qid))


def read_squad(
    path: PathLike, *,
    data: Optional[bytes] = None,
    allow_impossible: bool = True,
    allow_unanswered: bool = False,
    on_error: str = 'raise',
    max_examples: Optional[int] = None,
    encoding: str = 'utf-8',
) -> tuple[list[ex.QAExample], ReadReport]:
  """Reads SQuAD v1.1 / v2.0 JSON (`data[].paragraphs[].qas[]`).

  Every answer's `answer_start` is checked against the context: the context
  must contain the answer text at that offset. A mismatch is a `DataError`
  naming the question id (and its line, found by searching the file). A
  v2.0 question with `is_impossible: true` gets no answers (its
  `plausible_answers` are ignored); with `allow_impossible=False` such a
  question is an error. With `allow_unanswered`, a question without
  answers (unlabelled data, e.g. for prediction) is read as unanswerable
  and counted in `report.notes['unlabelled']`. A record is a question: in
  skip mode a bad paragraph (no context) drops all its questions, each
  counted.

  A file that is not valid JSON, or has no `data` list, raises in both
  modes (there is no record to skip); the error names the line.
  """
  source = _source_name(path)
  col = Collector(source, on_error, None, max_examples)
  raw = _read_bytes(path, data)
  lines = list(_iter_lines(raw, encoding))
  bad = next((l for l in lines if l.error), None)
  if bad is not None:
    raise _encoding_error(source, bad)
  text = ''.join(l.text for l in lines)
  if not text.strip():
    raise DataError(source, None, None, 'file is empty', reason='empty file')
  try:
    doc = json.loads(text)
  except json.JSONDecodeError as e:
    raise DataError(source, e.lineno, None,
                    f'invalid JSON: {e.msg} at column {e.colno}',
                    reason='invalid JSON') from None
  except RecursionError:
    raise DataError(source, None, None, 'invalid JSON: nested too deeply',
                    reason='invalid JSON') from None
  if not isinstance(doc, dict) or not isinstance(doc.get('data'), list):
    raise DataError(source, 1, 'data',
                    'expected a JSON object with a "data" list (SQuAD format)')
  id_line = _IdLines(text)
  for a, article in enumerate(doc['data']):
    paragraphs = (article.get('paragraphs') if isinstance(article, dict)
                  else None)
    if not isinstance(paragraphs, list):
      col.fail(DataError(source, None, f'data[{a}].paragraphs',
                         'expected a list', reason='bad article'))
      continue
    for p, para in enumerate(paragraphs):
      where = f'data[{a}].paragraphs[{p}]'
      qas = para.get('qas') if isinstance(para, dict) else None
      if not isinstance(qas, list):
        col.fail(DataError(source, None, f'{where}.qas', 'expected a list',
                           reason='bad paragraph'))
        continue
      context = para.get('context')
      if not isinstance(context, str) or not context.strip():
        for qa in qas:  # every question of the paragraph is lost: count each
          qid = qa.get('id') if isinstance(qa, dict) else None
          col.fail(DataError(
              source, id_line(qid) if qid is not None else None,
              f'{where}.context', f'question {qid!r}: missing or empty '
              'context', reason="field 'context': missing or empty"))
        continue
      for q, qa in enumerate(qas):
        if col.full:
          return col.finish()
        try:
          col.add(_squad_question(col, source, f'{where}.qas[{q}]', qa,
                                  context, allow_impossible, id_line,
                                  allow_unanswered=allow_unanswered))
        except DataError as e:
          col.fail(e)
  return col.finish()


def _squad_question(col, source, where, qa, context, allow_impossible,
                    id_line, *, allow_unanswered=False):
  if not isinstance(qa, dict):
    raise DataError(source, None, where, 'expected a JSON object',
                    reason='bad question')
  qid = qa.get('id')
  line = id_line(qid) if qid is not None else None
  if qid is None:
    raise DataError(source, line, f'{where}.id', 'missing question id',
                    reason="field 'id': missing")
  guid = col.guid(qid, line, 'id', register=False)
  label = f'question {guid!r}'
  question = qa.get('question')
  if not isinstance(question, str) or not question.strip():
    raise DataError(source, line, 'question',
                    f'{label}: missing or empty question',
                    reason="field 'question': missing or empty")
  impossible = qa.get('is_impossible', False)
  if not isinstance(impossible, bool):
    raise DataError(source, line, 'is_impossible',
                    f'{label}: expected true/false, got '
                    f'{_describe(impossible)}',
                    reason="field 'is_impossible': not a boolean")
  answers_in = qa.get('answers', [])
  if not isinstance(answers_in, list):
    raise DataError(source, line, 'answers', f'{label}: expected a list',
                    reason="field 'answers': not a list")
  if impossible:
    if not allow_impossible:
      raise DataError(source, line, 'is_impossible',
                      f'{label}: impossible question not allowed',
                      reason='impossible question')
    if answers_in:
      raise DataError(source, line, 'answers',
                      f'{label}: is_impossible but has answers',
                      reason="field 'answers': answers on impossible question")
    col.guid(qid, line, 'id')
    col.report.notes['impossible'] += 1
    return ex.QAExample(guid, question, context, (), True)
  if not answers_in and allow_unanswered:
    col.guid(qid, line, 'id')
    col.report.notes['unlabelled'] += 1
    return ex.QAExample(guid, question, context, (), True)
  if not answers_in:
    raise DataError(source, line, 'answers', f'{label}: no answers',
                    reason="field 'answers': empty")
  answers = []
  for i, ans in enumerate(answers_in):
    field = f'answers[{i}]'
    if not isinstance(ans, dict):
      raise DataError(source, line, field, f'{label}: expected an object',
                      reason="field 'answers': bad answer")
    atext, start = ans.get('text'), ans.get('answer_start')
    if not isinstance(atext, str) or not atext.strip():
      raise DataError(source, line, f'{field}.text',
                      f'{label}: missing or empty answer text',
                      reason="field 'answers': empty answer text")
    if isinstance(start, bool) or not isinstance(start, int):
      raise DataError(source, line, f'{field}.answer_start',
                      f'{label}: expected an integer, got {_describe(start)}',
                      reason="field 'answer_start': not an integer")
    if start < 0 or context[start:start + len(atext)] != atext:
      found = context[max(start, 0):max(start, 0) + len(atext)]
      raise DataError(source, line, f'{field}.answer_start',
                      f'{label}: answer {atext[:40]!r} is not at offset '
                      f'{start} of the context (found {found[:40]!r})',
                      reason="field 'answer_start': does not match context")
    answers.append((atext, start))
  col.guid(qid, line, 'id')
  return ex.QAExample(guid, question, context, tuple(answers), False)



# ---------------------------------------------------------------------------
# Directories of text files (one document per file, label = folder).


def read_text_dir(
    root: PathLike, *,
    pattern: str = '*.txt',
    labels: Optional[Sequence[str]] = None,
    fallback_encoding: Optional[str] = None,
    text_transform: Optional[Callable[[str], str]] = None,
    on_error: str = 'raise',
    max_examples: Optional[int] = None,
    encoding: str = 'utf-8',
) -> tuple[list[ex.ClassificationExample], ReadReport]:
  """Reads `root/<label>/<file>` documents, one example per file.

  Files are read in sorted order; the guid is `<label>/<file stem>`. A file
  that does not decode is an error naming the file and line, unless
  `fallback_encoding` is given: then the undecodable lines are decoded with
  it and counted in `report.notes` (the BBC corpus has one cp1252 file).
  A record is a file.
  """
  root = pathlib.Path(root)
  if not root.is_dir():
    raise DataError(root, None, None, 'not a directory')
  col = Collector(str(root), on_error, labels, max_examples)
  for label_dir in sorted(p for p in root.iterdir() if p.is_dir()):
    for path in sorted(label_dir.glob(pattern)):
      if col.full:
        return col.finish()
      try:
        lines = list(_iter_lines(_read_bytes(path, None), encoding,
                                 fallback_encoding, col.report.notes))
        bad = next((l for l in lines if l.error), None)
        if bad is not None:
          raise _encoding_error(str(path), bad)
        label = col.label(label_dir.name, None, 'label')
        text = check_text(str(path), ''.join(l.text for l in lines).strip(), 1,
                     'text', text_transform)
        col.add(ex.ClassificationExample(f'{label_dir.name}/{path.stem}',
                                         text, None, label))
      except DataError as e:
        if e.path is None or e.path == col.source:
          e = DataError(path, e.line, e.field, e.message, reason=e.reason)
        col.fail(e)
  return col.finish()


# ---------------------------------------------------------------------------
# TensorFlow Datasets.

# Text fields of the GLUE configs (first segment, second segment or None).
_GLUE_FIELDS = {
    'cola': ('sentence', None), 'sst2': ('sentence', None),
    'mrpc': ('sentence1', 'sentence2'), 'qqp': ('question1', 'question2'),
    'mnli': ('premise', 'hypothesis'),
    'mnli_matched': ('premise', 'hypothesis'),
    'mnli_mismatched': ('premise', 'hypothesis'),
    'qnli': ('question', 'sentence'), 'rte': ('sentence1', 'sentence2'),
    'wnli': ('sentence1', 'sentence2'), 'ax': ('premise', 'hypothesis'),
}

# Module that registers each supported tfds builder family.
_TFDS_MODULES = {
    'glue': 'tensorflow_datasets.text.glue',
    'super_glue': 'tensorflow_datasets.text.super_glue',
    'squad': 'tensorflow_datasets.question_answering.squad',
    'conll2003': 'tensorflow_datasets.text.conll2003',
}

TFDS_SUPPORTED = ('glue/<config> (not stsb)', 'super_glue/boolq',
                  'conll2003', 'squad', 'squad/v1.1', 'squad/v2.0')


def tfds_task_kind(name: str) -> str:
  family, _, config = name.partition('/')
  config = config.split(':')[0]
  if family == 'glue' and config in _GLUE_FIELDS:
    return 'classification'
  if family == 'super_glue' and config == 'boolq':
    return 'classification'
  if family == 'conll2003':
    return 'tagging'
  if family == 'squad':
    return 'qa'
  raise DataError(f'tfds:{name}', None, None,
                  f'unsupported tfds dataset; supported: '
                  f'{", ".join(TFDS_SUPPORTED)}')


def _is_prepared(builder) -> bool:
  """Whether the builder's data is on disk (a seam for tests with mocks)."""
  return builder.is_prepared()


def _have_tensorflow() -> bool:
  """Whether `tfds.load` can run (a seam so tests cover both paths)."""
  try:
    importlib.import_module('tensorflow')
  except Exception:  # pylint: disable=broad-except
    return False  # not installed, or installed but broken: use data_source
  return True


def _as_str(value) -> str:
  if isinstance(value, bytes):
    return value.decode('utf-8')
  if hasattr(value, 'item'):  # a 0-d numpy array
    value = value.item()
    return value.decode('utf-8') if isinstance(value, bytes) else str(value)
  return str(value)


def _as_list(value) -> list:
  return list(value.tolist()) if hasattr(value, 'tolist') else list(value)


def read_tfds(
    name: str, split: str, *,
    data_dir: Optional[PathLike] = None,
    tag_feature: str = 'ner',
    on_error: str = 'raise',
    max_examples: Optional[int] = None,
) -> tuple[list, ReadReport]:
  """Reads a prepared TensorFlow Datasets split into example records.

  Supported: GLUE classification configs, `super_glue/boolq`, `conll2003`
  (tags from `tag_feature`: 'ner', 'pos' or 'chunks') and `squad`
  (v1.1/v2.0). The data must already be prepared under `data_dir` (or the
  default tfds directory): this reader never downloads, and an unprepared
  dataset is a `DataError` saying how to prepare it.

  With TensorFlow installed the split is read with `tfds.load(name,
  split=..., data_dir=..., download=False)`; without it, with
  `tfds.data_source` (which needs the array_record file format). Labels are
  mapped to their `ClassLabel` names and `report.labels` keeps the tfds
  order, so label ids agree with tfds; a label of -1 (GLUE test splits)
  gives an unlabelled example. A record is a tfds example; its "line" in
  errors is its 1-based position in the split.
  """
  kind = tfds_task_kind(name)
  source = f'tfds:{name}[{split}]'
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DataError(source, None, None,
                    f'tensorflow_datasets is not installed ({e})') from e
  family = name.split('/')[0].split(':')[0]
  try:
    importlib.import_module(_TFDS_MODULES[family])
    builder = tfds.builder(name, data_dir=data_dir, try_gcs=False)
  except ImportError as e:
    raise DataError(source, None, None,
                    f'building {name} needs a missing module ({e}); install '
                    'tensorflow (pip install bert_jax[tf])') from e
  except Exception as e:  # tfds raises assorted types for unknown configs
    raise DataError(source, None, None, f'cannot open builder: {e}') from e
  if not _is_prepared(builder):
    where = data_dir if data_dir is not None else 'the default tfds data_dir'
    raise DataError(source, None, None,
                    f'not prepared in {where}; prepare it once with '
                    f'`tfds build {name} --data_dir=<dir>` (this reader '
                    'never downloads)', reason='not prepared')
  try:
    if _have_tensorflow():
      records = tfds.as_numpy(tfds.load(name, split=split, data_dir=data_dir,
                                        download=False))
    else:
      records = tfds.data_source(name, split=split, data_dir=data_dir,
                                 download=False)
  except Exception as e:
    raise DataError(source, None, None, f'cannot read split: {e}') from e
  features = builder.info.features
  labels = _tfds_label_names(features, kind, tag_feature)
  col = Collector(source, on_error, labels, max_examples)
  for number, record in enumerate(records, 1):
    if col.full:
      break
    try:
      col.add(_tfds_example(col, source, number, kind, name, record,
                            labels, tag_feature))
    except DataError as e:
      col.fail(e)
  return col.finish()


def _tfds_label_names(features, kind, tag_feature):
  if kind == 'classification':
    return tuple(features['label'].names)
  if kind == 'tagging':
    return tuple(features[tag_feature].feature.names)
  return None


def _tfds_label(source, number, field, value, names):
  try:
    index = int(_as_str(value)) if not isinstance(value, int) else value
  except ValueError:
    raise DataError(source, number, field, f'not a class id: {value!r}',
                    reason=f'field {field!r}: bad class id') from None
  if index == -1:
    return None
  if not 0 <= index < len(names):
    raise DataError(source, number, field,
                    f'class id {index} out of range for {len(names)} classes',
                    reason=f'field {field!r}: class id out of range')
  return names[index]


def _tfds_example(col, source, number, kind, name, record, labels,
                  tag_feature):
  def get(field):
    if field not in record:
      raise DataError(source, number, field, 'missing',
                      reason=f'field {field!r}: missing')
    return record[field]

  def text(field):
    try:
      value = _as_str(get(field))
    except UnicodeDecodeError as e:
      raise DataError(source, number, field, f'invalid UTF-8 ({e.reason})',
                      reason='invalid UTF-8') from None
    return check_text(source, value, number, field)

  family, _, config = name.partition('/')
  config = config.split(':')[0]
  if kind == 'classification':
    if family == 'glue':
      first, second = _GLUE_FIELDS[config]
    else:
      first, second = 'question', 'passage'
    idx = _as_str(record['idx']) if 'idx' in record else str(number)
    label = _tfds_label(source, number, 'label', get('label'), labels)
    example = ex.ClassificationExample(
        f'{name}-{idx}', text(first),
        text(second) if second is not None else None, label)
    if label is None:
      col.report.notes['unlabelled'] += 1
    return example
  if kind == 'tagging':
    try:
      words = [_as_str(w) for w in _as_list(get('tokens'))]
    except UnicodeDecodeError as e:
      raise DataError(source, number, 'tokens', f'invalid UTF-8 ({e.reason})',
                      reason='invalid UTF-8') from None
    tags = [_tfds_label(source, number, tag_feature, t, labels)
            for t in _as_list(get(tag_feature))]
    if len(tags) != len(words) or not words:
      raise DataError(source, number, tag_feature,
                      f'{len(words)} tokens but {len(tags)} tags',
                      reason='tokens and tags differ in length')
    if any(t is None for t in tags) or any(not w.strip() for w in words):
      raise DataError(source, number, 'tokens', 'empty token or missing tag',
                      reason='empty token or tag')
    return ex.TaggingExample(f'conll2003-{number}', tuple(words), tuple(tags))
  # Extractive QA: the same checks as the SQuAD JSON reader.
  qid = _as_str(get('id'))
  context = text('context')
  answers = get('answers')
  texts = [_as_str(t) for t in _as_list(answers['text'])]
  starts = [int(s) for s in _as_list(answers['answer_start'])]
  impossible = bool(_as_str(record['is_impossible']) == 'True'
                    if 'is_impossible' in record else False)
  qa = {'id': qid, 'question': text('question'), 'is_impossible': impossible,
        'answers': [] if impossible else
                   [{'text': t, 'answer_start': s}
                    for t, s in zip(texts, starts)]}
  if len(texts) != len(starts):
    raise DataError(source, number, 'answers',
                    f'{len(texts)} answer texts but {len(starts)} starts',
                    reason="field 'answers': length mismatch")
  return _squad_question(col, source, 'answers', qa, context, True,
                         lambda _: number)


# ---------------------------------------------------------------------------
# One tagged sentence per line: `word/TAG word/TAG ...` (the Penn Treebank
# "tagged" text format; Brown and pattern's test corpora use it too).


def read_slash_tagged(
    path: PathLike, *,
    data: Optional[bytes] = None,
    separator: str = '/',
    labels: Optional[Sequence[str]] = None,
    on_error: str = 'raise',
    max_examples: Optional[int] = None,
    encoding: str = 'utf-8',
) -> tuple[list[ex.TaggingExample], ReadReport]:
  """Reads one sentence per line as space-separated `word<separator>TAG`.

  The tag is what follows the LAST separator of a token, so words may
  contain it; the Penn Treebank's escaped slash `\\/` in a word becomes '/'.
  Blank lines are skipped. Each line is a record (guid `<file>:<line>`); a
  token without a separator, or with an empty word or tag, is a `DataError`
  naming the line and the token.
  """
  source = _source_name(path)
  col = Collector(source, on_error, labels, max_examples)
  raw = _read_bytes(path, data)
  stem = os.path.basename(source)
  for line in _iter_lines(raw, encoding, notes=col.report.notes,
                          keepends=False):
    if not line.text.strip():
      continue
    if col.full:
      break
    try:
      if line.error:
        raise _encoding_error(source, line)
      words, tags = [], []
      for k, token in enumerate(line.text.split(), 1):
        word, sep, tag = token.rpartition(separator)
        if not sep or not word or not tag:
          raise DataError(source, line.number, f'token {k}',
                          f'{token!r} is not word{separator}TAG',
                          reason='token is not word/TAG')
        words.append(word.replace('\\' + separator, separator))
        tags.append(col.label(tag, line.number, f'token {k}'))
      col.add(ex.TaggingExample(f'{stem}:{line.number}', words, tags))
    except DataError as e:
      col.fail(e)
  return col.finish()


# ---------------------------------------------------------------------------
# CHAT transcripts (CHILDES / TalkBank `.cha`), as HKCanCor ships them:
# `*SPK:\t` word tier with words separated by spaces, `%mor:\t` tier with one
# `pos|jyutping` item per word (punctuation bare), tab-indented continuation
# lines.

CHAT_TAGS = ('segmentation', 'pos')


def read_chat(
    path: PathLike, *,
    data: Optional[bytes] = None,
    tags: str = 'segmentation',
    labels: Optional[Sequence[str]] = None,
    on_error: str = 'raise',
    max_examples: Optional[int] = None,
    encoding: str = 'utf-8',
) -> tuple[list[ex.TaggingExample], ReadReport]:
  """Reads the utterances of a CHAT file as tagging examples.

  Args:
    tags: 'segmentation': the words are split into characters, tagged with
      bare B/M/E/S (the word tier's spaces are the gold segmentation);
      'pos': the words with the part of speech of their `%mor` item (the
      text before '|'; a bare item, i.e. punctuation, is its own tag).
    Others as for `read_conll`.

  Each utterance is a record, guid `<file>:<line of its * line>`. An
  utterance whose `%mor` tier (needed for 'pos') is missing or has another
  number of items than it has words is a `DataError` naming that line.
  """
  if tags not in CHAT_TAGS:
    raise ValueError(f'read_chat: tags={tags!r}; choices: {CHAT_TAGS}')
  source = _source_name(path)
  col = Collector(source, on_error, labels, max_examples)
  raw = _read_bytes(path, data)
  stem = os.path.basename(source)
  utterances = []   # [line, words text, mor text or None, decode error]
  tier = None
  for line in _iter_lines(raw, encoding, notes=col.report.notes,
                          keepends=False):
    text = line.text.rstrip('\r')
    if text.startswith('*'):
      utterances.append([line.number, text.partition('\t')[2], None,
                         line.error])
      tier = 1
    elif text.startswith('%mor:') and utterances and tier is not None:
      utterances[-1][2] = text.partition('\t')[2]
      tier = 2
    elif text.startswith('\t') and tier is not None:
      utterances[-1][tier] += ' ' + text.strip()
      utterances[-1][3] = utterances[-1][3] or line.error
    else:
      tier = None   # headers (@) and other dependent tiers (%xxx)
  for number, words_text, mor, error in utterances:
    if col.full:
      break
    try:
      if error:
        raise DataError(source, number, None, f'invalid {encoding}: {error}',
                        reason='undecodable line')
      words = words_text.split()
      if not words:
        raise DataError(source, number, 'words', 'empty utterance',
                        reason='empty utterance')
      if tags == 'segmentation':
        chars, bmes = [], []
        for w in words:
          chars.extend(w)
          bmes.extend(['S'] if len(w) == 1 else
                      ['B'] + ['M'] * (len(w) - 2) + ['E'])
        tag_list = [col.label(t, number, 'words') for t in bmes]
        words = chars
      else:
        items = (mor or '').split()
        if len(items) != len(words):
          raise DataError(source, number, '%mor',
                          f'{len(items)} %mor items for {len(words)} words',
                          reason="field '%mor': item count")
        tag_list = [col.label(item.partition('|')[0] if '|' in item
                              else item, number, '%mor') for item in items]
      col.add(ex.TaggingExample(f'{stem}:{number}', words, tag_list))
    except DataError as e:
      col.fail(e)
  return col.finish()
