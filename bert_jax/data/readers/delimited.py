"""Delimited (TSV/CSV) classification files."""

from __future__ import annotations

import csv
import os
from typing import Any, Callable, Optional, Sequence

from bert_jax.data import examples as ex
from bert_jax.data.readers.errors import (Collector, ConfigError, DataError,
                                          FieldRef, PathLike, ReadReport,
                                          check_text)
from bert_jax.data.readers.lines import (Line, encoding_error, iter_lines,
                                         read_bytes, source_name)


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
  source = source_name(path)
  if quoting not in _QUOTING:
    raise ValueError(f"quoting must be one of {sorted(_QUOTING)}, got "
                     f'{quoting!r}')
  col = Collector(source, on_error, labels, max_examples)
  raw = read_bytes(path, data)
  consumed: list[Line] = []

  def feed():
    for line in iter_lines(raw, encoding, notes=col.report.notes):
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
        raise encoding_error(source, bad)
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
        raise encoding_error(source, bad)
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
