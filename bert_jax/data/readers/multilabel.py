"""Multi-label classification: JSON lines and TSV/CSV with a list of labels."""

from __future__ import annotations

import os
from typing import Any, Callable, Optional, Sequence

from bert_jax.data import examples as ex
from bert_jax.data.readers.delimited import read_delimited
from bert_jax.data.readers.errors import (Collector, DataError, FieldRef,
                                          PathLike, ReadReport, check_text,
                                          describe)
from bert_jax.data.readers.jsonl import (iter_json_objects, json_texts,
                                         require_field)
from bert_jax.data.readers.lines import read_bytes, source_name


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
  source = source_name(path)
  col = Collector(source, on_error, labels, max_examples)
  raw = read_bytes(path, data)
  for line, obj in iter_json_objects(col, raw, encoding):
    try:
      text, pair = json_texts(source, obj, line, text_field, text_pair_field,
                              text_transform)
      values = require_field(source, obj, label_field, line)
      if not isinstance(values, list):
        raise DataError(source, line, label_field,
                        f'expected a list of labels, got {describe(values)}',
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
