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

The readers live in one module per format family: `delimited` (TSV/CSV),
`jsonl`, `multilabel`, `conll`, `slash_tagged`, `chat`, `relation`
(SemEval-2010 Task 8, relation JSONL), `squad`, `text_dir` and `tfds`; what
they share is in `errors` (`DataError`, `ConfigError`, `ReadReport`, the
`Collector` that applies `on_error`) and `lines` (bytes and decoded lines).
This package re-exports their public names: `readers.read_delimited`,
`readers.DataError` and the rest are where they always were.
"""

# pylint: disable=g-importing-member,unused-import
from bert_jax.data.readers.chat import CHAT_TAGS, read_chat
from bert_jax.data.readers.conll import read_conll
from bert_jax.data.readers.delimited import read_delimited
from bert_jax.data.readers.errors import (Collector, ConfigError, DataError,
                                          FieldRef, MAX_KEPT_ERRORS, PathLike,
                                          ReadReport, check_text, merge_reports,
                                          sort_labels)
from bert_jax.data.readers.jsonl import (iter_json_objects, read_jsonl,
                                         require_field)
from bert_jax.data.readers.multilabel import (label_list,
                                              read_multilabel_delimited,
                                              read_multilabel_jsonl)
from bert_jax.data.readers.relation import (parse_marked_sentence,
                                            read_relation_jsonl, read_semeval)
from bert_jax.data.readers.slash_tagged import read_slash_tagged
from bert_jax.data.readers.squad import read_squad
from bert_jax.data.readers.text_dir import read_text_dir
from bert_jax.data.readers.tfds import TFDS_SUPPORTED, read_tfds, tfds_task_kind
