"""BERT encoder in Flax linen: embeddings, post-LN Transformer layers, pooler.

`BertModel(config).apply({'params': p}, input_ids, token_type_ids,
attention_mask, deterministic=...)` returns `(sequence_output [B, T, H],
pooled_output [B, H])` in `config.dtype`. Parameters are kept in
`config.param_dtype` (fp32); softmax runs in fp32 whatever the compute dtype.

Parameter names follow HF's BERT closely so weight conversion is a table
(see hf_weights.py): `embeddings/{word,position,token_type}_embeddings`,
`encoder/layer_{i}/attention/{query,key,value,output}`,
`attention_LayerNorm`, `intermediate`, `output`, `output_LayerNorm`,
`pooler/dense`. With `scan_layers=True` the layers live under
`encoder/layers/...` with a leading axis of size `num_hidden_layers`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import typing
from typing import Any, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

Array = jax.Array

# Activations by HF's `hidden_act` names. BERT uses the exact (erf) GELU.
ACTIVATIONS = {
    'gelu': lambda x: jax.nn.gelu(x, approximate=False),
    'gelu_new': lambda x: jax.nn.gelu(x, approximate=True),
    'gelu_pytorch_tanh': lambda x: jax.nn.gelu(x, approximate=True),
    'relu': jax.nn.relu,
    'silu': jax.nn.silu,
    'swish': jax.nn.silu,
}

# Named rematerialisation policies (what to keep from the forward pass).
# 'none' disables remat; 'full' recomputes everything inside a layer.
REMAT_POLICIES = {
    'none': None,
    'full': jax.checkpoint_policies.nothing_saveable,
    'dots': jax.checkpoint_policies.dots_saveable,
    'dots_no_batch': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    # Keep the projections' outputs (named below), recompute attention and GELU.
    'save_proj': jax.checkpoint_policies.save_only_these_names(
        'query_proj', 'key_proj', 'value_proj', 'attention_out', 'mlp_out'),
}

ATTENTION_IMPLEMENTATIONS = (None, 'xla', 'cudnn')


def _option(default, *, in_hf_config: bool = False):
  """A field that a pretrained directory's config.json does not fix: an
  execution option (or an add-on, entity embeddings) that `config.model` may
  set on top of `init_from`. `in_hf_config`: HF's config.json holds the key
  anyway (the dropout probabilities), so the HF converters read and write it.
  """
  return dataclasses.field(default=default, metadata={
      'execution': True, 'hf': in_hf_config})


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Architecture (HF `config.json` fields) plus JAX execution options.

  The one list of the model's fields: `config.model` is checked against it
  (`checked_fields`), the HF converters read and write its `hf_fields()`,
  and with `init_from` a run may set only its `execution_fields()`.
  """
  vocab_size: int = 30522
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = 'gelu'
  hidden_dropout_prob: float = _option(0.1, in_hf_config=True)
  attention_probs_dropout_prob: float = _option(0.1, in_hf_config=True)
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  initializer_range: float = 0.02
  layer_norm_eps: float = 1e-12
  pad_token_id: int = 0
  # Relation classification, method (b): embeddings of entity roles
  # (0 = none, 1 = head, 2 = tail, ...) added in the embedding layer; 0 = off.
  num_entity_types: int = _option(0)
  # Execution options (not part of the architecture).
  dtype: str = _option('float32')  # compute dtype: 'bfloat16' on accelerators
  param_dtype: str = _option('float32')
  # None | 'xla' | 'cudnn'. cuDNN's fused kernel takes bf16/fp16 only and
  # no boolean mask: padding goes in as per-example key lengths, so it needs
  # right-padded inputs (every batch this codebase builds is).
  attention_implementation: Optional[str] = _option(None)
  scan_layers: bool = _option(False)
  remat_policy: str = _option('none')
  # When the heads read only some positions (MLM slots, [CLS]), compute the
  # last layer's queries, attention output and FFN only there (keys and
  # values still cover every token): exact, and 1/L of the encoder cheaper.
  # Not with scan_layers (all scanned layers run the same shapes).
  last_layer_at_outputs: bool = _option(True)

  def __post_init__(self):
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(
          f'BertConfig: hidden_size={self.hidden_size} is not divisible by '
          f'num_attention_heads={self.num_attention_heads}')
    if self.hidden_act not in ACTIVATIONS:
      raise ValueError(f'BertConfig.hidden_act={self.hidden_act!r}; '
                       f'known: {sorted(ACTIVATIONS)}')
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f'BertConfig.remat_policy={self.remat_policy!r}; '
                       f'known: {sorted(REMAT_POLICIES)}')
    if self.attention_implementation not in ATTENTION_IMPLEMENTATIONS:
      raise ValueError(
          f'BertConfig.attention_implementation='
          f'{self.attention_implementation!r}; known: {ATTENTION_IMPLEMENTATIONS}')
    for name in ('dtype', 'param_dtype'):
      try:
        jnp.dtype(getattr(self, name))
      except TypeError as e:
        raise ValueError(f'BertConfig.{name}={getattr(self, name)!r}') from e
    if (self.attention_implementation == 'cudnn' and
        jnp.dtype(self.dtype) not in (jnp.bfloat16, jnp.float16)):
      raise ValueError(
          "BertConfig.attention_implementation='cudnn' needs dtype "
          f"'bfloat16' or 'float16' (cuDNN's fused attention), got "
          f'dtype={self.dtype!r}')
    for name in ('vocab_size', 'hidden_size', 'num_hidden_layers',
                 'num_attention_heads', 'intermediate_size',
                 'max_position_embeddings', 'type_vocab_size'):
      if getattr(self, name) < 1:
        raise ValueError(f'BertConfig.{name} must be >= 1, got '
                         f'{getattr(self, name)}')

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

  def replace(self, **kw) -> 'BertConfig':
    return dataclasses.replace(self, **kw)

  @classmethod
  def from_hf_dict(cls, d: dict[str, Any], **overrides) -> 'BertConfig':
    """Reads the `hf_fields()` of a HF BERT `config.json` dict (other keys,
    such as newer transformers' `dtype`, are not ours to read)."""
    if d.get('model_type', 'bert') != 'bert':
      raise ValueError(f"config.json: model_type={d.get('model_type')!r}, "
                       "expected 'bert'")
    if d.get('position_embedding_type', 'absolute') != 'absolute':
      raise ValueError('config.json: position_embedding_type='
                       f"{d['position_embedding_type']!r} is not supported")
    kw = {k: d[k] for k in hf_fields() if k in d}
    kw.update(overrides)
    return cls(**kw)

  @classmethod
  def from_json(cls, path: str | os.PathLike, **overrides) -> 'BertConfig':
    with open(path) as f:
      try:
        d = json.load(f)
      except json.JSONDecodeError as e:
        raise ValueError(f'{path}: not valid JSON: {e}') from e
    try:
      return cls.from_hf_dict(d, **overrides)
    except (TypeError, ValueError) as e:
      raise ValueError(f'{path}: {e}') from e

  def to_hf_dict(self) -> dict[str, Any]:
    d = {k: getattr(self, k) for k in hf_fields()}
    d.update(model_type='bert', position_embedding_type='absolute')
    return d


def hf_fields() -> tuple[str, ...]:
  """The BertConfig fields a HF BERT `config.json` holds, by the same names."""
  return tuple(f.name for f in dataclasses.fields(BertConfig)
               if f.metadata.get('hf', True))


def execution_fields() -> tuple[str, ...]:
  """The fields a pretrained directory's config.json does not fix (dtypes,
  attention, scan/remat, dropout, entity embeddings): with `init_from`,
  `config.model` sets these and the directory sets the rest."""
  return tuple(f.name for f in dataclasses.fields(BertConfig)
               if f.metadata.get('execution', False))


def _type_name(hint) -> str:
  return ' or '.join('None' if t is type(None) else t.__name__
                     for t in typing.get_args(hint) or (hint,))


def _fits(value, hint) -> bool:
  """Whether `value` may be given for a field annotated `hint`: an int may
  stand for a float, a bool only for a bool, None only for an Optional."""
  def fits(t):
    if value is None:
      return t is type(None)
    if isinstance(value, bool):
      return t is bool
    return isinstance(value, (int, float) if t is float else t)
  return any(fits(t) for t in typing.get_args(hint) or (hint,))


def checked_fields(values: Mapping[str, Any], where: str = 'config.model',
                   also: Sequence[str] = ()) -> dict[str, Any]:
  """`values` checked against BertConfig's fields, as keyword arguments.

  `values` is a free-form config section such as `config.model`: it holds
  only the fields it sets (BertConfig has the defaults), and `also` names
  its keys that are not fields (`init_from`), which are left out of the
  result. A key set to None counts as not given, so the command line can
  take back a field a preset sets (`--config.model.hidden_size=None`).
  A key that is neither raises ValueError naming `<where>.<key>`, the
  closest field and every valid key; a value of the wrong type names the key
  and the field's type. Ranges and combinations are BertConfig's own checks
  (`__post_init__`). An int given for a float field becomes a float.
  """
  hints = typing.get_type_hints(BertConfig)
  fields = [f.name for f in dataclasses.fields(BertConfig)]
  out = {}
  for key, value in values.items():
    if key in also:
      continue
    if key not in fields:
      valid = sorted(fields + list(also))
      close = difflib.get_close_matches(key, valid, n=1)
      hint = f" Did you mean '{close[0]}'?" if close else ''
      raise ValueError(f'{where}.{key}: unknown key (not a BertConfig field).'
                       f'{hint} Valid keys: {", ".join(valid)}')
    if value is None:
      continue
    if not _fits(value, hints[key]):
      raise ValueError(f'{where}.{key}: wrong type: expected '
                       f'{_type_name(hints[key])}, got {value!r}')
    out[key] = float(value) if hints[key] is float else value
  return out


_THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _threefry_key_data(rng: Array) -> Optional[Array]:
  """uint32 [2] key data of a threefry key (typed or raw), else None."""
  if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
    if str(jax.random.key_impl(rng)) != 'threefry2x32':
      return None
    return jax.random.key_data(rng)
  if (rng.shape == (2,) and rng.dtype == jnp.uint32 and
      jax.config.jax_default_prng_impl == 'threefry2x32'):
    return rng
  return None


def random_bits(rng: Array, num: int) -> Array:
  """`jax.random.bits(rng, (num,), uint32)`, bit for bit, faster on CPU.

  JAX lowers its threefry hash on CPU as a loop of five steps (a smaller
  program to compile), so each step is a pass over the whole array; the
  same hash with its 20 rounds unrolled fuses into one pass and draws
  dropout masks about 4.5x faster there (measured on 1.5M words). This is
  the unrolled lowering JAX itself uses on GPU and TPU. Other PRNGs, the
  non-default `jax_threefry_partitionable=False` counters and more than
  2^32 words go to `jax.random.bits`.
  """
  key = _threefry_key_data(rng)
  if (key is None or not jax.config.jax_threefry_partitionable
      or num >= 2 ** 32):
    return jax.random.bits(rng, (num,), jnp.uint32)
  k0, k1 = key[0], key[1]
  ks = (k0, k1, k0 ^ k1 ^ jnp.uint32(0x1BD11BDA))
  # Counter i as (hi, lo) 32-bit halves: hi = 0 below 2^32.
  x0 = jnp.zeros((num,), jnp.uint32) + ks[0]
  x1 = jnp.arange(num, dtype=jnp.uint32) + ks[1]
  for i in range(5):
    for r in _THREEFRY_ROTATIONS[i % 2]:
      x0 = x0 + x1
      x1 = x0 ^ ((x1 << jnp.uint32(r)) | (x1 >> jnp.uint32(32 - r)))
    x0 = x0 + ks[(i + 1) % 3]
    x1 = x1 + ks[(i + 2) % 3] + jnp.uint32(i + 1)
  return x0 ^ x1


class Dropout(nn.Module):
  """Inverted dropout drawing 16 random bits per element, two per word.

  `flax.linen.Dropout` draws a 32-bit threefry word per element and turns it
  into a float; the attention-probability dropout alone is `B*heads*T*T`
  draws per layer, and on CPU that RNG was most of the cost of training with
  dropout. Here each threefry word gives two 16-bit draws: an element is
  dropped when its draw is below `t = round(rate * 2^16)`, so the drop
  probability is `t / 2^16` (within 2^-17 of `rate`: 0.1 -> 0.100006), and
  kept elements are scaled by `2^16 / (2^16 - t)`, which keeps the
  expectation exact. Masks are independent per element (no broadcasting).
  Uses the 'dropout' RNG stream like `nn.Dropout`.
  """
  rate: float

  @nn.compact
  def __call__(self, x: Array, deterministic: bool) -> Array:
    if deterministic or self.rate == 0.0:
      return x
    if self.rate >= 1.0:
      return jnp.zeros_like(x)
    threshold = int(round(self.rate * 65536))
    rng = self.make_rng('dropout')
    n = x.size
    words = random_bits(rng, (n + 1) // 2)
    draws = jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(-1)[:n]
    keep = draws.reshape(x.shape) >= threshold
    return jnp.where(keep, x * (65536 / (65536 - threshold)),
                     jnp.zeros((), x.dtype))


def take_positions(sequence: Array, positions: Array) -> Array:
  """sequence [B, T, H], positions int [B, P] -> [B, P, H]."""
  return jnp.take_along_axis(sequence, positions[..., None].astype(jnp.int32),
                             axis=1)


def key_lengths(mask: Array) -> Array:
  """bool [B, 1, 1, T] right-padded attention mask -> int32 [B], the number
  of real tokens (at least 1: a cuDNN row with no key is undefined, and an
  all-padding row is masked out of every loss anyway)."""
  return jnp.maximum(mask.sum(axis=(1, 2, 3)), 1).astype(jnp.int32)


def dense(config: BertConfig, features: int, name: str) -> nn.Dense:
  """A Dense layer to `features` outputs as BERT's: computes in
  `config.dtype`, keeps its params in `config.param_dtype`, draws its
  kernel from N(0, initializer_range^2), bias zero. The encoder and the
  heads use it."""
  return nn.Dense(
      features, dtype=jnp.dtype(config.dtype),
      param_dtype=jnp.dtype(config.param_dtype),
      kernel_init=nn.initializers.normal(config.initializer_range), name=name)


def layer_norm(config: BertConfig, name: str) -> nn.LayerNorm:
  """A LayerNorm as BERT's (epsilon `config.layer_norm_eps`, the config's
  dtypes). The encoder and the heads use it."""
  # Flax computes the LayerNorm statistics in fp32 even for bf16 inputs.
  return nn.LayerNorm(epsilon=config.layer_norm_eps,
                      dtype=jnp.dtype(config.dtype),
                      param_dtype=jnp.dtype(config.param_dtype), name=name)


class Embeddings(nn.Module):
  """Word + position + token-type (+ entity-role) embeddings, LayerNorm, dropout."""
  config: BertConfig

  def setup(self):
    c = self.config
    embed = lambda n, name: nn.Embed(
        n, c.hidden_size, dtype=jnp.dtype(c.dtype),
        param_dtype=jnp.dtype(c.param_dtype),
        embedding_init=nn.initializers.normal(c.initializer_range), name=name)
    self.word_embeddings = embed(c.vocab_size, 'word_embeddings')
    self.position_embeddings = embed(c.max_position_embeddings,
                                     'position_embeddings')
    self.token_type_embeddings = embed(c.type_vocab_size,
                                       'token_type_embeddings')
    if c.num_entity_types:
      self.entity_embeddings = embed(c.num_entity_types, 'entity_embeddings')
    self.LayerNorm = layer_norm(c, 'LayerNorm')  # pylint: disable=invalid-name
    self.dropout = Dropout(c.hidden_dropout_prob)

  def __call__(self, input_ids, token_type_ids, position_ids, entity_ids,
               deterministic: bool) -> Array:
    x = (self.word_embeddings(input_ids)
         + self.position_embeddings(position_ids)
         + self.token_type_embeddings(token_type_ids))
    if entity_ids is not None and not self.config.num_entity_types:
      raise ValueError('entity_ids given but config.num_entity_types == 0')
    if self.config.num_entity_types:
      # Role 0 ("no entity") is a learned row too, so always add.
      if entity_ids is None:
        entity_ids = jnp.zeros_like(input_ids)
      x = x + self.entity_embeddings(entity_ids)
    x = self.LayerNorm(x)
    return self.dropout(x, deterministic=deterministic)


class SelfAttention(nn.Module):
  """Multi-head self-attention through `jax.nn.dot_product_attention`."""
  config: BertConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: Array, mask: Array,
               query_positions: Optional[Array] = None) -> Array:
    """x: [B, T, H]; mask: bool [B, 1, 1, T] (True = attend);
    query_positions: int [B, Q] or None (= all T). Returns [B, Q, H]."""
    c = self.config
    b, t, _ = x.shape
    split = lambda y: y.reshape(b, -1, c.num_attention_heads, c.head_dim)
    xq = x if query_positions is None else take_positions(x, query_positions)
    q = split(dense(c, c.hidden_size, 'query')(xq))
    k = split(dense(c, c.hidden_size, 'key')(x))
    v = split(dense(c, c.hidden_size, 'value')(x))
    q = checkpoint_name(q, 'query_proj')
    k = checkpoint_name(k, 'key_proj')
    v = checkpoint_name(v, 'value_proj')
    dropout = c.attention_probs_dropout_prob
    if self.deterministic or dropout == 0.0:
      if c.attention_implementation == 'cudnn':
        # cuDNN turns a mask into a [B, 1, Q, T] bias and then refuses one
        # broadcast over the queries; key lengths are its padding form.
        ctx = jax.nn.dot_product_attention(
            q, k, v, key_value_seq_lengths=key_lengths(mask),
            implementation='cudnn')
      else:
        ctx = jax.nn.dot_product_attention(
            q, k, v, mask=mask, implementation=c.attention_implementation)
    else:
      # The fused kernels have no attention-probability dropout: compute the
      # probabilities explicitly (fp32 softmax) when training with it.
      logits = jnp.einsum('bqnd,bknd->bnqk', q, k,
                          preferred_element_type=jnp.float32)
      logits = logits / jnp.sqrt(c.head_dim).astype(jnp.float32)
      logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
      probs = jax.nn.softmax(logits, axis=-1)
      probs = Dropout(dropout)(probs, deterministic=False)
      ctx = jnp.einsum('bnqk,bknd->bqnd', probs.astype(v.dtype), v)
    ctx = ctx.reshape(b, -1, c.hidden_size)
    out = dense(c, c.hidden_size, 'output')(ctx)
    return checkpoint_name(out, 'attention_out')


class EncoderLayer(nn.Module):
  """Post-LN Transformer layer: x = LN(x + Attn(x)); x = LN(x + FFN(x))."""
  config: BertConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: Array, mask: Array,
               query_positions: Optional[Array] = None) -> Array:
    """x [B, T, H] -> [B, T, H], or [B, Q, H] at `query_positions` [B, Q]
    (the layer's output there; keys and values still use all T tokens)."""
    c = self.config
    drop = lambda y: Dropout(c.hidden_dropout_prob)(
        y, deterministic=self.deterministic)
    attn = SelfAttention(c, self.deterministic, name='attention')(
        x, mask, query_positions)
    if query_positions is not None:
      x = take_positions(x, query_positions)
    x = layer_norm(c, 'attention_LayerNorm')(x + drop(attn))
    h = ACTIVATIONS[c.hidden_act](dense(c, c.intermediate_size,
                                        'intermediate')(x))
    h = dense(c, c.hidden_size, 'output')(h)
    h = checkpoint_name(h, 'mlp_out')
    return layer_norm(c, 'output_LayerNorm')(x + drop(h))


class _ScannedLayer(EncoderLayer):
  """EncoderLayer with the (carry, x) -> (carry, y) signature nn.scan needs."""

  def __call__(self, x, mask):  # pytype: disable=signature-mismatch
    return super().__call__(x, mask), None


class Encoder(nn.Module):
  """Stack of EncoderLayers, optionally scanned and/or rematerialised."""
  config: BertConfig

  @nn.compact
  def __call__(self, x: Array, mask: Array, deterministic: bool,
               output_positions: Optional[Array] = None) -> Array:
    """x [B, T, H] -> [B, T, H], or [B, Q, H] at `output_positions` [B, Q]
    (with `last_layer_at_outputs` only the last layer's queries are cut)."""
    # `deterministic` becomes a layer attribute (static), which keeps it out
    # of nn.scan's and nn.remat's traced arguments.
    c = self.config
    policy = REMAT_POLICIES[c.remat_policy]
    if c.scan_layers:
      cls = _ScannedLayer
      if c.remat_policy != 'none':
        cls = nn.remat(cls, policy=policy, prevent_cse=False)
      stack = nn.scan(cls, variable_axes={'params': 0},
                      split_rngs={'params': True, 'dropout': True},
                      in_axes=nn.broadcast, length=c.num_hidden_layers)
      x, _ = stack(c, deterministic, name='layers')(x, mask)
      return x if output_positions is None else take_positions(
          x, output_positions)
    cls = EncoderLayer
    if c.remat_policy != 'none':
      cls = nn.remat(cls, policy=policy)
    last = c.num_hidden_layers - 1
    cut_last = output_positions is not None and c.last_layer_at_outputs
    for i in range(c.num_hidden_layers):
      positions = output_positions if cut_last and i == last else None
      x = cls(c, deterministic, name=f'layer_{i}')(x, mask, positions)
    if output_positions is not None and not cut_last:
      x = take_positions(x, output_positions)
    return x


class Pooler(nn.Module):
  """tanh(W h_[CLS] + b)."""
  config: BertConfig

  @nn.compact
  def __call__(self, cls_output: Array) -> Array:
    """cls_output: [B, H], the last layer at [CLS] -> [B, H]."""
    return jnp.tanh(dense(self.config, self.config.hidden_size,
                          'dense')(cls_output))


class BertModel(nn.Module):
  """The BERT encoder: `(sequence_output [B,T,H], pooled_output [B,H])`."""
  config: BertConfig

  def setup(self):
    self.embeddings = Embeddings(self.config)
    self.encoder = Encoder(self.config)
    self.pooler = Pooler(self.config)

  def __call__(self, input_ids: Array, token_type_ids: Optional[Array] = None,
               attention_mask: Optional[Array] = None, *,
               position_ids: Optional[Array] = None,
               entity_ids: Optional[Array] = None,
               output_positions: Optional[Array] = None,
               deterministic: bool = True) -> tuple[Array, Array]:
    """input_ids, token_type_ids, attention_mask, position_ids, entity_ids:
    int [B, T] (attention_mask 1 = real token, 0 = padding).

    output_positions: int [B, P] or None. None: sequence_output is
    [B, T, H]. Given (P may be 0): sequence_output is [B, P, H], the output at
    those positions (= the full output gathered there), and with
    `config.last_layer_at_outputs` the last layer runs its queries only at
    them and at [CLS] (for the pooler).
    """
    if input_ids.ndim != 2:
      raise ValueError(f'input_ids must be [batch, length], got {input_ids.shape}')
    b, t = input_ids.shape
    if t > self.config.max_position_embeddings:
      raise ValueError(f'sequence length {t} exceeds max_position_embeddings='
                       f'{self.config.max_position_embeddings}')
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    if position_ids is None:
      position_ids = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    x = self.embeddings(input_ids, token_type_ids, position_ids, entity_ids,
                        deterministic)
    mask = attention_mask.astype(bool)[:, None, None, :]
    if output_positions is None:
      x = self.encoder(x, mask, deterministic)
      return x, self.pooler(x[:, 0])
    # [CLS] first, for the pooler.
    rows = jnp.concatenate([jnp.zeros((b, 1), jnp.int32),
                            output_positions.astype(jnp.int32)], axis=1)
    x = self.encoder(x, mask, deterministic, rows)
    return x[:, 1:], self.pooler(x[:, 0])

  def word_embedding_table(self) -> Array:
    """[V, H] word embeddings, for the tied MLM decoder."""
    return self.embeddings.word_embeddings.embedding
