r"""Use a finished run: label new text, or fill in [MASK] tokens.

Label new text with a fine-tuning run (any task):

  python -m bert_jax.predict --workdir=/tmp/ft --input=new.tsv --output=-

`--input` is a file in the formats training reads (format from the
extension or the run's `reader_options.format`; `--format` overrides), `-`
for standard input (then `--format`, or the run's training file format), or
a registered dataset split `NAME:SPLIT` (e.g. `drug_reviews:test`). Labels
are optional: when the input has them, the task's eval metrics are printed
to stderr as well. One JSON line per example goes to `--output`:

  classification, relation  {guid, label, probs: {label: p}}
  multi-label               {guid, labels, probs: {label: p}}
  tagging                   {guid, tokens, tags, spans: [{type, start, end,
                            text}]}  (word offsets, end exclusive; for word
                            segmentation the spans are the words and `text`
                            the segmented sentence; POS: no spans)
  span QA                   {guid, answer, score, start, end}  (character
                            offsets in the context; None for no answer)

How: the run's `config.json` is read back, the task is built from it with
`config.data.eval` set to the input (so the input goes through exactly the
features, eval step and decoding of training's evaluation, and the output
equals training's `predictions.jsonl` on the same data), the parameters of
the best checkpoint (`<workdir>/best`, else the newest of
`<workdir>/checkpoints`; `--checkpoint=final` for the newest) are restored,
and the task's eval batches are run, cut to length buckets (one compiled
function per bucket). The task also re-reads its training data, for its
label set.

Fill-mask with a pretraining run's weights (`<workdir>/hf`, which it exports
when it ends) or any HF BERT directory with an MLM head:

  python -m bert_jax.predict --task=fill_mask --model=/tmp/pt \
      --text="the capital of france is [MASK] ." --top_k=5

prints, per input line, `{text, masks: [[{token, prob}, ...], ...]}`: the
top-k tokens of each [MASK] in order, with their softmax probabilities.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import sys
import tempfile
from typing import Any, Iterable, Optional, TextIO

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=g-import-not-at-top
from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
import numpy as np

from bert_jax import progress
from bert_jax import runs
# pylint: enable=g-import-not-at-top

FLAGS = flags.FLAGS


def _define_flags():
  """The command-line flags (defined when run as a program, so that the
  library functions can be imported next to other absl programs)."""
  flags.DEFINE_string(
      'task', '', "'' : the task of --workdir's run; fill_mask: top-k tokens "
      'for each [MASK] with --model')
  flags.DEFINE_string('workdir', None, 'A fine-tuning run directory.')
  flags.DEFINE_string(
      'input', None, "A file, '-' for stdin, or a registered dataset NAME:SPLIT.")
  flags.DEFINE_string('output', '-', "JSON lines; '-' for stdout.")
  flags.DEFINE_string(
      'format', '', 'Input format (tsv, csv, jsonl, conll, squad, semeval, '
      "relation_jsonl); '' : from the extension or the run's config.")
  flags.DEFINE_enum(
      'checkpoint', 'best', ['best', 'final'],
      'best: the best-metric checkpoint if the run kept one, else the final.')
  flags.DEFINE_integer('batch_size', 0, "0: the run's config.eval_batch_size.")
  flags.DEFINE_enum('on_error', 'raise', ['raise', 'skip'],
                    'What a bad input record does.')
  flags.DEFINE_string(
      'model', None, 'fill_mask: a pretraining workdir (its hf/ export) or a HF '
      'BERT directory with an MLM head.')
  flags.DEFINE_string('text', None,
                      'fill_mask: one text (else --input lines).')
  flags.DEFINE_integer('top_k', 5, 'fill_mask: tokens per [MASK].')


# Suffix a stdin input is saved under, so the reader is picked as for a file.
_SUFFIX = {'tsv': '.tsv', 'csv': '.csv', 'jsonl': '.jsonl', 'squad': '.json',
           'conll': '.conll', 'semeval': '.txt', 'relation_jsonl': '.jsonl'}


def _per_token_outputs(task, params, batch) -> set[str]:
  """Names of the eval outputs with a sequence axis (axis 1 follows the
  batch's width), found from their shapes at two widths (tracing only)."""
  from bert_jax.data import batching  # pylint: disable=g-import-not-at-top
  t = batch['input_ids'].shape[1]
  shapes = [jax.eval_shape(task.eval_step, params,
                           batching.trim_to_bucket(batch, t, w))[1]
            for w in (t, t - 1)]
  return {k for k in shapes[0] if shapes[0][k].shape != shapes[1][k].shape}


def _pad_width(value: np.ndarray, max_len: int) -> np.ndarray:
  """A per-token output [B, width, ...] padded back to `max_len` columns
  with zeros (never read: the tasks read real tokens only), so the outputs
  of batches of different buckets concatenate."""
  pad = [(0, 0), (0, max_len - value.shape[1])] + [(0, 0)] * (value.ndim - 2)
  return np.pad(value, pad)


def run_eval(task, params, batch_size: int) -> tuple[dict, dict]:
  """The task's eval batches through its eval_step, cut to length buckets.

  Returns (averaged device metrics, gathered outputs by name). One process.
  """
  from bert_jax import train  # pylint: disable=g-import-not-at-top
  from bert_jax.tasks import base  # pylint: disable=g-import-not-at-top
  max_len = int(task.config.data.max_seq_length)
  task.trim_eval_batches = False
  per_token = _per_token_outputs(
      task, params, next(iter(task.eval_batches(batch_size, 0, 1))))
  # Cut every task's batches (training cuts only where no output is per
  # token; here those are padded back).
  task.trim_eval_batches = True
  eval_fn = jax.jit(task.eval_step)   # compiles once per bucket
  n = task.num_eval_examples()
  total, outputs = None, []
  for batch in progress.bar(task.eval_batches(batch_size, 0, 1),
                            total=None if n is None else -(-n // batch_size),
                            desc='predict', unit='batch'):
    batch = train._pad_batch(batch, batch_size)  # pylint: disable=protected-access
    metrics, out = eval_fn(params, batch)
    total = base.add_metrics(total, metrics)
    outputs.append({k: _pad_width(v, max_len) if k in per_token else v
                    for k, v in jax.device_get(out).items()})
  if total is None:
    raise ValueError('the input holds no example')
  gathered = {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}
  return base.finalize_metrics(total), gathered


def _input_config(config, source: str, on_error: str):
  """The run's config with the input as its eval data."""
  from bert_jax.data import datasets  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict(config.to_dict())
  d = config.data
  name, _, split = source.partition(':')
  if name in datasets.names() and split:
    d.eval, d.eval_split = name, split
  else:
    d.eval, d.eval_split = source, 'predict'
  d.max_eval_examples = 0
  d.on_error = on_error
  d.eval_labels_optional = True
  return config


@contextlib.contextmanager
def _input_path(source: str, fmt: str, config):
  """Yields a path for `source`; stdin ('-') is saved to a temporary file
  whose suffix picks the reader."""
  if source != '-':
    yield source
    return
  from bert_jax.data import datasets  # pylint: disable=g-import-not-at-top
  d = config.data
  fmt = (fmt or d.reader_options.get('format', '')
         or datasets.format_of(d.eval or '') or datasets.format_of(d.train))
  if fmt not in _SUFFIX:
    raise ValueError(
        f"--input=- needs --format (one of {', '.join(sorted(_SUFFIX))}): the "
        f'run trained on {d.train!r}, which names no file format')
  with tempfile.TemporaryDirectory() as tmp:
    path = pathlib.Path(tmp) / f'stdin{_SUFFIX[fmt]}'
    path.write_bytes(sys.stdin.buffer.read())
    yield str(path)


def predict(workdir, source: str, *, fmt: str = '', checkpoint: str = 'best',
            batch_size: int = 0, on_error: str = 'raise'
            ) -> tuple[list[dict], Optional[dict]]:
  """Rows of predictions for `source` with the run in `workdir`.

  Returns (rows, metrics): metrics is the task's eval summary when every
  input example is labelled, else None.
  """
  from bert_jax import tasks  # pylint: disable=g-import-not-at-top
  run_config = runs.load_run_config(workdir)
  if run_config.task == 'pretrain':
    raise ValueError(f'{workdir} is a pretraining run: use --task=fill_mask '
                     f'--model={workdir}')
  runs.checkpoint_dir(workdir, checkpoint)   # fail before reading any data
  if fmt and source != '-':
    raise ValueError(f"--format is for --input=- (stdin); {source}'s format "
                     'comes from its extension')
  with _input_path(source, fmt, run_config) as path:
    config = _input_config(run_config, path, on_error)
    task = tasks.get(config.task)(config)
  batch_size = batch_size or int(config.eval_batch_size)
  first = next(iter(task.eval_batches(batch_size, 0, 1)))
  params, _ = runs.restore_params(workdir, config, task, first, checkpoint)
  metrics, outputs = run_eval(task, params, batch_size)
  rows = task.prediction_rows(outputs)
  unlabelled = task.eval_ds.report.notes.get('unlabelled', 0)
  summary = None
  if not unlabelled:
    summary = task.summarize_eval(metrics, outputs)
    summary.pop('_predictions', None)
  return rows, summary


# ---------------------------------------------------------------- fill-mask
def mlm_directory(model: str | os.PathLike) -> pathlib.Path:
  """A pretraining workdir's `hf/` export, or `model` itself."""
  path = pathlib.Path(model).expanduser()
  if (path / 'hf' / 'config.json').exists():
    return path / 'hf'
  return path


class FillMask:
  """Top-k tokens for each [MASK] of a text, with a BERT MLM head.

  The encoder and the tied-decoder MLM head (`heads.BertForPreTraining`) run
  at the [MASK] positions only; probabilities are the softmax over the
  vocabulary at each position.
  """

  def __init__(self, model: str | os.PathLike, max_seq_length: int = 512):
    from bert_jax import hf_weights  # pylint: disable=g-import-not-at-top
    from bert_jax.heads import BertForPreTraining  # pylint: disable=g-import-not-at-top
    directory = mlm_directory(model)
    self.bert, self.params, self.tokenizer = hf_weights.load_mlm(directory)
    self.model = BertForPreTraining(self.bert)
    self.max_len = min(max_seq_length, self.bert.max_position_embeddings)
    self.mask_id = self.tokenizer.token_to_id('[MASK]')
    self._apply = jax.jit(lambda p, *a: self.model.apply({'params': p}, *a)[0])

  def __call__(self, texts: list[str], top_k: int = 5) -> list[dict]:
    encs = self.tokenizer.encode_batch(texts, max_length=self.max_len,
                                       truncation='longest_first')
    n, t = len(encs), max(len(e.ids) for e in encs)
    ids = np.zeros((n, t), np.int32)
    mask = np.zeros((n, t), np.int32)
    positions = [np.flatnonzero(np.asarray(e.ids) == self.mask_id)
                 for e in encs]
    p = max(1, max(len(x) for x in positions))
    pos = np.zeros((n, p), np.int32)
    for i, (e, x) in enumerate(zip(encs, positions)):
      ids[i, :len(e.ids)] = e.ids
      mask[i, :len(e.ids)] = 1
      pos[i, :len(x)] = x
    logits = np.asarray(self._apply(self.params, ids, np.zeros_like(ids),
                                    mask, pos), np.float32)
    probs = np.asarray(jax.nn.softmax(logits, -1))
    rows = []
    for i, (text, x) in enumerate(zip(texts, positions)):
      masks = []
      for j in range(len(x)):
        top = np.argsort(-probs[i, j], kind='stable')[:top_k]
        masks.append([dict(token=self.tokenizer.id_to_token(int(k)),
                           prob=float(probs[i, j, k])) for k in top])
      rows.append(dict(text=text, masks=masks))
    return rows


# --------------------------------------------------------------------- main
@contextlib.contextmanager
def _open_output(path: str):
  if path == '-':
    yield sys.stdout
  else:
    with open(path, 'w', encoding='utf-8') as f:
      yield f


def _write(rows: Iterable[dict[str, Any]], f: TextIO) -> None:
  for row in rows:
    f.write(json.dumps(row, ensure_ascii=False) + '\n')
  f.flush()


def _lines(source: str) -> list[str]:
  stream = (sys.stdin if source == '-'
            else open(source, encoding='utf-8'))  # pylint: disable=consider-using-with
  with stream:
    return [l.rstrip('\n') for l in stream if l.strip()]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)
  if FLAGS.task == 'fill_mask':
    if not FLAGS.model:
      raise app.UsageError('--task=fill_mask needs --model=DIR')
    if (FLAGS.text is None) == (FLAGS.input is None):
      raise app.UsageError('--task=fill_mask needs --text or --input (one)')
    texts = [FLAGS.text] if FLAGS.text is not None else _lines(FLAGS.input)
    filler = FillMask(FLAGS.model)
    bs = FLAGS.batch_size or 32
    with _open_output(FLAGS.output) as f:
      for start in progress.bar(range(0, len(texts), bs), desc='fill_mask',
                                unit='batch', total=-(-len(texts) // bs)):
        _write(filler(texts[start:start + bs], FLAGS.top_k), f)
    return
  if FLAGS.task:
    raise app.UsageError(f"--task={FLAGS.task!r}; known: '' (the run's "
                         'task), fill_mask')
  if not FLAGS.workdir or not FLAGS.input:
    raise app.UsageError('needs --workdir=DIR and --input=FILE|-|NAME:SPLIT')
  rows, summary = predict(FLAGS.workdir, FLAGS.input, fmt=FLAGS.format,
                          checkpoint=FLAGS.checkpoint,
                          batch_size=FLAGS.batch_size,
                          on_error=FLAGS.on_error)
  with _open_output(FLAGS.output) as f:
    _write(rows, f)
  if summary is not None:
    scalars = {k: v for k, v in summary.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    sys.stderr.write(summary.get('report', '') + json.dumps(scalars) + '\n')


if __name__ == '__main__':
  runs.run_command(main, _define_flags)
