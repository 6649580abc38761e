r"""Loss ablation: every imbalanced-class loss against cross-entropy.

Two ways to run it. The default, tune-then-test (`tune(arg)` below,
`experiments/tune.py`): each variant tuned on dev with the same budget, the
selected point tested once with 3 seeds. The quick look (`sweep(add, arg)`,
`experiments/sweep.py`): every loss at its paper's defaults and CE's
learning rate, 3 seeds, scored on test; nothing tuned per loss, no dev split,
so it cannot support a claim that one loss beats another.

  python -m experiments.sweep --config=configs/ablation.py:drug_reviews \
      --workdir=workdirs/ablation_drug_reviews --parallel=2
  python -m experiments.report workdirs/ablation_drug_reviews

`<arg>` is a comma-separated list (big_vision style): a `configs/finetune.py`
preset (`drug_reviews`, `spam_assassin`, `msra_ner`, ...), then optional
words and `key=value` items:
  smoke         a tiny random-init BERT (MiniLM vocab), 100 steps, seeds 0, 1:
                the same sweep, checking the plumbing in minutes on 2 CPU cores.
  seeds=N       the first N of the seeds 0, 1, 2 (default 3; smoke 2).
  variants=a+b  only these loss variants (names of VARIANTS below for
                the sweep, of TUNE_VARIANTS for tune).
  max_len=N     config.data.max_seq_length (shorter: cheaper runs).
  train_examples=N, eval_examples=N
                a sample of N examples (seeded by data.split_seed)
                (config.data.max_{train,eval}_examples): subsets for the
                CPU budget, said in the report.
  epochs=X      config.num_epochs.
  steps=N       config.total_steps (instead of epochs).
  lr=X          config.optim.lr (the same for every variant).
  init_from=DIR config.model.init_from, e.g. the `hf` export of
                `configs/pretrain.py:chinese_msra` for msra_ner; the
                encoder brings its architecture (the preset's or smoke's
                model sizes are dropped).
  model=tiny    a fresh BERT of 2 layers, hidden 128, 2 heads,
                intermediate 256 (the from-scratch tagging model of
                experiments/results/tagging): CPU budgets for the Chinese
                presets, which have no pretrained weights here.
Every run but smoke ones cuts its batches to length buckets (`data.length_buckets`: each
batch as wide as its longest example rounded up to a multiple of
max_len / 4), which changes the cost, not the result; batches are not
grouped by length, so every variant (q-power sampling included) sees the
same kind of batches.
`get_config(arg)` builds one run's base config; `sweep(add, arg)` calls
`add(**overrides)` once per run. `sweep` takes `arg` as its second parameter
(big_vision's `sweep(add)` cannot see it; `experiments.sweep` passes it to a
`sweep` that has two parameters), so a smoke or single-seed sweep is the
same file with another arg. The same arg reaches `get_config` in every run.
"""

import ml_collections

from configs import common
from configs import finetune

SEEDS = (0, 1, 2)
SMOKE_LR = 3e-3
# `model=<name>` items: fresh BERT sizes.
TINY_MODELS = {
    'tiny': dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=256),
}

# Loss variants: name -> overrides. Hyperparameters are written out even where
# they equal the registry defaults, so the report's row labels say what ran.
VARIANTS = {
    'ce': {'loss.name': 'ce'},
    'weighted_ce': {'loss.name': 'weighted_ce', 'loss.alpha': 'inverse_freq'},
    'class_balanced_ce': {'loss.name': 'class_balanced_ce', 'loss.beta': 0.999},
    'focal_g1': {'loss.name': 'focal', 'loss.gamma': 1.0},
    'focal_g2': {'loss.name': 'focal', 'loss.gamma': 2.0},
    'ghm': {'loss.name': 'ghm', 'loss.bins': 30, 'loss.momentum': 0.75},
    'dsc': {'loss.name': 'dsc', 'loss.alpha': 1.0, 'loss.gamma': 1.0},
    'tversky': {'loss.name': 'tversky', 'loss.alpha': 0.3, 'loss.beta': 0.7},
    'logit_adjusted_ce': {'loss.name': 'logit_adjusted_ce', 'loss.tau': 1.0},
    # Post-hoc: trained with CE, logits adjusted at eval (adjusted_* metrics).
    'ce_posthoc_la': {'loss.name': 'ce', 'eval_logit_adjustment_tau': 1.0},
    # q-power resampling with CE: q=0 class-balanced, q=0.5 square-root.
    'ce_q0': {'loss.name': 'ce', 'data.sampling_q': 0.0},
    'ce_q0.5': {'loss.name': 'ce', 'data.sampling_q': 0.5},
}
# Variants that need training class counts (a prior, weights or a sampler);
# span QA's classes are token positions, which have none.
NEEDS_CLASS_COUNTS = ('weighted_ce', 'class_balanced_ce', 'logit_adjusted_ce',
                      'ce_posthoc_la', 'ce_q0', 'ce_q0.5', 'ce_qpower')
# Variants that sample tagging sentences by their rarest entity type; a
# segmentation scheme (`seg_*`: B/M/E/S of words, no types) has none. (Read
# from the preset's data.scheme: a preset that left it 'auto' is not caught
# here, and its run fails at start naming data.sampling_q.)
NEEDS_ENTITY_TYPES = ('ce_q0', 'ce_q0.5', 'ce_qpower')


def runnable(names: list[str], preset: str) -> list[str]:
  """`names` less the variants `preset`'s task cannot run (span QA: no
  class counts; word segmentation: no entity types)."""
  task = finetune.PRESETS[preset][0] if preset in finetune.PRESETS else ''
  scheme = (finetune.get_config(preset).data.get('scheme', '').lower()
            if task == 'tagging' else '')
  return [v for v in names
          if not (task == 'span_qa' and v in NEEDS_CLASS_COUNTS)
          and not (scheme.startswith('seg_') and v in NEEDS_ENTITY_TYPES)]


def parse_arg(arg: str) -> ml_collections.ConfigDict:
  """'drug_reviews,smoke,seeds=2' -> preset, smoke, seeds, variants."""
  parts = [p.strip() for p in (arg or 'drug_reviews').split(',') if p.strip()]
  a = ml_collections.ConfigDict(dict(
      preset=parts[0], smoke=False, seeds=None, variants=None, max_len=None,
      train_examples=0, eval_examples=0, epochs=None, steps=0, lr=None,
      init_from='', model=''))
  for part in parts[1:]:
    key, eq, value = part.partition('=')
    if not eq and key == 'smoke':
      a.smoke = True
    elif eq and key == 'seeds':
      a.seeds = int(value)
    elif eq and key == 'variants':
      a.variants = value.split('+')
    elif eq and key == 'max_len' and value.isdigit() and int(value) >= 8:
      a.max_len = int(value)
    elif (eq and key in ('train_examples', 'eval_examples', 'steps')
          and value.isdigit() and int(value) > 0):
      setattr(a, key, int(value))
    elif eq and key in ('epochs', 'lr') and _positive_float(value):
      setattr(a, key, float(value))
    elif eq and key == 'init_from' and value:
      a.init_from = value
    elif eq and key == 'model' and value in TINY_MODELS:
      a.model = value
    else:
      raise ValueError(f'configs/ablation.py:{arg}: unknown item {part!r}; '
                       'known: smoke, seeds=N, variants=a+b, max_len=N (>= 8), '
                       'train_examples=N, eval_examples=N, steps=N (> 0), '
                       'epochs=X, lr=X (> 0), init_from=DIR, '
                       f'model={"|".join(TINY_MODELS)}')
  if a.model and a.init_from:
    raise ValueError(f'configs/ablation.py:{arg}: model={a.model} is a fresh '
                     'model; init_from brings its own architecture')
  if a.seeds is None:
    a.seeds = 2 if a.smoke else len(SEEDS)
  if not 1 <= a.seeds <= len(SEEDS):
    raise ValueError(f'configs/ablation.py:{arg}: seeds must be in '
                     f'1..{len(SEEDS)}')
  return a


def _chosen(a: ml_collections.ConfigDict, known, arg: str) -> list[str]:
  """The `variants=a+b` of the arg (all of `known` by default), checked."""
  if a.variants is None:
    return list(known)
  unknown = [v for v in a.variants if v not in known]
  if unknown:
    raise ValueError(f'configs/ablation.py:{arg}: unknown variants {unknown}; '
                     f'known: {list(known)}')
  return list(a.variants)


def _variants(a: ml_collections.ConfigDict, known, arg: str) -> list[str]:
  """`_chosen`, less the variants the preset's task cannot run
  (`runnable`): left out of the default list, an error when named."""
  names = _chosen(a, known, arg)
  kept = runnable(names, a.preset)
  if a.variants is not None and kept != names:
    raise ValueError(
        f'configs/ablation.py:{arg}: preset {a.preset!r} cannot run '
        f'{[v for v in names if v not in kept]} (span QA has no class '
        'counts; word segmentation has no entity types to resample by)')
  return kept


def _positive_float(value: str) -> bool:
  try:
    return float(value) > 0
  except ValueError:
    return False


def get_config(arg: str = 'drug_reviews') -> ml_collections.ConfigDict:
  a = parse_arg(arg)
  c = finetune.get_config(a.preset)
  if a.smoke:
    _smoke(c)
  if a.max_len:
    c.data.max_seq_length = a.max_len
  if a.train_examples:
    c.data.max_train_examples = a.train_examples
  if a.eval_examples:
    c.data.max_eval_examples = a.eval_examples
  if a.epochs:
    c.num_epochs = a.epochs
  if a.steps:
    c.total_steps = a.steps
  if a.lr:
    c.optim.lr = a.lr
  if a.init_from:   # its config.json fixes the architecture: no sizes
    c.model = common.model_config(init_from=a.init_from)
  if a.model:       # the preset's other model keys (dropout, ...) stay
    c.model.init_from = ''
    c.model.update(TINY_MODELS[a.model])
  if not a.smoke:   # smoke: one compiled shape keeps the CI sweep quick
    step = max(1, c.data.max_seq_length // 4)
    c.data.length_buckets = tuple(range(step, c.data.max_seq_length, step))
  return c


def _smoke(c: ml_collections.ConfigDict) -> None:
  """A tiny fresh BERT with the MiniLM vocab, 100 steps of 16: checks the
  plumbing, not the losses (its numbers say little about which loss is
  better). Start-up and compilation dominate; the steps take seconds."""
  if not c.data.vocab:            # msra_ner keeps its Chinese vocab
    c.data.vocab = 'minilm'
  c.model.init_from = ''
  c.model.update(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=64, max_position_embeddings=64)
  c.data.max_seq_length = 64
  c.data.length_bucket_count = 0   # one compiled shape
  if 'max_train_examples' in c.data:   # tagging: a slice of the sentences
    c.data.max_train_examples = 256
    c.data.max_eval_examples = 256
  c.total_steps = 100
  c.batch_size = 16
  c.eval_batch_size = 64
  c.optim.update(lr=SMOKE_LR, warmup_fraction=0.1)
  c.log_every = 10
  c.checkpoint_every = 1000        # only the final checkpoint


def sweep(add, arg: str = 'drug_reviews') -> None:
  """One run per (seed, variant); seed-major, so a partly finished sweep
  already has every variant for the first seeds."""
  a = parse_arg(arg)
  names = _variants(a, VARIANTS, arg)
  for seed in SEEDS[:a.seeds]:
    for name in names:
      add(**VARIANTS[name], seed=seed)


# ---------------------------------------------------------------------------
# Tune-then-test (experiments/tune.py): every variant gets the same number of
# trials on a dev split, then its selected point is trained with the final
# seeds and evaluated once on test.
#
#   python -m experiments.tune --config=configs/ablation.py:drug_reviews \
#       --workdir=workdirs/tune_drug_reviews --parallel=2
#
# `tune(arg)` returns plain data (no I/O); experiments/tune.py validates it.
# Each variant: `fixed` overrides, a `search` space (a list of axes, each a
# list of override dicts; the trials are their product, the first axis
# varying slowest, in this order: ties on the dev metric go to the lower
# dev cross-entropy, then to the earlier trial), and
# optionally the dev `metric` it is selected on (post-hoc logit adjustment is
# selected and tested on its adjusted predictions).


def _axis(key: str, values) -> list[dict]:
  return [{key: v} for v in values]


# Learning rates per preset: one axis of every variant's search space,
# around the rate tuned for CE (drug_reviews 2e-4, spam_assassin 5e-5 in
# configs/finetune.py; msra_ner 1e-3 in its recorded ablation).
TUNE_LRS = {
    'drug_reviews': (1e-4, 2e-4, 4e-4),
    'spam_assassin': (3e-5, 1e-4, 3e-4),
    'msra_ner': (5e-4, 1e-3, 2e-3),
    'hkcancor_cws': (5e-4, 1e-3, 2e-3),
}

# variant -> (fixed overrides, the key hyperparameter's axis). Every key axis
# has two values, so with three learning rates every variant has 6 trials.
TUNE_VARIANTS = {
    # CE's second axis is label smoothing (0 = plain CE).
    'ce': ({'loss.name': 'ce'}, _axis('loss.label_smoothing', (0.0, 0.1))),
    'weighted_ce': ({'loss.name': 'weighted_ce'},
                    _axis('loss.alpha', ('inverse_freq', 'inverse_sqrt_freq'))),
    'class_balanced_ce': ({'loss.name': 'class_balanced_ce'},
                          _axis('loss.beta', (0.99, 0.999))),
    'focal': ({'loss.name': 'focal'}, _axis('loss.gamma', (1.0, 2.0))),
    'ghm': ({'loss.name': 'ghm', 'loss.momentum': 0.75},
            _axis('loss.bins', (10, 30))),
    # DSC (Li et al. 2020), alpha 0 included: with alpha > 0 its optimum is
    # p = 1/(1+alpha), not p = 1.
    'dsc_gold': ({'loss.name': 'dsc', 'loss.form': 'gold', 'loss.gamma': 1.0},
                 _axis('loss.alpha', (0.0, 1.0))),
    'dsc_ovr': ({'loss.name': 'dsc', 'loss.form': 'ovr', 'loss.gamma': 1.0},
                _axis('loss.alpha', (0.0, 1.0))),
    # The smoothing terms of the numerator / denominator, tied.
    'dice': ({'loss.name': 'dice'},
             [{'loss.smooth_nr': v, 'loss.smooth_dr': v} for v in (1e-5, 1.0)]),
    'tversky': ({'loss.name': 'tversky', 'loss.gamma': 1.0},
                [{'loss.alpha': a, 'loss.beta': 1 - a} for a in (0.3, 0.5)]),
    'logit_adjusted_ce': ({'loss.name': 'logit_adjusted_ce'},
                          _axis('loss.tau', (1.0, 2.0))),
    # Trained with CE; the eval adjusts the logits by tau * log prior.
    'ce_posthoc_la': ({'loss.name': 'ce'},
                      _axis('eval_logit_adjustment_tau', (1.0, 2.0))),
    # CE + dice, dice weighted 1 and CE by ce_weight.
    'ce_dice': ({'loss.name': 'dice'}, _axis('loss.ce_weight', (0.5, 1.0))),
    # CE with q-power resampling: q = 0 class-balanced, 0.5 square root.
    'ce_qpower': ({'loss.name': 'ce'}, _axis('data.sampling_q', (0.0, 0.5))),
}

# preset -> (dev split overrides, the CPU budget as arg items (the runs get
# `<preset>,<items>`), selection / test metric).
TUNE_PRESETS = {
    # Each budget is sized for about 3 hours of a 2-core CPU with
    # --parallel=2 (117 runs); the recorded ablations in experiments/results/
    # give the measured time.
    # drug_reviews' own dev split: 10% of drugsComTrain (60 reviews).
    'drug_reviews': ({'data.eval_split': 'dev'},
                     dict(max_len=64, epochs=2), 'macro_f1'),
    'spam_assassin': ({'data.eval_split': 'dev'},
                      dict(max_len=64, train_examples=400, eval_examples=300,
                           epochs=2), 'macro_f1'),
    # msra_ner has no dev split: 10% of train held out, stratified by each
    # sentence's rarest entity type. No Chinese weights ship here: a tiny
    # BERT from scratch (for a pretrained one, init_from=<the hf export of
    # configs/pretrain.py:chinese_msra> replaces model=tiny in the arg).
    'msra_ner': ({'data.eval_split': 'dev_from_train',
                  'data.dev_from_train': 0.1},
                 dict(model='tiny', max_len=64, train_examples=2000,
                      eval_examples=1000, epochs=6), 'span_f1'),
    # Cantonese word segmentation (HKCanCor, split by conversation: its own
    # dev split); a tiny BERT from scratch.
    'hkcancor_cws': ({'data.eval_split': 'dev'},
                     dict(model='tiny', max_len=64, train_examples=2000,
                          eval_examples=500, epochs=5), 'seg_f1'),
}


def tune(arg: str = 'drug_reviews') -> dict:
  """The tune-then-test protocol of `arg` as plain data.

  Returns a dict with:
    config_arg: the `configs/ablation.py` arg every run gets (the budget's
      items added unless `arg` sets them).
    metric: the dev metric trials are selected on, also the test metric.
    dev, test: overrides that make a run evaluate on the dev / test split.
    tuning_seeds, final_seeds: seeds of stage 1 / stage 2.
    baseline: the variant the others are compared with.
    variants: name -> dict(fixed=overrides, search=[axis, ...], metric=...),
      for the variants the preset's task can run (`runnable`).
    histogram: [(label, variant, point)]: runs whose test gold-class
      probabilities are histogrammed (the variant's selected point where it
      matches `point`, else its best trial at `point`, one final seed).
  `smoke` (the tiny model of `_smoke`, without the budget items) searches
  only the key hyperparameter at the smoke learning rate: 2 trials a
  variant, tuning seed 0, final seeds 0, 1, 2.
  """
  a = parse_arg(arg)
  preset = a.preset
  if preset not in TUNE_PRESETS:
    raise ValueError(f'configs/ablation.py:{arg}: no tune preset '
                     f'{preset!r}; known: {sorted(TUNE_PRESETS)}')
  dev, budget, metric = TUNE_PRESETS[preset]
  items = [p.strip() for p in arg.split(',') if p.strip()]
  given = {p.partition('=')[0] for p in items[1:]}
  if not a.smoke:   # smoke: its own tiny budget
    if 'init_from' in given:   # a pretrained encoder instead of model=tiny
      given.add('model')
    items += [f'{k}={v}' for k, v in budget.items() if k not in given]
  variants = {}
  for name in _variants(a, TUNE_VARIANTS, arg):
    fixed, key_axis = TUNE_VARIANTS[name]
    # smoke: the tiny fresh model's one learning rate (2 trials a variant).
    lrs = (SMOKE_LR,) if a.smoke else TUNE_LRS[preset]
    variants[name] = dict(
        fixed=dict(fixed), search=[_axis('optim.lr', lrs), list(key_axis)],
        metric=f'adjusted_{metric}' if name == 'ce_posthoc_la' else metric)
  test = {'data.eval_split': 'test'}
  test.update({k: v for k, v in dev.items() if k != 'data.eval_split'})
  return dict(
      config_arg=','.join(items), metric=metric, dev=dict(dev), test=test,
      tuning_seeds=[0], final_seeds=[0, 1, 2], baseline='ce',
      variants=variants,
      histogram=[('CE', 'ce', {}),
                 ('DSC gold, alpha 1', 'dsc_gold', {'loss.alpha': 1.0}),
                 ('DSC gold, alpha 0', 'dsc_gold', {'loss.alpha': 0.0})])
