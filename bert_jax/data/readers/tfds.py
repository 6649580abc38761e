"""Prepared TensorFlow Datasets splits: GLUE, BoolQ, CoNLL-2003, SQuAD."""

from __future__ import annotations

import importlib
from typing import Optional

from bert_jax.data import examples as ex
from bert_jax.data.readers.errors import (Collector, DataError, PathLike,
                                          ReadReport, check_text)
from bert_jax.data.readers.squad import squad_question


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
  return squad_question(col, source, 'answers', qa, context, True,
                        lambda _: number)
