"""Loss registry: names -> functions, and configs -> validated `LossSpec`s.

`get(name)` returns the raw loss function. `from_config` validates a config
such as `dict(name='focal', gamma=2.0, alpha='inverse_sqrt_freq')` before
anything is compiled and returns a `LossSpec`, one convention for all:

  spec = losses.from_config(config.loss, num_classes=9, class_counts=counts)
  state = spec.init_state()                     # {} unless spec.stateful
  loss, state = spec(logits, labels, weights=mask, state=state)

Config keys common to every loss: `name` (required), `flood` (flooding
level b >= 0, see `losses.flooding`), `ce_weight` (lambda >= 0: the value is
`loss + lambda * ce`, MONAI's DiceCE) and `ce_warmup_steps` (N: the first N
calls train on CE alone, then the named loss; the count is loss state, so a
resumed run continues it). Class-derived constants (alphas from counts, log
priors) are computed once here on the host, in NumPy.
"""

import collections
import difflib
import functools
import numbers
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from losses import _checks
from losses import class_weights
from losses import cross_entropy
from losses import dice
from losses import flooding
from losses import focal
from losses import ghm
from losses import logit_adjustment
from losses import multilabel

_REQUIRED = object()
_COMMON_KEYS = ('name', 'flood', 'ce_weight', 'ce_warmup_steps')
_Ctx = collections.namedtuple('_Ctx', 'loss num_classes class_counts cfg')

# Validators: (ctx, key, value) -> value to pass on, or a ValueError.


def _number(lo=None, hi=None, lo_open=False, hi_open=False):
  def check(ctx, key, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
      raise ValueError(f'{ctx.loss}: {key} must be a number, got {value!r}.')
    _checks.check_range(ctx.loss, key, value, lo=lo, hi=hi, lo_open=lo_open,
                        hi_open=hi_open)
    return float(value)
  return check


def _integer(lo):
  def check(ctx, key, value):
    _checks.check_int(ctx.loss, key, value, lo=lo)
    return int(value)
  return check


def _boolean(ctx, key, value):
  if not isinstance(value, (bool, np.bool_)):
    raise ValueError(f'{ctx.loss}: {key} must be True or False, got {value!r}.')
  return bool(value)


def _vector_or_scalar(lo=None, hi=None, allow_scalar=True):
  """None, a scalar, or a length-C vector (validated as float32 NumPy)."""
  def check(ctx, key, value):
    if value is None:
      return None
    if isinstance(value, str):
      raise ValueError(f'{ctx.loss}: {key} must be numeric, got {value!r}.')
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0 and allow_scalar:
      _checks.check_range(ctx.loss, key, arr, lo=lo, hi=hi)
      return float(arr)
    _checks.check_class_vector(ctx.loss, key, arr, ctx.num_classes)
    _checks.check_range(ctx.loss, key, arr, lo=lo, hi=hi)
    return arr.astype(np.float32)
  return check


def _class_alpha(required):
  """A per-class alpha: a length-C list, or a scheme derived from counts."""
  def check(ctx, key, value):
    beta = ctx.cfg.get('beta')
    if beta is not None:  # Validated here too: the scheme below uses it.
      beta = _UNIT_OPEN(ctx, 'beta', beta)
      if value != 'class_balanced':
        raise ValueError(f"{ctx.loss}: beta only applies with "
                         f"alpha='class_balanced', got alpha={value!r}.")
    if isinstance(value, str):
      return class_weights.from_scheme(
          ctx.loss, value, ctx.class_counts, ctx.num_classes,
          beta=0.999 if beta is None else beta)
    if value is None and required:
      raise ValueError(f'{ctx.loss}: {key} is required.')
    return _vector_or_scalar(lo=0, allow_scalar=False)(ctx, key, value)
  return check


def _choice(*options):
  def check(ctx, key, value):
    if value not in options:
      raise ValueError(f'{ctx.loss}: {key} must be one of {list(options)}, '
                       f'got {value!r}.')
    return value
  return check


def _optional(check):
  return lambda ctx, key, v: None if v is None else check(ctx, key, v)


def _class_ids(ctx, key, value):
  ids = [] if value is None else list(np.atleast_1d(np.asarray(value)))
  if any(not isinstance(c, numbers.Integral) or isinstance(c, bool)
         or not 0 <= c < ctx.num_classes for c in ids) or (
             ids and len(set(ids)) == ctx.num_classes):
    raise ValueError(f'{ctx.loss}: {key} must list class ids in [0, '
                     f'{ctx.num_classes}) and leave one class, got {value!r}.')
  return tuple(int(c) for c in ids)


def _counts(ctx, key, value):
  del value  # Not a config key: class counts come from the data pipeline.
  return class_weights.validate_counts(ctx.loss, ctx.class_counts,
                                       ctx.num_classes).astype(np.float32)


_UNIT_OPEN = _number(lo=0, hi=1, hi_open=True)
_NONNEG = _number(lo=0)


# fn; params {key: (default, check)}; consumed: keys validated but used by
# other keys' checks (not passed on); derived: kwargs computed from the
# context (class_counts).
_Entry = collections.namedtuple('_Entry', 'fn params stateful consumed derived',
                                defaults=(False, (), {}))


_SET_KEYS = {
    'smooth_nr': (None, _optional(_NONNEG)),
    'smooth_dr': (None, _optional(_NONNEG)),
    'batch': (True, _boolean),
    'exclude': ((), _class_ids),
    'class_weights': (None, _vector_or_scalar(lo=0, allow_scalar=False)),
}

_ENTRIES = {
    'ce': _Entry(cross_entropy.ce, {
        'label_smoothing': (0.0, _number(lo=0, hi=1))}),
    'bce': _Entry(cross_entropy.bce, {
        'label_smoothing': (0.0, _number(lo=0, hi=1)),
        'pos_weight': (None, _vector_or_scalar(lo=0))}),
    'weighted_ce': _Entry(cross_entropy.weighted_ce, {
        'alpha': (_REQUIRED, _class_alpha(required=True)),
        'beta': (None, _optional(_UNIT_OPEN))}, consumed=('beta',)),
    'class_balanced_ce': _Entry(cross_entropy.class_balanced_ce, {
        'beta': (0.999, _UNIT_OPEN)}, derived={'class_counts': _counts}),
    'focal': _Entry(focal.focal, {
        'gamma': (2.0, _NONNEG),
        'alpha': (None, _class_alpha(required=False)),
        'beta': (None, _optional(_UNIT_OPEN))}, consumed=('beta',)),
    'sigmoid_focal': _Entry(focal.sigmoid_focal, {
        'gamma': (2.0, _NONNEG),
        'alpha': (0.25, _vector_or_scalar(lo=0, hi=1))}),
    'ghm': _Entry(ghm.ghm, {
        'bins': (30, _integer(lo=1)),
        'momentum': (0.75, _UNIT_OPEN),
        'bias_correction': (True, _boolean)}, stateful=True),
    'sigmoid_ghm': _Entry(ghm.sigmoid_ghm, {
        'bins': (30, _integer(lo=1)),
        'momentum': (0.75, _UNIT_OPEN),
        'bias_correction': (True, _boolean)}, stateful=True),
    'dsc': _Entry(dice.dsc, {
        'alpha': (1.0, _NONNEG), 'gamma': (1.0, _NONNEG),
        'form': ('ovr', _choice('ovr', 'gold'))}),
    'dice': _Entry(dice.dice, {'gamma': (1.0, _NONNEG), **_SET_KEYS}),
    'tversky': _Entry(dice.tversky, {
        'alpha': (0.3, _NONNEG), 'beta': (0.7, _NONNEG),
        'gamma': (1.0, _NONNEG), **_SET_KEYS}),
    'logit_adjusted_ce': _Entry(logit_adjustment.logit_adjusted_ce, {
        'tau': (1.0, _NONNEG)}, derived={'class_counts': _counts}),
    'multilabel_ce': _Entry(multilabel.multilabel_ce, {}),
}


def names() -> tuple[str, ...]:
  """Registered loss names."""
  return tuple(_ENTRIES)


def _suggest(word, options):
  close = difflib.get_close_matches(str(word), list(options), n=1)
  return f' Did you mean {close[0]!r}?' if close else ''


def _entry(name) -> _Entry:
  if name not in _ENTRIES:
    raise ValueError(f'Unknown loss {name!r}.{_suggest(name, _ENTRIES)} Valid '
                     f'names: {", ".join(names())}.')
  return _ENTRIES[name]


def get(name: str) -> Callable[..., Any]:
  """The raw loss function registered under `name` (see `losses` docs)."""
  return _entry(name).fn


def _ce_term(logits, labels, weights, reduction):
  """The `ce` of `ce_weight` / `ce_warmup_steps`: softmax CE for class ids
  `[...]` with logits `[..., C]`, BCE for labels of the logits' shape."""
  same = jnp.shape(labels) == jnp.shape(logits)
  fn = cross_entropy.bce if same else cross_entropy.ce
  return fn(logits, labels, weights=weights, reduction=reduction)


class LossSpec:
  """A configured loss with one calling convention for every loss.

  Attributes: `name`; `stateful` (GHM's EMA histogram, the warm-up's step
  count); `hparams` (validated, derived arrays included); `flood`,
  `ce_weight`, `ce_warmup_steps` (None when not set).
  """

  def __init__(self, name, fn, *, stateful, hparams, init_state, flood,
               ce_weight=None, ce_warmup_steps=None):
    self.name, self.hparams, self.flood = name, dict(hparams), flood
    self.ce_weight, self.ce_warmup_steps = ce_weight, ce_warmup_steps
    self._base_stateful = stateful
    self.stateful = stateful or bool(ce_warmup_steps)
    self._init_state = init_state
    self._fn = functools.partial(fn, **hparams)
    self._total = self._compound if flood is None else flooding.flooded(
        self._compound, flood)

  def init_state(self):
    """Initial loss state: a pytree of arrays ({} for stateless losses)."""
    state = self._init_state() if self._base_stateful else {}
    if self.ce_warmup_steps:
      state = dict(state, step=jnp.zeros((), jnp.int32))
    return state

  def __call__(self, logits, labels, *, weights=None, state=None,
               reduction='mean'):
    """Returns `(loss, new_state)`; stateless losses return `state` as given
    ({} if None). `reduction` as in the loss functions ('mean', 'sum',
    'none'); flooding applies to 'mean' only."""
    if self.stateful and state is None:
      raise ValueError(f'{self.name}: state is required; start from '
                       'spec.init_state().')
    if self.flood is not None and reduction != 'mean':
      raise ValueError(f'{self.name}: flood applies to the batch mean; '
                       f"reduction={reduction!r} is not available with it.")
    value, new_state = self._total(logits, labels, weights=weights,
                                   state=state, reduction=reduction)
    return value, (new_state if self.stateful else
                   ({} if state is None else state))

  def _compound(self, logits, labels, *, weights, state, reduction):
    """The named loss (+ ce_weight * ce), after ce_warmup_steps of CE."""
    base = None
    if self._base_stateful:
      base = {k: v for k, v in state.items() if k != 'step'}

    def named(base):
      if self._base_stateful:
        value, base = self._fn(logits, labels, weights=weights, state=base,
                               reduction=reduction)
      else:
        value = self._fn(logits, labels, weights=weights, reduction=reduction)
      if self.ce_weight:
        ce = _ce_term(logits, labels, weights, reduction)
        self._check_shapes(ce, value, reduction)
        value = value + self.ce_weight * ce
      return value, base

    if not self.ce_warmup_steps:
      return named(base)
    warm = lambda base: (_ce_term(logits, labels, weights, reduction), base)
    self._check_shapes(*[jax.eval_shape(f, base)[0] for f in (warm, named)],
                       reduction)
    # The named loss (and its state) sits out the warm-up.
    value, base = jax.lax.cond(state['step'] < self.ce_warmup_steps, warm,
                               named, base)
    return value, dict(base or {}, step=state['step'] + 1)

  def _check_shapes(self, ce, value, reduction):
    if jnp.shape(ce) != jnp.shape(value):
      raise ValueError(f'{self.name}: with reduction={reduction!r} ce has '
                       f'shape {jnp.shape(ce)}, the loss {jnp.shape(value)}.')

  def __repr__(self):
    shown = {k: (v.tolist() if isinstance(v, np.ndarray) else v)
             for k, v in self.hparams.items()}
    extra = ''.join(f', {k}={getattr(self, k)}' for k in (
        'flood', 'ce_weight', 'ce_warmup_steps') if getattr(self, k))
    return f'LossSpec({self.name!r}, {shown}{extra})'


def check_keys(cfg) -> dict[str, Any]:
  """`cfg` (dict, ConfigDict, name) as a dict; ValueError for a bad name/key."""
  if isinstance(cfg, str):
    cfg = {'name': cfg}
  elif hasattr(cfg, 'to_dict') or isinstance(cfg, Mapping):  # ConfigDict too
    cfg = dict(cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg)
  else:
    raise ValueError(f'A loss config must be a dict, ConfigDict or name, got '
                     f'{type(cfg).__name__}.')
  if 'name' not in cfg:
    raise ValueError(f'A loss config needs a name; valid names: '
                     f'{", ".join(names())}.')
  entry = _entry(cfg['name'])
  unknown = sorted(set(cfg) - set(entry.params) - set(_COMMON_KEYS))
  if unknown:
    valid = sorted(entry.params) + list(_COMMON_KEYS)
    raise ValueError(
        f'Unknown hyperparameter(s) {unknown} for loss {cfg["name"]!r}.'
        f'{_suggest(unknown[0], valid)} Valid keys: {", ".join(valid)}.')
  return cfg


def from_config(cfg, *, num_classes, class_counts=None) -> LossSpec:
  """Validates a loss config and returns its `LossSpec`.

  Args:
    cfg: dict / ConfigDict like `dict(name='focal', gamma=2.0)`, or a name.
    num_classes: C, the size of the class axis (for binary sigmoid heads,
      1). Per-class vectors and `class_counts` must have this length.
    class_counts: length-C training-set counts; required by
      `class_balanced_ce`, `logit_adjusted_ce` and `alpha='inverse_freq' |
      'inverse_sqrt_freq' | 'class_balanced'`.

  Raises:
    ValueError: unknown name or key (listing the valid ones), an impossible
      value (naming the key), or missing / malformed class counts.
  """
  cfg = check_keys(cfg)
  name = cfg.pop('name')
  entry = _entry(name)
  _checks.check_int(name, 'num_classes', num_classes, lo=1)
  ctx = _Ctx(name, num_classes, None, {})
  flood, ce_weight, warmup = (cfg.pop(k, None) for k in _COMMON_KEYS[1:])
  if flood is not None:
    flood = _number(lo=0)(ctx, 'flood', flood)
  ce_weight = _number(lo=0)(ctx, 'ce_weight', ce_weight) if ce_weight else None
  warmup = _integer(lo=0)(ctx, 'ce_warmup_steps', warmup) if warmup else None

  merged = {k: cfg.get(k, default) for k, (default, _) in entry.params.items()}
  missing = [k for k, v in merged.items() if v is _REQUIRED]
  if missing:
    raise ValueError(f'{name}: missing required hyperparameter(s) {missing}.')

  ctx = _Ctx(name, num_classes, class_counts, merged)
  hparams = {k: check(ctx, k, merged[k])
             for k, (_, check) in entry.params.items()}
  for key in entry.consumed:
    hparams.pop(key)
  for key, derive in entry.derived.items():
    hparams[key] = derive(ctx, key, None)

  init_state = None
  if entry.stateful:
    init_state = functools.partial(ghm.init_state, hparams['bins'])
  return LossSpec(name, entry.fn, stateful=entry.stateful, hparams=hparams,
                  init_state=init_state, flood=flood, ce_weight=ce_weight,
                  ce_warmup_steps=warmup)
