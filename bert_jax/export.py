r"""Export a fine-tuned run as a HF transformers directory.

  python -m bert_jax.export --workdir=/tmp/ft --out=/tmp/ft_hf

writes `config.json` (with `id2label` / `label2id`), `model.safetensors`,
`vocab.txt` and `tokenizer_config.json`, loadable with

  head (bert_jax.heads)                    transformers class
  BertForSequenceClassification, pooler    AutoModelForSequenceClassification
  BertForTokenClassification               AutoModelForTokenClassification
  BertForSpanQA                            AutoModelForQuestionAnswering

with the same logits. A head HF has no class for is refused with an error
naming it: classification with `config.pooling` other than 'pooler', the
relation heads, and any parameters beyond the encoder and the linear head
(a CRF's transitions, for one). The parameters come from the run's best
checkpoint (else its newest; `--checkpoint=final` for the newest).
Pretraining runs export themselves to `<workdir>/hf` (`BertForPreTraining`,
`hf_weights.export_hf`) when they end.
"""

from __future__ import annotations

import json
import os
import pathlib

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=g-import-not-at-top
from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import hf_weights
from bert_jax import heads
from bert_jax import runs
# pylint: enable=g-import-not-at-top

FLAGS = flags.FLAGS

def _define_flags():
  """The command-line flags (defined when run as a program, so that the
  library functions can be imported next to other absl programs)."""
  flags.DEFINE_string('workdir', None, 'A fine-tuning run directory.')
  flags.DEFINE_string('out', None, 'The HF directory to write.')
  flags.DEFINE_enum('checkpoint', 'best', ['best', 'final'],
                                  'Which checkpoint (see bert_jax.predict).')


class UnsupportedHead(ValueError):
  """The run's head has no transformers counterpart."""


def _linear(params, name: str) -> dict[str, np.ndarray]:
  """A Flax Dense ([in, out] kernel) as a torch Linear's weight and bias."""
  return {'weight': np.ascontiguousarray(np.asarray(params[name]['kernel'],
                                                    np.float32).T),
          'bias': np.asarray(params[name]['bias'], np.float32)}


def hf_head(model, param_names) -> tuple[str, str, str, bool]:
  """(HF architecture, our head's parameter name, the torch module's name,
  whether HF keeps the pooler) of a bert_jax head whose top-level parameter
  names are `param_names`; UnsupportedHead naming the head and what to use
  instead where HF has none."""
  name = type(model).__name__
  if isinstance(model, heads.BertForSequenceClassification):
    if model.pooling != 'pooler':
      raise UnsupportedHead(
          f"{name} with config.pooling={model.pooling!r} has no HF "
          "counterpart (HF's BertForSequenceClassification classifies the "
          "pooler output); retrain with --config.pooling=pooler to export, "
          'or rebuild the pooling on top of an exported encoder')
    arch, ours, torch_name, pooler = ('BertForSequenceClassification',
                                      'classifier', 'classifier', True)
  elif isinstance(model, heads.BertForTokenClassification):
    arch, ours, torch_name, pooler = ('BertForTokenClassification', 'tagger',
                                      'classifier', False)
  elif isinstance(model, heads.BertForSpanQA):
    arch, ours, torch_name, pooler = ('BertForQuestionAnswering', 'qa',
                                      'qa_outputs', False)
  elif isinstance(model, heads.BertForRelation):
    raise UnsupportedHead(
        f'{name} (relation_method={model.method!r}) has no HF counterpart: HF '
        'has no entity-pair relation head. Re-create it on top of the '
        "exported encoder (bert_jax.heads.BertForRelation shows the inputs "
        'and the linear layer `relation`), or train a '
        'configs/finetune.py:pair_classification / classification model '
        'with the entities marked in the text')
  else:
    raise UnsupportedHead(f'{name} has no HF export here')
  extra = sorted(set(param_names) - {'bert', ours})
  if extra:
    raise UnsupportedHead(
        f'{name} has parameters HF\'s {arch} has no place for: {extra} (e.g. '
        'a CRF layer\'s transitions); retrain without them to export, or '
        're-create those parts on top of the exported model')
  return arch, ours, torch_name, pooler


def export(workdir, out, *, checkpoint: str = 'best') -> pathlib.Path:
  """Writes the HF directory of the fine-tuning run in `workdir` to `out`."""
  from bert_jax import tasks  # pylint: disable=g-import-not-at-top
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  config = runs.load_run_config(workdir)
  if config.task == 'pretrain':
    raise UnsupportedHead(
        f'{workdir} is a pretraining run: it exported BertForPreTraining to '
        f'{pathlib.Path(workdir) / "hf"} when it ended '
        '(hf_weights.export_hf)')
  runs.checkpoint_dir(workdir, checkpoint)   # fail before reading data
  task = tasks.get(config.task)(config)
  # Refuse before restoring anything: the head is known from the task.
  first = next(iter(task.eval_batches(1, 0, 1)))
  abstract = jax.eval_shape(task.init_params,
                            jax.ShapeDtypeStruct((2,), jnp.uint32), first)
  arch, ours, torch_name, pooler = hf_head(task.model, abstract)
  params, step = runs.restore_params(workdir, config, task, first,
                                        checkpoint)
  params = jax.tree_util.tree_map(lambda x: np.asarray(jax.device_get(x)),
                                  params)
  state = hf_weights.encoder_hf_state_dict(task.bert_config,
                                           params['bert'], pooler=pooler)
  state.update({f'{torch_name}.{k}': v
                for k, v in _linear(params, ours).items()})
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  save_file(state, str(out / 'model.safetensors'), metadata={'format': 'pt'})
  hf = task.bert_config.to_hf_dict()
  hf['architectures'] = [arch]
  names = getattr(task, 'label_names', None) or getattr(task, 'tag_names',
                                                        None)
  if names is not None:
    hf['id2label'] = {str(i): n for i, n in enumerate(names)}
    hf['label2id'] = {n: i for i, n in enumerate(names)}
  (out / 'config.json').write_text(json.dumps(hf, indent=2, sort_keys=True))
  task.tokenizer.save(out)
  logging.info('exported %s (step %d of %s) to %s', arch, step, workdir, out)
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not FLAGS.workdir or not FLAGS.out:
    raise app.UsageError('needs --workdir=DIR and --out=HF_DIR')
  out = export(FLAGS.workdir, FLAGS.out, checkpoint=FLAGS.checkpoint)
  print(f'wrote {out}; load it with transformers.AutoModelFor... '
        f'.from_pretrained({str(out)!r})')


if __name__ == '__main__':
  runs.run_command(main, _define_flags)
