"""Fields every job shares. Job configs start from `base_config()`."""

import ml_collections

from bert_jax import optim


def model_config(**overrides) -> ml_collections.ConfigDict:
  """`config.model`: `init_from` ('' = fresh init, 'minilm', or a HF-format
  directory) and the BertConfig fields given, nothing more.

  A free-form section, like `config.loss`: BertConfig (bert_jax/model.py)
  lists the fields and gives the defaults, and the run checks this section
  against it when it starts (an unknown key or a wrong type is an error
  naming it). With `init_from` the pretrained config.json fixes the
  architecture: set only execution options (dtype, scan_layers, dropout, ...).
  """
  m = ml_collections.ConfigDict(dict(init_from=''))
  m.update(overrides)
  return m


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = ''
  c.seed = 0
  c.model = model_config()
  c.optim = optim.default_config()
  # A field whose default is None takes a command-line value only if typed.
  for key, kind in (('freeze', object), ('lr_multipliers', object),
                    ('layerwise_lr_decay', float), ('warmup_steps', int),
                    ('warmup_fraction', float)):
    if c.optim[key] is None:
      c.optim[key] = ml_collections.FieldReference(None, field_type=kind)
  c.batch_size = 32              # global, across all devices and hosts
  c.eval_batch_size = 64
  c.total_steps = 1000           # optimizer micro-steps
  c.log_every = 50
  c.eval_every = 500             # every N steps; 0: only at the end
  c.checkpoint_every = 500
  c.keep_checkpoints = 2
  c.best_metric = ''             # eval metric whose best value keeps a checkpoint
  c.nonfinite = 'stop'           # 'stop' or 'skip' a step with NaN/Inf
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
  c.sharding = 'dp'              # 'dp' or 'fsdp'
  c.compilation_cache_dir = ''   # persistent XLA compilation cache
  # With the whole encoder frozen (optim.freeze) and its dropout 0, compute
  # its outputs once and train the head on them (bert_jax/frozen.py).
  c.cache_frozen_encoder = True
  c.distributed = ml_collections.ConfigDict(dict(
      coordinator_address='', num_processes=1, process_id=0))
  return c
