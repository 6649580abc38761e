"""Optimizer and learning-rate schedule for bert_jax, built from config.

The trainer calls::

  optim.check_config(config.optim)   # early, before any data is read
  tx, schedule = optim.make_optimizer(config.optim, params, total_steps)
  logging.info('\\n%s', optim.describe(params, config.optim))
  frozen = optim.frozen_mask(config.optim, params)   # gradients stop there

and logs ``schedule(step // grad_accum_steps)``, the learning rate of the
step's optimizer update (``schedule(optim.update_count(opt_state))`` gives
the same from the optimizer state).

`params` is the Flax 'params' collection (nested dicts; FrozenDict is fine, as
are `jax.ShapeDtypeStruct` leaves from `jax.eval_shape`, since only paths and
shapes are read here). Parameter paths are the dict keys joined by '/', e.g.
'bert/encoder/layer_3/attention/query/kernel'; see `param_paths`. Every regex in
the config is applied with `re.search` to such a path, so it matches anywhere
unless anchored ('^bert/embeddings/').

As in big_vision's optax.py, what happens to each parameter is decided by
regex rules on its path: `freeze` (a list of patterns), `wd_exclude` (the
weight-decay mask) and `lr_multipliers` (a list of (regex, factor) pairs, the
first match wins). Layer-wise decay is turned into such a (regex, factor) list
(embeddings, each encoder layer) and multiplies the same per-parameter factor.

Config fields (`config.optim`, a ConfigDict or plain dict; missing fields take
the defaults below, unknown fields are an error so that typos do not pass
silently; `default_config()` returns all of them, and configs/common.py
writes the same values out):

  name ('adamw'): 'adamw' | 'lamb' | 'adam'.
    adamw: Adam plus decoupled weight decay, update = -lr * (adam + wd * w).
    lamb: adamw's update rescaled per parameter by the trust ratio
      ||w|| / ||adam + wd * w|| (ratio 1 where either norm is 0), as in You et
      al. 2019. For scanned layers the ratio is taken per layer (per slice of
      the leading axis), so scanning does not change the maths.
    adam: Adam with coupled L2 regularisation: wd * w is added to the gradient
      before the moment estimates (torch.optim.Adam's `weight_decay`). Set
      weight_decay=0 for plain Adam.
  lr (1e-4): peak learning rate, reached at the end of warmup.
  b1 (0.9), b2 (0.999): moment decay rates, each in [0, 1).
  eps (1e-6): added to sqrt(v) in the denominator (BERT's value, not Adam's
    1e-8).
  bias_correction (True): False reproduces BERT's AdamWeightDecayOptimizer
    (and ALBERT's LAMB), which used the raw moment EMAs m / (sqrt(v) + eps).
  weight_decay (0.01): decay rate, multiplied by the learning rate (and by any
    lr multiplier) like the rest of the update.
  wd_exclude (DEFAULT_WD_EXCLUDE, LayerNorm params and every bias): regex or
    list of regexes; matching params get no weight decay (through optax's
    mask). None decays everything.
  lamb_exclude_from_layer_adaptation (True): lamb only. Params matched by
    wd_exclude also skip the trust ratio, as the reference BERT LAMB
    implementations do (TF-Addons/TF-Models `exclude_from_layer_adaptation`
    defaults to `exclude_from_weight_decay`; ALBERT likewise). False gives
    optax.lamb's behaviour, the trust ratio on every parameter.
  clip_global_norm (1.0): clip the gradient's global norm (over trainable
    params only, after accumulation) to this value; 0 or None turns it off.
  warmup_steps (None) / warmup_fraction (None): linear warmup from 0 to lr over
    this many optimizer updates, or over this fraction of total_steps; at most
    one may be set; neither means no warmup.
  decay ('linear'): 'linear' | 'polynomial' | 'cosine' | 'constant', from lr at
    the end of warmup to end_lr at total_steps (then held). 'constant' stays
    at lr and ignores end_lr.
  power (1.0): exponent of the 'polynomial' decay (1.0 equals 'linear').
  end_lr (0.0): learning rate at total_steps.
  grad_accum_steps (1): average gradients over this many micro-batches with
    optax.MultiSteps and apply one update per group. The schedule, clipping
    and `total_steps` all count optimizer updates, not micro-batches: a run of
    N micro-batches has total_steps = N // grad_accum_steps.
  layerwise_lr_decay (None): a float d in (0, 1]; scales each param's update
    by d ** (num_layers + 1 - depth), where the embeddings have depth 0,
    encoder layer i has depth i + 1 and everything else (pooler, heads) has
    depth num_layers + 1. num_layers is read from the params tree; for scanned
    layers ('.../encoder/layers/...') the multiplier is a per-layer vector
    broadcast along the leading axis.
  freeze (None): regex or list of regexes; matching params get zero updates
    and no optimizer state (no moments, no accumulators), so freezing the
    embeddings saves their optimizer memory. Each pattern must match a param.
    `frozen_mask` gives the matching leaves (to stop their gradients).
  lr_multipliers (None): list of (regex, factor) pairs (or a dict regex ->
    factor), big_vision style. A param takes the factor of the first pattern
    it matches (1.0 if none) times its layer-wise factor. Each pattern must
    match a param.

Every config error is a ValueError naming the field, e.g.
"config.optim.freeze: pattern '^bret/' matches no parameter; paths look like
'bert/embeddings/word_embeddings/embedding'".
"""

import math
import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

# Matches LayerNorm scale/bias (also the prefixed 'attention_LayerNorm') and
# every parameter whose name ends in 'bias' (including 'mlm/output_bias'); the
# same exclusions as BERT's ["LayerNorm", "layer_norm", "bias"].
DEFAULT_WD_EXCLUDE = r'LayerNorm/|layer_norm/|bias$'

NAMES = ('adamw', 'lamb', 'adam')
DECAYS = ('linear', 'polynomial', 'cosine', 'constant')

_DEFAULTS = dict(
    name='adamw', lr=1e-4, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01,
    bias_correction=True, wd_exclude=DEFAULT_WD_EXCLUDE,
    lamb_exclude_from_layer_adaptation=True, clip_global_norm=1.0,
    warmup_steps=None, warmup_fraction=None, decay='linear', power=1.0,
    end_lr=0.0, grad_accum_steps=1, layerwise_lr_decay=None, freeze=None,
    lr_multipliers=None)

# The bounds of each numeric field; see `_number`.
_NUMBERS = dict(
    lr=dict(lo=0.0),
    b1=dict(lo=0.0, hi=1.0, hi_open=True),
    b2=dict(lo=0.0, hi=1.0, hi_open=True),
    eps=dict(lo=0.0),
    weight_decay=dict(lo=0.0),
    clip_global_norm=dict(lo=0.0, optional=True),
    warmup_steps=dict(lo=0, integer=True, optional=True),
    warmup_fraction=dict(lo=0.0, hi=1.0, optional=True),
    power=dict(lo=0.0, lo_open=True),
    end_lr=dict(lo=0.0),
    grad_accum_steps=dict(lo=1, integer=True),
    layerwise_lr_decay=dict(lo=0.0, lo_open=True, hi=1.0, optional=True),
)

_PREFIX = 'config.optim'

# Where the encoder's depth structure lives in the (fixed) model naming. The
# optional '(^|/)' prefix keeps these working if the model is nested deeper.
_EMBEDDINGS = r'(^|/)embeddings/'
_LAYER = r'(^|/)encoder/layer_(\d+)/'
_SCANNED = r'(^|/)encoder/layers/'


def default_config() -> ml_collections.ConfigDict:
  """All optimizer config fields with their defaults (see module docstring)."""
  return ml_collections.ConfigDict(dict(_DEFAULTS))


# ---------------------------------------------------------------------------
# Config checking: everything that needs no parameters.
# ---------------------------------------------------------------------------


def _number(prefix, key, value, *, lo=None, hi=None, lo_open=False,
            hi_open=False, integer=False, optional=False):
  """Checks a numeric field and returns it as float (or int)."""
  def fail(msg):
    return ValueError(f'{prefix}.{key}: {msg}, got {value!r}')
  if value is None:
    if optional:
      return None
    raise fail('must be set')
  # bool is an int subclass; True as a learning rate is surely a mistake.
  if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
    raise fail('must be a number')
  value = float(value)
  if not math.isfinite(value):
    raise fail('must be finite')
  if integer and value != int(value):
    raise fail('must be an integer')
  if lo is not None and (value < lo or (lo_open and value == lo)):
    raise fail(f'must be {">" if lo_open else ">="} {lo}')
  if hi is not None and (value > hi or (hi_open and value == hi)):
    raise fail(f'must be {"<" if hi_open else "<="} {hi}')
  return int(value) if integer else value


def _regex(prefix, key, pattern) -> str:
  if not isinstance(pattern, str):
    raise ValueError(f'{prefix}.{key}: every pattern must be a string, '
                     f'got {pattern!r}')
  try:
    re.compile(pattern)
  except re.error as e:
    raise ValueError(f'{prefix}.{key}: invalid regex {pattern!r}: {e}') from None
  return pattern


def _regexes(prefix, key, value) -> tuple:
  """A regex or list of regexes (None or '' for none) -> tuple of str."""
  if value is None or (isinstance(value, str) and not value):
    return ()
  patterns = [value] if isinstance(value, str) else value
  if not isinstance(patterns, (list, tuple)):
    raise ValueError(f'{prefix}.{key}: must be a regex or a list of regexes, '
                     f'got {value!r}')
  return tuple(_regex(prefix, key, p) for p in patterns)


def _rules(prefix, key, value) -> tuple:
  """[(regex, factor)] or {regex: factor} -> tuple of (str, float)."""
  if not value:
    return ()
  items = list(value.items()) if isinstance(value, Mapping) else value
  if not isinstance(items, (list, tuple)):
    raise ValueError(f'{prefix}.{key}: must be a list of (regex, factor) '
                     f'pairs, got {value!r}')
  for item in items:
    if not isinstance(item, (list, tuple)) or len(item) != 2:
      raise ValueError(f'{prefix}.{key}: every entry must be a (regex, '
                       f'factor) pair, got {item!r}')
  return tuple((_regex(prefix, key, p), _number(prefix, key, f, lo=0.0))
               for p, f in items)


def check_config(cfg: Any, prefix: str = _PREFIX) -> dict:
  """Fills defaults and checks every field that needs no parameters.

  Args:
    cfg: ConfigDict, dict or None (all defaults).
    prefix: how error messages name the config.

  Returns:
    A plain dict with every field: numbers as float (int for the step counts),
    clip_global_norm 0.0 when off, wd_exclude and freeze as tuples of regexes,
    lr_multipliers as a tuple of (regex, factor).

  Raises:
    ValueError naming the field, e.g. 'config.optim.lr: must be >= 0.0, ...'.
    Patterns that match no parameter are caught later, by make_optimizer.
  """
  if isinstance(cfg, ml_collections.ConfigDict):
    cfg = cfg.to_dict()  # resolves FieldReferences (lr tied to another field)
  if cfg is not None and not isinstance(cfg, Mapping):
    raise TypeError(f'optimizer config must be a ConfigDict or dict, got '
                    f'{type(cfg)}')
  c = dict(cfg or {})
  unknown = sorted(set(c) - set(_DEFAULTS))
  if unknown:
    raise ValueError(f'{prefix}.{unknown[0]}: unknown optimizer field; known '
                     f'fields are {sorted(_DEFAULTS)}')
  c = {**_DEFAULTS, **c}
  for key, allowed, what in (('name', NAMES, 'optimizer'),
                             ('decay', DECAYS, 'decay')):
    if c[key] not in allowed:
      raise ValueError(f'{prefix}.{key}: unknown {what} {c[key]!r}; expected '
                       f'one of {list(allowed)}')
  for key in ('bias_correction', 'lamb_exclude_from_layer_adaptation'):
    if not isinstance(c[key], (bool, np.bool_)):
      raise ValueError(f'{prefix}.{key}: must be True or False, got {c[key]!r}')
    c[key] = bool(c[key])
  for key, bounds in _NUMBERS.items():
    c[key] = _number(prefix, key, c[key], **bounds)
  if c['warmup_steps'] is not None and c['warmup_fraction'] is not None:
    raise ValueError(f'{prefix}.warmup_fraction: set either warmup_steps or '
                     f'warmup_fraction, not both (warmup_steps='
                     f'{c["warmup_steps"]})')
  c['clip_global_norm'] = c['clip_global_norm'] or 0.0
  c['wd_exclude'] = _regexes(prefix, 'wd_exclude', c['wd_exclude'])
  c['freeze'] = _regexes(prefix, 'freeze', c['freeze'])
  c['lr_multipliers'] = _rules(prefix, 'lr_multipliers', c['lr_multipliers'])
  return c


# ---------------------------------------------------------------------------
# Learning-rate schedule.
# ---------------------------------------------------------------------------


def make_schedule(cfg: Any, total_steps: int, *,
                  config_prefix: str = _PREFIX) -> optax.Schedule:
  """Linear warmup 0 -> lr, then `decay` from lr to end_lr at total_steps.

  With W warmup steps and T = total_steps, the rate for update `step` is
  lr * step / W for step < W, else end_lr + (lr - end_lr) * f(x) with
  x = clip((step - W) / (T - W), 0, 1) and f = 1 - x (linear), (1 - x)**power
  (polynomial), (1 + cos(pi x)) / 2 (cosine) or 1 (constant). The first update
  (step 0) therefore has rate 0 when warming up, as in BERT. Unlike BERT's
  polynomial_decay, which ran from step 0 and so was already below lr when
  warmup ended, the decay starts at the end of warmup (peak exactly lr), the
  convention of optax's and Hugging Face's warmup schedules.

  `step` counts optimizer updates; see grad_accum_steps in the module doc.
  """
  c = check_config(cfg, config_prefix)
  if (isinstance(total_steps, bool) or
      not isinstance(total_steps, (int, np.integer)) or total_steps < 1):
    raise ValueError('total_steps: must be a positive int (optimizer '
                     f'updates), got {total_steps!r}')
  total = int(total_steps)
  if c['warmup_fraction'] is not None:
    warmup = int(round(c['warmup_fraction'] * total))
  else:
    warmup = c['warmup_steps'] or 0
  if warmup > total:
    raise ValueError(f'{config_prefix}.warmup_steps: warmup ({warmup} steps) '
                     f'is longer than total_steps ({total})')
  peak, end, decay, power = c['lr'], c['end_lr'], c['decay'], c['power']
  decay_steps = total - warmup

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    if decay_steps > 0:
      x = jnp.clip((step - warmup) / decay_steps, 0.0, 1.0)
    else:
      # No room to decay: jump to end_lr at total_steps.
      x = jnp.where(step >= total, 1.0, 0.0)
    if decay == 'linear':
      frac = 1.0 - x
    elif decay == 'polynomial':
      frac = (1.0 - x) ** power
    elif decay == 'cosine':
      frac = 0.5 * (1.0 + jnp.cos(jnp.pi * x))
    else:  # constant
      frac = jnp.ones_like(x)
    after = peak if decay == 'constant' else end + (peak - end) * frac
    if warmup == 0:
      return jnp.asarray(after, jnp.float32) * jnp.ones_like(step)
    return jnp.where(step < warmup, peak * step / warmup, after)

  return schedule


# ---------------------------------------------------------------------------
# Parameter paths and the per-parameter rules.
# ---------------------------------------------------------------------------


def _path_str(path) -> str:
  """A key path from jax.tree_util as 'bert/pooler/dense/kernel'."""
  def key(k):
    if isinstance(k, (jax.tree_util.DictKey, jax.tree_util.FlattenedIndexKey)):
      return str(k.key)
    if isinstance(k, jax.tree_util.GetAttrKey):
      return k.name
    if isinstance(k, jax.tree_util.SequenceKey):
      return str(k.idx)
    return str(k)
  return '/'.join(key(k) for k in path)


def _map_paths(fn, *trees):
  """tree_map calling fn(path, *leaves), path as in `param_paths`.

  Works on the masked trees optax.multi_transform hands its branches: frozen
  leaves are empty MaskedNodes there, which have no leaves to visit.
  """
  return jax.tree_util.tree_map_with_path(
      lambda p, *xs: fn(_path_str(p), *xs), *trees)


def param_paths(params) -> list[str]:
  """'/'-joined paths of all leaves, e.g. 'bert/pooler/dense/kernel'."""
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  return [_path_str(p) for p, _ in leaves]


def _matches(patterns, path) -> bool:
  return any(re.search(p, path) for p in patterns)


def _first(rules, path, default):
  """The value of the first (regex, value) rule matching path."""
  return next((v for p, v in rules if re.search(p, path)), default)


def _layerwise_rules(decay, shapes: dict, prefix) -> list:
  """layerwise_lr_decay as (regex, factor) rules: d ** (num_layers + 1 - depth).

  Scanned layers get one rule whose factor is a float32 vector over layers.
  """
  err = lambda msg: ValueError(f'{prefix}.layerwise_lr_decay: {msg}')
  indices = {int(m.group(2)) for p in shapes if (m := re.search(_LAYER, p))}
  leading = {s[0] if s else None for p, s in shapes.items()
             if re.search(_SCANNED, p)}
  if indices and leading:
    raise err('params have both unscanned (encoder/layer_i) and scanned '
              '(encoder/layers) encoder layers')
  if indices:
    n = max(indices) + 1
    if indices != set(range(n)):
      raise err(f'encoder layer indices are not 0..{n - 1}: {sorted(indices)}')
    return [(_EMBEDDINGS, decay ** (n + 1))] + [
        (rf'(^|/)encoder/layer_{i}/', decay ** (n - i)) for i in range(n)]
  if leading:
    if len(leading) != 1 or None in leading:
      raise err('scanned encoder leaves disagree on the leading (layer) axis '
                f'size: {sorted(map(str, leading))}')
    n = int(leading.pop())
    per_layer = np.power(decay, n + 1 - np.arange(1, n + 1)).astype(np.float32)
    return [(_EMBEDDINGS, decay ** (n + 1)), (_SCANNED, per_layer)]
  raise err("found no encoder layers in params (expected paths like "
            "'bert/encoder/layer_0/...' or 'bert/encoder/layers/...')")


def _resolve(cfg, params, prefix):
  """check_config plus the checks against params.

  Returns (c, shapes, frozen, mults), the last three dicts keyed by path in
  tree-flatten order: c from check_config; shapes, path -> shape; frozen,
  path -> bool; mults, path -> lr multiplier (a float, or for scanned leaves a
  float32 array of shape [num_layers, 1, ...]).
  """
  c = check_config(cfg, prefix)
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  shapes = {_path_str(p): tuple(getattr(x, 'shape', np.shape(x)))
            for p, x in leaves}
  if not shapes:
    raise ValueError('params: the parameter tree has no leaves')
  if len(shapes) < len(leaves):
    paths = [_path_str(p) for p, _ in leaves]
    dupes = sorted({p for p in paths if paths.count(p) > 1})
    raise ValueError(f"params: paths {dupes} occur twice (a key contains '/')")
  for key, patterns in (('freeze', c['freeze']),
                        ('lr_multipliers', [p for p, _ in c['lr_multipliers']])):
    for p in patterns:
      if not any(re.search(p, path) for path in shapes):
        raise ValueError(f'{prefix}.{key}: pattern {p!r} matches no parameter;'
                         f' paths look like {next(iter(shapes))!r}')
  frozen = {p: _matches(c['freeze'], p) for p in shapes}
  if all(frozen.values()):
    raise ValueError(f'{prefix}.freeze: freezes every parameter; nothing '
                     'would train')
  layerwise = None
  if c['layerwise_lr_decay'] is not None:
    layerwise = _layerwise_rules(c['layerwise_lr_decay'], shapes, prefix)
  mults = {}
  for path, shape in shapes.items():
    mult = _first(c['lr_multipliers'], path, 1.0)
    if layerwise is not None:
      layer_factor = _first(layerwise, path, 1.0)
      if isinstance(layer_factor, np.ndarray):  # broadcast along layers
        layer_factor = layer_factor.reshape(
            layer_factor.shape + (1,) * (len(shape) - 1))
      mult = mult * layer_factor
    mults[path] = mult
  return c, shapes, frozen, mults


def frozen_mask(cfg: Any, params, *, config_prefix: str = _PREFIX):
  """Tree like params: True where a `freeze` pattern matches the leaf's path.

  Validates the config against params exactly as make_optimizer does.
  """
  _, _, frozen, _ = _resolve(cfg, params, config_prefix)
  return _map_paths(lambda p, _: frozen[p], params)


def lr_multipliers(params, cfg: Any, *, config_prefix: str = _PREFIX):
  """Tree like params of each leaf's lr multiplier (layer-wise x rules).

  Scanned leaves get an array broadcastable against the leaf; frozen leaves
  get 0.0.
  """
  _, _, frozen, mults = _resolve(cfg, params, config_prefix)
  return _map_paths(lambda p, _: 0.0 if frozen[p] else mults[p], params)


def _lookup(table: dict, path: str):
  try:
    return table[path]
  except KeyError:
    raise ValueError(f'parameter {path!r} is not in the params tree the '
                     'optimizer was built for') from None


# ---------------------------------------------------------------------------
# Gradient transformations not in optax.
# ---------------------------------------------------------------------------


def _scale_by_adam_no_bias_correction(b1, b2, eps):
  """BERT's AdamWeightDecayOptimizer moments: m / (sqrt(v) + eps), raw EMAs.

  The state is optax.ScaleByAdamState so it looks like optax.scale_by_adam's.
  """
  def init_fn(params):
    zeros = lambda t: jax.tree.map(jnp.zeros_like, t)
    return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32),
                                  mu=zeros(params), nu=zeros(params))

  def update_fn(updates, state, params=None):
    del params
    mu = jax.tree.map(lambda g, m: b1 * m + (1 - b1) * g, updates, state.mu)
    nu = jax.tree.map(lambda g, v: b2 * v + (1 - b2) * g * g, updates,
                      state.nu)
    new = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu, nu)
    count = optax.safe_increment(state.count)
    return new, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

  return optax.GradientTransformation(init_fn, update_fn)


def _scale_by_trust_ratio(skip):
  """LAMB's ||w|| / ||u||, per leaf, or per layer for scanned leaves.

  optax.scale_by_trust_ratio takes norms over the whole leaf, which for a
  scanned [num_layers, ...] leaf would couple all layers; here a stacked leaf
  gets one ratio per slice of its leading axis, so scanned and unscanned
  models train identically. The ratio is 1 where either norm is 0 (as in
  optax and TF-Addons), so zero-initialised params and zero updates are safe.
  Leaves whose path satisfies `skip` keep their update.
  """
  def scale(path, u, w):
    if skip(path):
      return u
    stacked = re.search(_SCANNED, path) and u.ndim >= 1
    axes = tuple(range(1, u.ndim)) if stacked else None
    norm = lambda x: jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32)),
                                      axis=axes, keepdims=True))
    w_norm, u_norm = norm(w), norm(u)
    ok = jnp.logical_and(w_norm > 0, u_norm > 0)
    # The inner where keeps 0/0 out of the graph (NaN-free gradients too).
    ratio = jnp.where(ok, w_norm / jnp.where(ok, u_norm, 1.0), 1.0)
    return (u * ratio).astype(u.dtype)

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError('LAMB needs params in update(updates, state, params)')
    return _map_paths(scale, updates, params), state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


def _scale_by_multipliers(mults: dict):
  """Multiplies each leaf's update by its lr multiplier (path -> factor)."""
  def scale(path, u):
    m = _lookup(mults, path)
    if isinstance(m, float) and m == 1.0:
      return u
    # Cast back: a float32 multiplier must not promote bf16 updates.
    return (u * m).astype(u.dtype)

  return optax.GradientTransformation(
      lambda _: optax.EmptyState(),
      lambda updates, state, params=None: (_map_paths(scale, updates), state))


# ---------------------------------------------------------------------------
# The optimizer.
# ---------------------------------------------------------------------------


def make_optimizer(cfg: Any, params, total_steps: int, *,
                   config_prefix: str = _PREFIX):
  """Builds (optax.GradientTransformation, schedule) from the config.

  Update pipeline for trainable params, per optimizer update:
    clip global norm -> [adam: + wd*w] -> Adam moments (with or without bias
    correction) -> [adamw, lamb: + wd*w] -> [lamb: trust ratio] -> x -lr(step)
    -> x per-param lr multiplier.
  The multiplier comes last so LAMB's trust ratio cannot normalise it away.
  With grad_accum_steps = k > 1 that pipeline is wrapped in optax.MultiSteps
  (mean of k micro-batch gradients, one update every k calls, zeros between).
  With `freeze`, optax.multi_transform routes frozen leaves to
  optax.set_to_zero() and the pipeline above (MultiSteps included) only sees
  the trainable ones, so frozen params carry neither moments nor gradient
  accumulators and do not count towards the clipping norm.

  Args:
    cfg: the optimizer config (see the module docstring for fields).
    params: the params tree (arrays or ShapeDtypeStructs); only paths and
      shapes are used, so the returned optimizer works for any tree with the
      same paths.
    total_steps: number of optimizer updates in the run (micro-batches //
      grad_accum_steps).
    config_prefix: how error messages name the config.

  Returns:
    (tx, schedule): schedule(n) is the learning rate of the n-th update
    (0-based), i.e. schedule(update_count(opt_state)) is the one the next
    update uses.
  """
  schedule = make_schedule(cfg, total_steps, config_prefix=config_prefix)
  c, _, frozen, mults = _resolve(cfg, params, config_prefix)

  decayed = lambda p: c['weight_decay'] > 0 and not _matches(c['wd_exclude'], p)
  wd = []
  if any(decayed(p) and not frozen[p] for p in frozen):
    wd = [optax.add_decayed_weights(
        c['weight_decay'], mask=lambda tree: _map_paths(
            lambda p, _: decayed(p), tree))]
  if c['bias_correction']:
    adam = optax.scale_by_adam(b1=c['b1'], b2=c['b2'], eps=c['eps'])
  else:
    adam = _scale_by_adam_no_bias_correction(c['b1'], c['b2'], c['eps'])
  skip_trust = lambda p: (c['lamb_exclude_from_layer_adaptation'] and
                          _matches(c['wd_exclude'], p))
  # Coupled L2 (adam) goes through the adaptive scaling; decoupled decay
  # (adamw, lamb) is added after it, so only lr and LAMB's trust ratio
  # (computed on adam + wd*w) scale it.
  core = {'adam': [*wd, adam],
          'adamw': [adam, *wd],
          'lamb': [adam, *wd, _scale_by_trust_ratio(skip_trust)]}[c['name']]

  clip = c['clip_global_norm']
  tx = optax.chain(
      *([optax.clip_by_global_norm(clip)] if clip > 0 else []),
      *core,
      optax.scale_by_learning_rate(schedule),
      *([_scale_by_multipliers(mults)] if any(
          not (isinstance(m, float) and m == 1.0) for m in mults.values())
        else []))
  if c['grad_accum_steps'] > 1:
    tx = optax.MultiSteps(
        tx, every_k_schedule=c['grad_accum_steps']).gradient_transformation()
  if any(frozen.values()):
    tx = optax.multi_transform(
        {'trainable': tx, 'frozen': optax.set_to_zero()},
        lambda tree: _map_paths(
            lambda p, _: 'frozen' if _lookup(frozen, p) else 'trainable', tree))
  return tx, schedule


def update_count(opt_state) -> jax.Array:
  """Number of optimizer updates applied so far (micro-steps not counted).

  This is the step the schedule is evaluated at for the next update. Read from
  the scale_by_learning_rate state, which inside MultiSteps only advances when
  an accumulated update is applied.
  """
  is_sched = lambda x: isinstance(x, optax.ScaleByScheduleState)
  found = [x for x in jax.tree_util.tree_leaves(opt_state, is_leaf=is_sched)
           if is_sched(x)]
  if len(found) != 1:
    raise ValueError(f'expected one learning-rate schedule state in opt_state, '
                     f'found {len(found)}')
  return found[0].count


# ---------------------------------------------------------------------------
# Start-up logging.
# ---------------------------------------------------------------------------


def describe(params, cfg: Any, *, config_prefix: str = _PREFIX) -> str:
  """A table of every parameter: path, shape, lr multiplier, wd, frozen.

  Validates the config exactly as make_optimizer does (same errors).
  """
  c, shapes, frozen, mults = _resolve(cfg, params, config_prefix)

  def mult(m):
    if isinstance(m, np.ndarray):
      return f'{m.min():.4g}..{m.max():.4g}/layer'
    return f'{m:.4g}'

  rows = []
  for path, shape in shapes.items():
    decayed = c['weight_decay'] > 0 and not _matches(c['wd_exclude'], path)
    rows.append((path, 'x'.join(map(str, shape)) or 'scalar',
                 '-' if frozen[path] else mult(mults[path]),
                 '-' if frozen[path] else ('on' if decayed else 'off'),
                 'yes' if frozen[path] else 'no'))
  header = ('path', 'shape', 'lr_mult', 'wd', 'frozen')
  widths = [max(len(r[i]) for r in rows + [header]) for i in range(5)]
  fmt = lambda r: '  '.join(s.ljust(w) for s, w in zip(r, widths)).rstrip()

  size = lambda p: int(np.prod(shapes[p], dtype=np.int64))
  total = sum(size(p) for p in shapes)
  n_frozen = sum(size(p) for p in shapes if frozen[p])
  if c['warmup_fraction'] is not None:
    warmup = f'warmup {c["warmup_fraction"]:g} of steps'
  else:
    warmup = f'warmup {c["warmup_steps"] or 0} steps'
  lines = [
      f'optimizer {c["name"]}: lr {c["lr"]:g}, b1 {c["b1"]:g}, b2 '
      f'{c["b2"]:g}, eps {c["eps"]:g}, weight_decay {c["weight_decay"]:g}, '
      f'bias_correction {c["bias_correction"]}, clip_global_norm '
      f'{c["clip_global_norm"]:g}, grad_accum_steps {c["grad_accum_steps"]}',
      f'schedule: {warmup}, then {c["decay"]} decay to {c["end_lr"]:g}'
      + (f' (power {c["power"]:g})' if c['decay'] == 'polynomial' else ''),
      f'params: {total:,} in {len(shapes)} leaves; trainable '
      f'{total - n_frozen:,}, frozen {n_frozen:,}',
      fmt(header),
      fmt(tuple('-' * w for w in widths)),
  ] + [fmt(r) for r in rows]
  return '\n'.join(lines)
