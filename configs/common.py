"""Fields every job shares. Job configs start from `base_config()`."""

import ml_collections


def model_config(**overrides) -> ml_collections.ConfigDict:
  """`config.model`: BertConfig fields plus `init_from` ('' = fresh init)."""
  m = ml_collections.ConfigDict(dict(
      init_from='',                 # '', 'minilm', or a HF-format directory
      vocab_size=30522, hidden_size=768, num_hidden_layers=12,
      num_attention_heads=12, intermediate_size=3072, hidden_act='gelu',
      hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
      max_position_embeddings=512, type_vocab_size=2, initializer_range=0.02,
      layer_norm_eps=1e-12, pad_token_id=0, num_entity_types=0,
      dtype='float32', param_dtype='float32',
      # ml_collections needs a type for a field that may be None.
      attention_implementation=ml_collections.FieldReference(None, field_type=str),
      scan_layers=False, remat_policy='none',
      # Last layer only where the heads read (exact; see BertConfig).
      last_layer_at_outputs=True))
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
      warmup_steps=None,            # optimizer updates, or ...
      warmup_fraction=None,         # ... a fraction of them (at most one set)
      decay='linear',               # 'linear', 'polynomial', 'cosine', 'constant'
      power=1.0,                    # of 'polynomial'
      end_lr=0.0,
      grad_accum_steps=1,
      layerwise_lr_decay=None,      # d: update x d ** (layers + 1 - depth)
      freeze=None,                  # regex(es): no updates, no optimizer state
      lr_multipliers=None))         # [(regex, factor)]: first match wins
