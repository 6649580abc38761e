"""Fields every job shares. Job configs start from `base_config()`."""

import ml_collections


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
  c.optim = optim_config()
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
  c.cache_frozen_encoder_max_gib = 8.0   # per host; larger: not cached
  c.distributed = ml_collections.ConfigDict(dict(
      coordinator_address='', num_processes=1, process_id=0))
  return c


def optim_config() -> ml_collections.ConfigDict:
  """`config.optim`: the fields of bert_jax/optim.py, whose docstring says
  what each means, with optim's defaults (tests/test_optim.py checks they
  agree with `optim.default_config()`)."""
  return ml_collections.ConfigDict(dict(
      name='adamw',                 # 'adamw', 'lamb' or 'adam' (coupled L2)
      lr=1e-4,                      # peak, at the end of warmup
      b1=0.9, b2=0.999, eps=1e-6,
      weight_decay=0.01,
      bias_correction=True,         # False: BERT's AdamWeightDecayOptimizer
      wd_exclude=r'LayerNorm/|layer_norm/|bias$',  # regex(es): no weight decay
      lamb_exclude_from_layer_adaptation=True,
      clip_global_norm=1.0,         # 0 or None: off
      warmup_steps=_unset(int),     # optimizer updates, or ...
      warmup_fraction=_unset(float),  # ... a fraction of them (at most one set)
      decay='linear',               # 'linear', 'polynomial', 'cosine', 'constant'
      power=1.0,                    # of 'polynomial'
      end_lr=0.0,
      grad_accum_steps=1,
      layerwise_lr_decay=_unset(float),  # d: update x d ** (layers + 1 - depth)
      freeze=_unset(object),        # regex(es): no updates, no optimizer state
      lr_multipliers=_unset(object)))  # [(regex, factor)]: first match wins


def _unset(kind) -> ml_collections.FieldReference:
  """None, typed: a field that defaults to None takes a command-line value
  only if ml_collections knows its type (object: a string or a tuple)."""
  return ml_collections.FieldReference(None, field_type=kind)
