"""Optimizer and learning-rate schedule for bert_jax, built from config.

The trainer calls::

  tx, schedule = optim.make_optimizer(config.optim, params, total_steps)
  logging.info('\\n%s', optim.describe(params, config.optim))

and later logs ``schedule(optim.update_count(opt_state))``, the learning rate
the next optimizer update will use.

`params` is the Flax 'params' collection (nested dicts; FrozenDict is fine, as
are `jax.ShapeDtypeStruct` leaves from `jax.eval_shape`, since only paths and
shapes are read here). Parameter paths are the dict keys joined by '/', e.g.
'bert/encoder/layer_3/attention/query/kernel'; see `param_paths`. Every regex in
the config is applied with `re.search` to such a path, so it matches anywhere
unless anchored ('^bert/embeddings/').

Config fields (`config.optim`, a ConfigDict or plain dict; missing fields take
the defaults below, unknown fields are an error so that typos do not pass
silently; `default_config()` returns all of them):

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
  lr_multipliers (None): list of (regex, factor) pairs (or a dict regex ->
    factor), big_vision style. A param takes the factor of the first pattern
    it matches (1.0 if none) times its layer-wise factor. Each pattern must
    match a param.

Every config error is a ValueError naming the field, e.g.
"config.optim.freeze: pattern '^bret/' matches no parameter; paths look like
'bert/embeddings/word_embeddings/embedding'".
"""

import dataclasses
import math
import re
from typing import Any, Callable, Mapping

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
    name='adamw',
    lr=1e-4,
    b1=0.9,
    b2=0.999,
    eps=1e-6,
    weight_decay=0.01,
    bias_correction=True,
    wd_exclude=DEFAULT_WD_EXCLUDE,
    lamb_exclude_from_layer_adaptation=True,
    clip_global_norm=1.0,
    warmup_steps=None,
    warmup_fraction=None,
    decay='linear',
    power=1.0,
    end_lr=0.0,
    grad_accum_steps=1,
    layerwise_lr_decay=None,
    freeze=None,
    lr_multipliers=None,
)

_PREFIX = 'config.optim'

# Where the encoder's depth structure lives in the (fixed) model naming. The
# optional '(^|/)' prefix keeps these working if the model is nested deeper.
_EMBEDDINGS_RE = re.compile(r'(^|/)embeddings/')
_LAYER_RE = re.compile(r'(^|/)encoder/layer_(\d+)/')
_SCANNED_RE = re.compile(r'(^|/)encoder/layers/')


def default_config() -> ml_collections.ConfigDict:
  """All optimizer config fields with their defaults (see module docstring)."""
  return ml_collections.ConfigDict(dict(_DEFAULTS))


# ---------------------------------------------------------------------------
# Config parsing and validation.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Config:
  """Validated optimizer config; regexes compiled."""
  name: str
  lr: float
  b1: float
  b2: float
  eps: float
  weight_decay: float
  bias_correction: bool
  wd_exclude: tuple
  lamb_exclude_from_layer_adaptation: bool
  clip_global_norm: float
  warmup_steps: int | None
  warmup_fraction: float | None
  decay: str
  power: float
  end_lr: float
  grad_accum_steps: int
  layerwise_lr_decay: float | None
  freeze: tuple
  lr_multipliers: tuple
  prefix: str

  def err(self, key: str, msg: str) -> ValueError:
    return ValueError(f'{self.prefix}.{key}: {msg}')

  def resolve_warmup(self, total_steps: int) -> int:
    if self.warmup_fraction is not None:
      return int(round(self.warmup_fraction * total_steps))
    return self.warmup_steps or 0


def _as_dict(cfg: Any) -> dict:
  if cfg is None:
    return {}
  if isinstance(cfg, ml_collections.ConfigDict):
    # to_dict resolves FieldReferences (e.g. lr tied to another field).
    return cfg.to_dict()
  if isinstance(cfg, Mapping):
    return dict(cfg)
  raise TypeError('optimizer config must be a ConfigDict or dict, got '
                  f'{type(cfg)}')


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
  if integer:
    if value != int(value):
      raise fail('must be an integer')
  if lo is not None and (value < lo or (lo_open and value == lo)):
    raise fail(f'must be {">" if lo_open else ">="} {lo}')
  if hi is not None and (value > hi or (hi_open and value == hi)):
    raise fail(f'must be {"<" if hi_open else "<="} {hi}')
  return int(value) if integer else value


def _regexes(prefix, key, value) -> tuple:
  """A regex or list of regexes -> tuple of (source, compiled)."""
  if value is None or (isinstance(value, str) and not value):
    return ()
  patterns = [value] if isinstance(value, str) else value
  if not isinstance(patterns, (list, tuple)):
    raise ValueError(f'{prefix}.{key}: must be a regex or a list of regexes, '
                     f'got {value!r}')
  out = []
  for p in patterns:
    if not isinstance(p, str):
      raise ValueError(f'{prefix}.{key}: every pattern must be a string, '
                       f'got {p!r}')
    try:
      out.append((p, re.compile(p)))
    except re.error as e:
      raise ValueError(f'{prefix}.{key}: invalid regex {p!r}: {e}') from None
  return tuple(out)


def _lr_multipliers(prefix, value) -> tuple:
  key = 'lr_multipliers'
  if not value:
    return ()
  items = list(value.items()) if isinstance(value, Mapping) else value
  if not isinstance(items, (list, tuple)):
    raise ValueError(f'{prefix}.{key}: must be a list of (regex, factor) '
                     f'pairs, got {value!r}')
  out = []
  for item in items:
    if not isinstance(item, (list, tuple)) or len(item) != 2:
      raise ValueError(f'{prefix}.{key}: every entry must be a (regex, factor) '
                       f'pair, got {item!r}')
    (source, compiled), = _regexes(prefix, key, [item[0]])
    factor = _number(prefix, key, item[1], lo=0.0)
    out.append((source, compiled, factor))
  return tuple(out)


def _parse(cfg: Any, prefix: str = _PREFIX) -> _Config:
  """Fills defaults and validates; raises ValueError naming the bad field."""
  raw = _as_dict(cfg)
  unknown = sorted(set(raw) - set(_DEFAULTS))
  if unknown:
    raise ValueError(f'{prefix}.{unknown[0]}: unknown optimizer field; known '
                     f'fields are {sorted(_DEFAULTS)}')
  c = {**_DEFAULTS, **raw}
  p = prefix

  name = c['name']
  if name not in NAMES:
    raise ValueError(f'{p}.name: unknown optimizer {name!r}; expected one of '
                     f'{list(NAMES)}')
  decay = c['decay']
  if decay not in DECAYS:
    raise ValueError(f'{p}.decay: unknown decay {decay!r}; expected one of '
                     f'{list(DECAYS)}')
  for key in ('bias_correction', 'lamb_exclude_from_layer_adaptation'):
    if not isinstance(c[key], (bool, np.bool_)):
      raise ValueError(f'{p}.{key}: must be True or False, got {c[key]!r}')

  warmup_steps = _number(p, 'warmup_steps', c['warmup_steps'], lo=0,
                         integer=True, optional=True)
  warmup_fraction = _number(p, 'warmup_fraction', c['warmup_fraction'], lo=0.0,
                            hi=1.0, optional=True)
  if warmup_steps is not None and warmup_fraction is not None:
    raise ValueError(f'{p}.warmup_fraction: set either warmup_steps or '
                     f'warmup_fraction, not both (warmup_steps={warmup_steps})')
  clip = _number(p, 'clip_global_norm', c['clip_global_norm'], lo=0.0,
                 optional=True)

  return _Config(
      name=name,
      lr=_number(p, 'lr', c['lr'], lo=0.0),
      b1=_number(p, 'b1', c['b1'], lo=0.0, hi=1.0, hi_open=True),
      b2=_number(p, 'b2', c['b2'], lo=0.0, hi=1.0, hi_open=True),
      eps=_number(p, 'eps', c['eps'], lo=0.0),
      weight_decay=_number(p, 'weight_decay', c['weight_decay'], lo=0.0),
      bias_correction=bool(c['bias_correction']),
      wd_exclude=_regexes(p, 'wd_exclude', c['wd_exclude']),
      lamb_exclude_from_layer_adaptation=bool(
          c['lamb_exclude_from_layer_adaptation']),
      clip_global_norm=clip or 0.0,
      warmup_steps=warmup_steps,
      warmup_fraction=warmup_fraction,
      decay=decay,
      power=_number(p, 'power', c['power'], lo=0.0, lo_open=True),
      end_lr=_number(p, 'end_lr', c['end_lr'], lo=0.0),
      grad_accum_steps=_number(p, 'grad_accum_steps', c['grad_accum_steps'],
                               lo=1, integer=True),
      layerwise_lr_decay=_number(p, 'layerwise_lr_decay',
                                 c['layerwise_lr_decay'], lo=0.0, lo_open=True,
                                 hi=1.0, optional=True),
      freeze=_regexes(p, 'freeze', c['freeze']),
      lr_multipliers=_lr_multipliers(p, c['lr_multipliers']),
      prefix=prefix,
  )


# ---------------------------------------------------------------------------
# Learning-rate schedule.
# ---------------------------------------------------------------------------


def _check_total_steps(total_steps) -> int:
  if (isinstance(total_steps, bool) or
      not isinstance(total_steps, (int, np.integer)) or total_steps < 1):
    raise ValueError('total_steps: must be a positive int (optimizer '
                     f'updates), got {total_steps!r}')
  return int(total_steps)


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
  c = _parse(cfg, config_prefix)
  total = _check_total_steps(total_steps)
  warmup = c.resolve_warmup(total)
  if warmup > total:
    raise c.err('warmup_steps', f'warmup ({warmup} steps) is longer than '
                f'total_steps ({total})')
  peak, end, decay, power = c.lr, c.end_lr, c.decay, c.power
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
# Per-parameter plan: paths, freezing, weight decay and lr multipliers.
# ---------------------------------------------------------------------------


def _key_str(k) -> str:
  if isinstance(k, jax.tree_util.DictKey):
    return str(k.key)
  if isinstance(k, jax.tree_util.GetAttrKey):
    return k.name
  if isinstance(k, jax.tree_util.SequenceKey):
    return str(k.idx)
  if isinstance(k, jax.tree_util.FlattenedIndexKey):
    return str(k.key)
  return str(k)


def _path_str(path) -> str:
  return '/'.join(_key_str(k) for k in path)


def _flatten(params) -> list:
  """[(path, shape)] in tree-flatten order."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(params)
  return [(_path_str(p), tuple(getattr(x, 'shape', np.shape(x))))
          for p, x in leaves]


def param_paths(params) -> list[str]:
  """'/'-joined paths of all leaves, e.g. 'bert/pooler/dense/kernel'."""
  return [path for path, _ in _flatten(params)]


@dataclasses.dataclass(frozen=True)
class _Leaf:
  """What the optimizer does to one parameter leaf."""
  path: str
  shape: tuple
  frozen: bool
  wd_excluded: bool  # matched by wd_exclude (also skips LAMB's trust ratio)
  decayed: bool  # weight decay actually applied
  stacked: bool  # scanned layer: leading axis indexes layers
  lr_mult: Any  # float, or np.ndarray of shape (L, 1, ..., 1) when stacked


def _num_layers(entries, c: _Config) -> int:
  """Encoder depth from the params tree (unscanned layer_i or scanned)."""
  indices = {int(m.group(2)) for path, _ in entries
             if (m := _LAYER_RE.search(path))}
  leading = {shape[0] if shape else None for path, shape in entries
             if _SCANNED_RE.search(path)}
  key = 'layerwise_lr_decay'
  if indices and leading:
    raise c.err(key, 'params have both unscanned (encoder/layer_i) and '
                'scanned (encoder/layers) encoder layers')
  if indices:
    n = max(indices) + 1
    if indices != set(range(n)):
      raise c.err(key, f'encoder layer indices are not 0..{n - 1}: '
                  f'{sorted(indices)}')
    return n
  if leading:
    if len(leading) != 1 or None in leading:
      raise c.err(key, 'scanned encoder leaves disagree on the leading '
                  f'(layer) axis size: {sorted(map(str, leading))}')
    return int(leading.pop())
  raise c.err(key, "found no encoder layers in params (expected paths like "
              "'bert/encoder/layer_0/...' or 'bert/encoder/layers/...')")


def _layerwise_mult(path, shape, decay, num_layers):
  """decay ** (num_layers + 1 - depth); a per-layer column when scanned."""
  top = num_layers + 1
  if _EMBEDDINGS_RE.search(path):
    return decay ** top
  if m := _LAYER_RE.search(path):
    return decay ** (top - (int(m.group(2)) + 1))
  if _SCANNED_RE.search(path):
    depth = np.arange(1, num_layers + 1)
    vec = np.power(decay, top - depth).astype(np.float32)
    return vec.reshape((num_layers,) + (1,) * (len(shape) - 1))
  return 1.0


def _example_path(entries) -> str:
  return entries[0][0] if entries else '<no parameters>'


def _plan(params, c: _Config) -> dict:
  """path -> _Leaf for every parameter, validating patterns against params."""
  entries = _flatten(params)
  if not entries:
    raise ValueError('params: the parameter tree has no leaves')
  paths = [p for p, _ in entries]
  dupes = sorted({p for p in paths if paths.count(p) > 1})
  if dupes:
    raise ValueError(f"params: paths {dupes} occur twice (a key contains '/')")

  def check_matches(key, sources):
    for source, compiled in sources:
      if not any(compiled.search(p) for p in paths):
        raise c.err(key, f'pattern {source!r} matches no parameter; paths '
                    f'look like {_example_path(entries)!r}')

  check_matches('freeze', c.freeze)
  check_matches('lr_multipliers', [(s, r) for s, r, _ in c.lr_multipliers])

  num_layers = None
  if c.layerwise_lr_decay is not None:
    num_layers = _num_layers(entries, c)

  plan = {}
  for path, shape in entries:
    frozen = any(r.search(path) for _, r in c.freeze)
    wd_excluded = any(r.search(path) for _, r in c.wd_exclude)
    mult = 1.0
    for _, r, factor in c.lr_multipliers:
      if r.search(path):
        mult = factor
        break
    if num_layers is not None:
      mult = mult * _layerwise_mult(path, shape, c.layerwise_lr_decay,
                                    num_layers)
    plan[path] = _Leaf(
        path=path, shape=shape, frozen=frozen, wd_excluded=wd_excluded,
        decayed=(c.weight_decay > 0 and not wd_excluded and not frozen),
        stacked=bool(_SCANNED_RE.search(path)) and len(shape) >= 1,
        lr_mult=mult)
  if all(leaf.frozen for leaf in plan.values()):
    raise c.err('freeze', 'freezes every parameter; nothing would train')
  return plan


def lr_multipliers(params, cfg: Any, *, config_prefix: str = _PREFIX):
  """Tree like params of each leaf's lr multiplier (layer-wise x rules).

  Scanned leaves get an array broadcastable against the leaf; frozen leaves
  get 0.0.
  """
  plan = _plan(params, _parse(cfg, config_prefix))
  return _map_plan(lambda leaf, _: 0.0 if leaf.frozen else leaf.lr_mult,
                   plan, params)


def frozen_mask(cfg: Any, params, *, config_prefix: str = _PREFIX):
  """Tree like params of bools: True where `freeze` matches the leaf's path."""
  plan = _plan(params, _parse(cfg, config_prefix))
  return _map_plan(lambda leaf, _: leaf.frozen, plan, params)


def _map_plan(fn: Callable, plan: dict, *trees):
  """tree_map over `trees`, handing fn the _Leaf of each leaf's path.

  Looking leaves up by path (rather than zipping with a precomputed tree)
  keeps working on the masked trees optax's multi_transform hands its
  branches, where frozen leaves are replaced by empty MaskedNodes.
  """
  def leaf_fn(path, *xs):
    key = _path_str(path)
    try:
      leaf = plan[key]
    except KeyError:
      raise ValueError(f'parameter {key!r} is not in the params tree the '
                       'optimizer was built for') from None
    return fn(leaf, *xs)
  return jax.tree_util.tree_map_with_path(leaf_fn, *trees)


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


def _scale_by_trust_ratio(plan: dict, skip_wd_excluded: bool):
  """LAMB's ||w|| / ||u||, per leaf, or per layer for scanned leaves.

  optax.scale_by_trust_ratio takes norms over the whole leaf, which for a
  scanned [num_layers, ...] leaf would couple all layers; here a stacked leaf
  gets one ratio per slice of its leading axis, so scanned and unscanned
  models train identically. The ratio is 1 where either norm is 0 (as in
  optax and TF-Addons), so zero-initialised params and zero updates are safe.
  """
  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError('LAMB needs params in update(updates, state, params)')

    def scale(leaf, u, w):
      if skip_wd_excluded and leaf.wd_excluded:
        return u
      axes = tuple(range(1, u.ndim)) if leaf.stacked else None
      norm = lambda x: jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32)),
                                        axis=axes, keepdims=True))
      w_norm, u_norm = norm(w), norm(u)
      ok = jnp.logical_and(w_norm > 0, u_norm > 0)
      # The inner where keeps 0/0 out of the graph (NaN-free gradients too).
      ratio = jnp.where(ok, w_norm / jnp.where(ok, u_norm, 1.0), 1.0)
      return (u * ratio).astype(u.dtype)

    return _map_plan(scale, plan, updates, params), state

  return optax.GradientTransformation(init_fn, update_fn)


def _scale_by_multipliers(plan: dict):
  """Multiplies each leaf's update by its (layer-wise x rule) lr multiplier."""
  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params

    def scale(leaf, u):
      m = leaf.lr_mult
      if isinstance(m, float) and m == 1.0:
        return u
      # Cast back: a float32 multiplier must not promote bf16 updates.
      return (u * m).astype(u.dtype)

    return _map_plan(scale, plan, updates), state

  return optax.GradientTransformation(init_fn, update_fn)


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
  c = _parse(cfg, config_prefix)
  schedule = make_schedule(cfg, total_steps, config_prefix=config_prefix)
  plan = _plan(params, c)

  wd_mask = lambda tree: _map_plan(lambda leaf, _: leaf.decayed, plan, tree)
  any_decay = any(leaf.decayed for leaf in plan.values())

  parts = []
  if c.clip_global_norm > 0:
    parts.append(optax.clip_by_global_norm(c.clip_global_norm))
  if c.name == 'adam' and any_decay:
    # Coupled L2: the decay term goes through the adaptive scaling.
    parts.append(optax.add_decayed_weights(c.weight_decay, mask=wd_mask))
  if c.bias_correction:
    parts.append(optax.scale_by_adam(b1=c.b1, b2=c.b2, eps=c.eps))
  else:
    parts.append(_scale_by_adam_no_bias_correction(c.b1, c.b2, c.eps))
  if c.name in ('adamw', 'lamb') and any_decay:
    # Decoupled: added after the adaptive scaling, scaled only by lr (and by
    # LAMB's trust ratio, which is computed on adam + wd*w).
    parts.append(optax.add_decayed_weights(c.weight_decay, mask=wd_mask))
  if c.name == 'lamb':
    parts.append(_scale_by_trust_ratio(
        plan, skip_wd_excluded=c.lamb_exclude_from_layer_adaptation))
  parts.append(optax.scale_by_learning_rate(schedule))
  if any(not (isinstance(leaf.lr_mult, float) and leaf.lr_mult == 1.0)
         for leaf in plan.values()):
    parts.append(_scale_by_multipliers(plan))
  tx = optax.chain(*parts)

  if c.grad_accum_steps > 1:
    tx = optax.MultiSteps(
        tx, every_k_schedule=c.grad_accum_steps).gradient_transformation()

  if any(leaf.frozen for leaf in plan.values()):
    labels = lambda tree: _map_plan(
        lambda leaf, _: 'frozen' if leaf.frozen else 'trainable', plan, tree)
    tx = optax.multi_transform(
        {'trainable': tx, 'frozen': optax.set_to_zero()}, labels)
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


def _fmt_mult(m) -> str:
  if isinstance(m, np.ndarray):
    flat = m.reshape(-1)
    return f'{flat.min():.4g}..{flat.max():.4g}/layer'
  return f'{m:.4g}'


def describe(params, cfg: Any, *, config_prefix: str = _PREFIX) -> str:
  """A table of every parameter: path, shape, lr multiplier, wd, frozen.

  Validates the config exactly as make_optimizer does (same errors).
  """
  c = _parse(cfg, config_prefix)
  plan = _plan(params, c)
  rows = []
  for leaf in plan.values():
    rows.append((leaf.path, 'x'.join(map(str, leaf.shape)) or 'scalar',
                 '-' if leaf.frozen else _fmt_mult(leaf.lr_mult),
                 '-' if leaf.frozen else ('on' if leaf.decayed else 'off'),
                 'yes' if leaf.frozen else 'no'))
  header = ('path', 'shape', 'lr_mult', 'wd', 'frozen')
  widths = [max(len(r[i]) for r in rows + [header]) for i in range(5)]
  fmt = lambda r: '  '.join(s.ljust(w) for s, w in zip(r, widths)).rstrip()

  size = lambda leaf: int(np.prod(leaf.shape, dtype=np.int64))
  total = sum(size(leaf) for leaf in plan.values())
  frozen = sum(size(leaf) for leaf in plan.values() if leaf.frozen)
  if c.warmup_fraction is not None:
    warmup = f'warmup {c.warmup_fraction:g} of steps'
  else:
    warmup = f'warmup {c.warmup_steps or 0} steps'
  lines = [
      f'optimizer {c.name}: lr {c.lr:g}, b1 {c.b1:g}, b2 {c.b2:g}, '
      f'eps {c.eps:g}, weight_decay {c.weight_decay:g}, bias_correction '
      f'{c.bias_correction}, clip_global_norm {c.clip_global_norm:g}, '
      f'grad_accum_steps {c.grad_accum_steps}',
      f'schedule: {warmup}, then {c.decay} decay to {c.end_lr:g}'
      + (f' (power {c.power:g})' if c.decay == 'polynomial' else ''),
      f'params: {total:,} in {len(plan)} leaves; trainable {total - frozen:,}, '
      f'frozen {frozen:,}',
      fmt(header),
      fmt(tuple('-' * w for w in widths)),
  ] + [fmt(r) for r in rows]
  return '\n'.join(lines)
