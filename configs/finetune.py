r"""Fine-tuning: classification, pairs, tagging, relations, span QA.

  python -m bert_jax.main --config=configs/finetune.py:drug_reviews \
      --config.loss.name=focal --config.loss.gamma=2 --workdir=/tmp/ft

`<arg>` picks a task preset (below); every field can be overridden, e.g.
`--config.data.train=path/to/train.tsv --config.data.eval=path/to/dev.tsv`.
"""

import ml_collections

from configs import common

PRESETS = {
    # name: (task, train data, train split, eval split, max_seq_length, epochs)
    'drug_reviews': ('classification', 'drug_reviews', 'train', 'test', 256, 3),
    'spam_assassin': ('classification', 'spam_assassin', 'train', 'test', 256, 2),
    'bbc_topics': ('classification', 'bbc_topics', 'train', 'test', 256, 2),
    'boolq': ('classification', 'boolq', 'train', 'dev', 256, 1),
}


def loss_config(name: str = 'ce', **hparams) -> ml_collections.ConfigDict:
  """config.loss: `name` plus every loss hyperparameter (None = not set).

  All keys exist so each can be set from the command line; the task passes
  the ones that are set to `losses.from_config`, which rejects a key the
  named loss does not take.
  """
  from bert_jax.tasks import finetune  # pylint: disable=g-import-not-at-top
  fields = {k: ml_collections.FieldReference(None, field_type=object)
            for k in finetune.LOSS_KEYS}
  c = ml_collections.ConfigDict(dict(name=name, **fields))
  c.update(hparams)
  return c


def get_config(arg: str = 'drug_reviews') -> ml_collections.ConfigDict:
  if arg not in PRESETS:
    raise ValueError(f'configs/finetune.py:{arg}: unknown preset; known: '
                     f'{sorted(PRESETS)}')
  task, train, train_split, eval_split, max_len, epochs = PRESETS[arg]
  c = common.base_config()
  c.task = task
  c.model.init_from = 'minilm'
  c.data = ml_collections.ConfigDict(dict(
      train=train, eval='', train_split=train_split, eval_split=eval_split,
      split_seed=0, vocab='', max_seq_length=max_len, on_error='raise',
      sampling_q=ml_collections.FieldReference(None, field_type=float),
      reader_options=ml_collections.ConfigDict()))
  c.data.reader_options.unlock()   # free-form kwargs for local-file readers
  c.loss = loss_config('ce')
  c.pooling = 'pooler'
  c.eval_logit_adjustment_tau = 0.0
  c.num_epochs = float(epochs)
  c.total_steps = -1                # -1: from num_epochs and the train size
  c.batch_size = 16
  c.eval_batch_size = 32
  c.optim.update(name='adamw', lr=5e-5, weight_decay=0.01, warmup_fraction=0.1,
                 decay='linear', clip_global_norm=1.0)
  c.log_every = 10
  c.eval_every = 0                  # 0: evaluate at the end only
  c.checkpoint_every = 1000
  c.best_metric = 'macro_f1'
  return c
