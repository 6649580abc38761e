"""The error collector every reader shares: `DataError` (file, line,
field), `ConfigError`, `ReadReport` (what was read and skipped), the
`Collector` that applies the `on_error` policy, and value checks.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
from typing import Any, Callable, Optional, Sequence, Union


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
                      f'expected a string label, got {describe(value)}',
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
                      f'{describe(value)}', reason=f'field {field!r}: bad id')
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


def describe(value: Any) -> str:
  """A bad value for an error message: its type and its repr, cut at 40
  characters."""
  text = repr(value)
  if len(text) > 40:
    text = text[:37] + '...'
  return f'{type(value).__name__} {text}'


def check_text(source: str, value: Any, line: Optional[int], field: FieldRef,
               transform: Optional[Callable[[str], str]] = None) -> str:
  """Validates a text value: a string that is not empty or only whitespace."""
  if not isinstance(value, str):
    raise DataError(source, line, field,
                    f'expected a string, got {describe(value)}',
                    reason=f'field {field!r}: not a string')
  if transform is not None:
    value = transform(value)
  if not value.strip():
    raise DataError(source, line, field, 'empty text',
                    reason=f'field {field!r}: empty text')
  return value
