"""Weights in and out: HF-format directories and original Google TF checkpoints.

`from_pretrained(path_or_name)` -> `(config, params, tokenizer)` with params in
the `BertForPreTraining` layout `{'bert': ..., 'mlm': ..., 'nsp': ...}`
(task models use `params['bert']`). Loading is strict: every encoder weight
must be present with the right shape and every key in the file must be known;
MLM/NSP heads absent from the file (e.g. a `BertModel` checkpoint) are freshly
initialised, the MLM decoder being tied to the word embeddings anyway, and
that is logged. `export_hf(dir, config, params, vocab)` writes a directory
that `transformers.BertForPreTraining.from_pretrained` loads.

HF and TF names are a table (`_layer_table`, `_top_table`), so adding a weight
is one line.

A run's own checkpoints (train state and data position, orbax) are
`checkpointing.py`'s.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from typing import Any, Callable, Mapping, Optional

from absl import logging
import jax
import numpy as np

from bert_jax.model import BertConfig

Params = dict[str, Any]
SHORT_NAMES = {'minilm': 'minilm'}   # short name -> registry entry

_T = 'transpose'   # HF/TF stores this weight transposed relative to Flax
_ = None


class CheckpointError(ValueError):
  """A weight file does not match the model: names the key and the shapes."""


# (our path inside one encoder layer, HF name inside `encoder.layer.{i}.`,
#  TF name inside `bert/encoder/layer_{i}/`, HF transform)
_layer_table = [
    ('attention/query/kernel', 'attention.self.query.weight', 'attention/self/query/kernel', _T),
    ('attention/query/bias', 'attention.self.query.bias', 'attention/self/query/bias', _),
    ('attention/key/kernel', 'attention.self.key.weight', 'attention/self/key/kernel', _T),
    ('attention/key/bias', 'attention.self.key.bias', 'attention/self/key/bias', _),
    ('attention/value/kernel', 'attention.self.value.weight', 'attention/self/value/kernel', _T),
    ('attention/value/bias', 'attention.self.value.bias', 'attention/self/value/bias', _),
    ('attention/output/kernel', 'attention.output.dense.weight', 'attention/output/dense/kernel', _T),
    ('attention/output/bias', 'attention.output.dense.bias', 'attention/output/dense/bias', _),
    ('attention_LayerNorm/scale', 'attention.output.LayerNorm.weight', 'attention/output/LayerNorm/gamma', _),
    ('attention_LayerNorm/bias', 'attention.output.LayerNorm.bias', 'attention/output/LayerNorm/beta', _),
    ('intermediate/kernel', 'intermediate.dense.weight', 'intermediate/dense/kernel', _T),
    ('intermediate/bias', 'intermediate.dense.bias', 'intermediate/dense/bias', _),
    ('output/kernel', 'output.dense.weight', 'output/dense/kernel', _T),
    ('output/bias', 'output.dense.bias', 'output/dense/bias', _),
    ('output_LayerNorm/scale', 'output.LayerNorm.weight', 'output/LayerNorm/gamma', _),
    ('output_LayerNorm/bias', 'output.LayerNorm.bias', 'output/LayerNorm/beta', _),
]

# (our path, HF name (BertForPreTraining, 'bert.' prefix stripped), TF name,
#  HF transform, TF transform, group). Groups 'mlm'/'nsp'/'pooler' may be
#  absent from a file and are then initialised fresh.
_top_table = [
    ('bert/embeddings/word_embeddings/embedding', 'embeddings.word_embeddings.weight', 'bert/embeddings/word_embeddings', _, _, 'encoder'),
    ('bert/embeddings/position_embeddings/embedding', 'embeddings.position_embeddings.weight', 'bert/embeddings/position_embeddings', _, _, 'encoder'),
    ('bert/embeddings/token_type_embeddings/embedding', 'embeddings.token_type_embeddings.weight', 'bert/embeddings/token_type_embeddings', _, _, 'encoder'),
    ('bert/embeddings/LayerNorm/scale', 'embeddings.LayerNorm.weight', 'bert/embeddings/LayerNorm/gamma', _, _, 'encoder'),
    ('bert/embeddings/LayerNorm/bias', 'embeddings.LayerNorm.bias', 'bert/embeddings/LayerNorm/beta', _, _, 'encoder'),
    ('bert/pooler/dense/kernel', 'pooler.dense.weight', 'bert/pooler/dense/kernel', _T, _, 'pooler'),
    ('bert/pooler/dense/bias', 'pooler.dense.bias', 'bert/pooler/dense/bias', _, _, 'pooler'),
    ('mlm/transform_dense/kernel', 'cls.predictions.transform.dense.weight', 'cls/predictions/transform/dense/kernel', _T, _, 'mlm'),
    ('mlm/transform_dense/bias', 'cls.predictions.transform.dense.bias', 'cls/predictions/transform/dense/bias', _, _, 'mlm'),
    ('mlm/transform_LayerNorm/scale', 'cls.predictions.transform.LayerNorm.weight', 'cls/predictions/transform/LayerNorm/gamma', _, _, 'mlm'),
    ('mlm/transform_LayerNorm/bias', 'cls.predictions.transform.LayerNorm.bias', 'cls/predictions/transform/LayerNorm/beta', _, _, 'mlm'),
    ('mlm/output_bias', 'cls.predictions.bias', 'cls/predictions/output_bias', _, _, 'mlm'),
    ('nsp/dense/kernel', 'cls.seq_relationship.weight', 'cls/seq_relationship/output_weights', _T, _T, 'nsp'),
    ('nsp/dense/bias', 'cls.seq_relationship.bias', 'cls/seq_relationship/output_bias', _, _, 'nsp'),
]

# Pretraining heads: absent from encoder-only files, unused by fine-tuning.
_HEAD_GROUPS = ('mlm', 'nsp')

# Keys a file may hold that carry no information of their own.
_HF_IGNORED = ('embeddings.position_ids', 'cls.predictions.decoder.weight',
               'cls.predictions.decoder.bias')


def _entries(config: BertConfig, fmt: str):
  """Yields (our flat path, file name, transform, group) for every weight."""
  for ours, hf, tf, hf_t, tf_t, group in _top_table:
    yield ours, (hf if fmt == 'hf' else tf), (hf_t if fmt == 'hf' else tf_t), group
  for i in range(config.num_hidden_layers):
    for ours, hf, tf, t in _layer_table:
      name = (f'encoder.layer.{i}.{hf}' if fmt == 'hf'
              else f'bert/encoder/layer_{i}/{tf}')
      yield (f'bert/encoder/layer_{i}/{ours}', name,
             (t if fmt == 'hf' else None), 'encoder')


def _expected_shapes(config: BertConfig) -> dict[str, tuple[int, ...]]:
  """Our flat path -> shape, from an abstract init of BertForPreTraining."""
  from bert_jax.heads import BertForPreTraining  # pylint: disable=g-import-not-at-top
  model = BertForPreTraining(config.replace(scan_layers=False))
  ids = jax.ShapeDtypeStruct((1, 2), np.int32)
  pos = jax.ShapeDtypeStruct((1, 1), np.int32)
  shapes = jax.eval_shape(
      lambda i, p: model.init(jax.random.PRNGKey(0), i, i, i, p), ids, pos)
  return {path: tuple(leaf.shape)
          for path, leaf in flatten(shapes['params']).items()}


def flatten(tree: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  """Nested dict -> {'a/b/c': leaf}."""
  out = {}
  for k, v in tree.items():
    key = f'{prefix}{k}'
    if isinstance(v, Mapping):
      out.update(flatten(v, key + '/'))
    else:
      out[key] = v
  return out


def unflatten(flat: Mapping[str, Any]) -> Params:
  out: Params = {}
  for path, v in flat.items():
    node = out
    *parents, leaf = path.split('/')
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = v
  return out


def stack_layers(params: Params, num_layers: int) -> Params:
  """Unscanned `encoder/layer_{i}` -> scanned `encoder/layers` (stacked axis 0)."""
  params = dict(params)
  bert = dict(params['bert'])
  enc = bert['encoder']
  missing = [f'layer_{i}' for i in range(num_layers) if f'layer_{i}' not in enc]
  if missing:
    raise CheckpointError(f'stack_layers: bert/encoder lacks {missing}')
  layers = [enc[f'layer_{i}'] for i in range(num_layers)]
  bert['encoder'] = {'layers': jax.tree_util.tree_map(
      lambda *xs: np.stack([np.asarray(x) for x in xs]), *layers)}
  params['bert'] = bert
  return params


def unstack_layers(params: Params, num_layers: int) -> Params:
  """Scanned `encoder/layers` -> unscanned `encoder/layer_{i}`."""
  params = dict(params)
  bert = dict(params['bert'])
  stacked = bert['encoder']['layers']
  bert['encoder'] = {f'layer_{i}': jax.tree_util.tree_map(
      lambda x, i=i: np.asarray(x)[i], stacked) for i in range(num_layers)}
  params['bert'] = bert
  return params


def _read_hf_weights(directory: pathlib.Path) -> tuple[dict[str, np.ndarray], pathlib.Path]:
  st = directory / 'model.safetensors'
  pt = directory / 'pytorch_model.bin'
  if st.exists():
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    try:
      return dict(load_file(str(st))), st
    except Exception as e:  # safetensors raises its own error types
      raise CheckpointError(f'{st}: not a readable safetensors file: {e}') from e
  if pt.exists():
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise CheckpointError(
          f'{pt}: reading PyTorch checkpoints needs torch; install it or '
          'convert the file to model.safetensors') from e
    # weights_only=True: never unpickle arbitrary objects from a file.
    try:
      state = torch.load(str(pt), map_location='cpu', weights_only=True)
    except Exception as e:  # pickle refusal or corrupt file
      raise CheckpointError(f'{pt}: refused or unreadable with '
                            f'weights_only=True: {e}') from e
    return {k: v.detach().float().numpy() if v.is_floating_point()
            else v.numpy() for k, v in state.items()}, pt
  raise FileNotFoundError(
      f'{directory}: no model.safetensors or pytorch_model.bin found')


def _normalise_hf_name(name: str) -> str:
  if name.startswith('bert.'):
    name = name[len('bert.'):]
  # Old checkpoints name LayerNorm parameters gamma/beta.
  if '.LayerNorm.' in name:
    name = name.replace('.gamma', '.weight').replace('.beta', '.bias')
  return name


def _convert_in(config: BertConfig, weights: Mapping[str, np.ndarray],
                fmt: str, source: str, seed: int, heads: bool = True
                ) -> tuple[Params, list[str]]:
  """File weights -> our params; strict. Returns (params, fresh groups).

  heads=False: the MLM/NSP groups are neither returned nor initialised; a
  file's head weights are checked as usual, then dropped.
  """
  expected = _expected_shapes(config)
  entries = list(_entries(config, fmt))
  known = {name for _, name, _, _ in entries}
  ignored = set(_HF_IGNORED) if fmt == 'hf' else set()
  unknown = sorted(k for k in weights if k not in known and k not in ignored
                   and not (fmt == 'tf' and _tf_ignorable(k)))
  if unknown:
    raise CheckpointError(
        f'{source}: {len(unknown)} unknown key(s) the model has no place for: '
        f'{unknown[:10]}' + (' ...' if len(unknown) > 10 else ''))
  flat: dict[str, np.ndarray] = {}
  missing_by_group: dict[str, list[str]] = {}
  for ours, name, transform, group in entries:
    if name not in weights:
      missing_by_group.setdefault(group, []).append(name)
      continue
    value = np.asarray(weights[name])
    want = expected[ours][::-1] if transform == _T else expected[ours]
    if tuple(value.shape) != tuple(want):
      raise CheckpointError(
          f'{source}: key {name!r} has shape {tuple(value.shape)}, the model '
          f'expects {tuple(want)} (parameter {ours}) from config (vocab_size='
          f'{config.vocab_size}, hidden_size={config.hidden_size}, '
          f'intermediate_size={config.intermediate_size}, '
          f'max_position_embeddings={config.max_position_embeddings}, '
          f'type_vocab_size={config.type_vocab_size})')
    if transform == _T:
      value = value.T
    flat[ours] = value.astype(np.float32)
  if 'encoder' in missing_by_group:
    names = missing_by_group['encoder']
    raise CheckpointError(
        f'{source}: {len(names)} encoder weight(s) missing: {names[:10]}'
        + (' ...' if len(names) > 10 else ''))
  fresh = []
  for group, names in sorted(missing_by_group.items()):
    group_total = sum(1 for _, _, _, g in entries if g == group)
    if len(names) != group_total:   # half a head is a broken file, not a layout
      raise CheckpointError(f'{source}: {group} weights partly missing: {names}')
    fresh.append(group)
  if not heads:
    flat = {k: v for k, v in flat.items() if k.split('/')[0] not in _HEAD_GROUPS}
    expected = {k: v for k, v in expected.items()
                if k.split('/')[0] not in _HEAD_GROUPS}
    fresh = [g for g in fresh if g not in _HEAD_GROUPS]
  if fresh:
    flat.update(_fresh_params(config, seed,
                              [path for path in expected if path not in flat]))
    logging.info('%s: initialised fresh (absent from file): %s', source, fresh)
  return unflatten(flat), fresh


def _tf_ignorable(name: str) -> bool:
  # Optimizer slots and bookkeeping in Google's checkpoints.
  return (name.endswith('/adam_m') or name.endswith('/adam_v')
          or name in ('global_step', '_CHECKPOINTABLE_OBJECT_GRAPH'))


def _fresh_params(config: BertConfig, seed: int, paths: list[str]
                  ) -> dict[str, np.ndarray]:
  """Fresh values of `paths` (flat) from BertForPreTraining's initialiser.

  Only `paths` leave the jitted init, so XLA drops the draws of everything
  else (the encoder's 11M+ weights when only a head is missing): the values
  are the full init's, at a fraction of its compile and run time.
  """
  from bert_jax.heads import BertForPreTraining  # pylint: disable=g-import-not-at-top
  model = BertForPreTraining(config.replace(scan_layers=False))
  ids = np.zeros((1, 2), np.int32)

  def init(key):
    flat = flatten(model.init(key, ids, ids, ids, ids[:, :1])['params'])
    return {path: flat[path] for path in paths}
  return {k: np.asarray(v) for k, v in
          jax.jit(init)(jax.random.PRNGKey(seed)).items()}


def _check_vocab(config: BertConfig, vocab: pathlib.Path) -> None:
  with open(vocab, encoding='utf-8') as f:
    n = sum(1 for _ in f)
  if n != config.vocab_size:
    raise CheckpointError(
        f'{vocab}: {n} entries, but config vocab_size={config.vocab_size} '
        '(word embedding rows); the vocab does not belong to these weights')


def _resolve(path_or_name: str | os.PathLike) -> pathlib.Path:
  if str(path_or_name) in SHORT_NAMES:
    from bert_jax.data import registry  # pylint: disable=g-import-not-at-top
    return registry.fetch(SHORT_NAMES[str(path_or_name)])
  path = pathlib.Path(path_or_name).expanduser()
  if not path.is_dir():
    raise FileNotFoundError(
        f'{path}: not a directory and not a known short name '
        f'({sorted(SHORT_NAMES)})')
  return path


def from_pretrained(path_or_name: str | os.PathLike, *, scan_layers: bool = False,
                    seed: int = 0, load_tokenizer: bool = True,
                    heads: bool = True, **config_overrides):
  """Loads a HF-format BERT directory (or a short name such as 'minilm').

  The directory holds `config.json`, `model.safetensors` (or
  `pytorch_model.bin`, read with `weights_only=True`) and `vocab.txt`.
  `config_overrides` set execution options (dtype, scan_layers, ...) or
  dropout. Returns `(config, params, tokenizer)`; params are fp32 numpy
  arrays in the BertForPreTraining layout (scanned if `scan_layers`).
  `heads=False` returns `{'bert': ...}` alone (what fine-tuning reads), and
  skips initialising MLM/NSP heads the file lacks.
  """
  directory = _resolve(path_or_name)
  cfg_path = directory / 'config.json'
  if not cfg_path.exists():
    raise FileNotFoundError(f'{cfg_path}: missing (a HF BERT directory has '
                            'config.json, model.safetensors, vocab.txt)')
  config = BertConfig.from_json(cfg_path, scan_layers=scan_layers,
                                **config_overrides)
  vocab = directory / 'vocab.txt'
  if vocab.exists():
    _check_vocab(config, vocab)
  elif load_tokenizer:
    raise FileNotFoundError(f'{vocab}: missing; pass load_tokenizer=False to '
                            'load the weights alone')
  weights, source = _read_hf_weights(directory)
  weights = {_normalise_hf_name(k): v for k, v in weights.items()}
  params, _ = _convert_in(config, weights, 'hf', str(source), seed, heads)
  if 'cls.predictions.decoder.weight' in weights:
    tied = np.asarray(weights['cls.predictions.decoder.weight'])
    if not np.array_equal(tied, params['bert']['embeddings']['word_embeddings']['embedding']):
      raise CheckpointError(
          f'{source}: cls.predictions.decoder.weight differs from the word '
          'embeddings; this model ties them and cannot load an untied decoder')
  if scan_layers:
    params = stack_layers(params, config.num_hidden_layers)
  tokenizer = None
  if load_tokenizer:
    from bert_jax import tokenization  # pylint: disable=g-import-not-at-top
    tokenizer = tokenization.BertTokenizer.from_pretrained_dir(directory)
  return config, params, tokenizer



def load_mlm(path_or_name: str | os.PathLike, **config_overrides):
  """`from_pretrained`, for a directory that must hold an MLM head.

  Returns (config, params, tokenizer) like `from_pretrained`; raises
  CheckpointError when the weights have no `cls.predictions.*` (an
  encoder-only model such as MiniLM: its MLM head would be random).
  """
  directory = _resolve(path_or_name)
  weights, source = _read_hf_weights(directory)
  names = {_normalise_hf_name(k) for k in weights}
  del weights
  if 'cls.predictions.transform.dense.weight' not in names:
    raise CheckpointError(
        f'{source}: no MLM head (cls.predictions.*): this is an encoder-only '
        'model. Fill-mask needs a bert_jax pretraining run (its <workdir>/hf '
        'export) or a HF BertForMaskedLM / BertForPreTraining directory')
  return from_pretrained(directory, **config_overrides)


def _convert_out(config: BertConfig, params: Params, fmt: str
                 ) -> dict[str, np.ndarray]:
  """Our params -> {file name in `fmt` ('hf' or 'tf'): fp32 array}."""
  if 'layers' in params['bert']['encoder']:
    params = unstack_layers(params, config.num_hidden_layers)
  flat = flatten(params)
  out = {}
  for ours, name, transform, _ in _entries(config, fmt):
    if ours not in flat:
      raise CheckpointError(f'export: parameter {ours} missing from params')
    value = np.asarray(flat[ours], dtype=np.float32)
    out[name] = np.ascontiguousarray(value.T if transform == _T else value)
  return out


def encoder_hf_state_dict(config: BertConfig, bert_params: Params, *,
                          pooler: bool = True) -> dict[str, np.ndarray]:
  """`params['bert']` (a fine-tuned encoder) -> HF `bert.*` state dict.

  pooler=False leaves out `bert.pooler.*` (HF's token classification and QA
  models have no pooler).
  """
  if 'layers' in bert_params['encoder']:
    bert_params = unstack_layers({'bert': bert_params},
                                 config.num_hidden_layers)['bert']
  flat = flatten({'bert': bert_params})
  out = {}
  groups = ('encoder', 'pooler') if pooler else ('encoder',)
  for ours, name, transform, group in _entries(config, 'hf'):
    if group not in groups:
      continue
    if ours not in flat:
      raise CheckpointError(f'export: parameter {ours} missing from params')
    value = np.asarray(flat[ours], dtype=np.float32)
    out[f'bert.{name}'] = np.ascontiguousarray(
        value.T if transform == _T else value)
  extra = sorted(set(flat) - {e[0] for e in _entries(config, 'hf')})
  if extra:
    raise CheckpointError(f'export: encoder parameters with no HF name: '
                          f'{extra[:5]}')
  return out


def to_hf_state_dict(config: BertConfig, params: Params) -> dict[str, np.ndarray]:
  """Our BertForPreTraining params -> HF `BertForPreTraining` state dict."""
  return {(name if name.startswith('cls.') else f'bert.{name}'): value
          for name, value in _convert_out(config, params, 'hf').items()}


def export_hf(directory: str | os.PathLike, config: BertConfig, params: Params,
              vocab: Optional[str | os.PathLike] = None) -> pathlib.Path:
  """Writes a HF `BertForPreTraining` directory (config, safetensors, vocab)."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  state = to_hf_state_dict(config, params)
  save_file(state, str(directory / 'model.safetensors'),
            metadata={'format': 'pt'})
  hf = config.to_hf_dict()
  hf['architectures'] = ['BertForPreTraining']
  with open(directory / 'config.json', 'w') as f:
    json.dump(hf, f, indent=2, sort_keys=True)
  if vocab is not None:
    shutil.copyfile(vocab, directory / 'vocab.txt')
  return directory


def load_tf_checkpoint(ckpt_prefix: str | os.PathLike, config: BertConfig, *,
                       seed: int = 0,
                       reader: Optional[Callable[[str], Mapping[str, np.ndarray]]] = None
                       ) -> Params:
  """Original Google BERT TF checkpoint (`bert_model.ckpt`) -> our params.

  Reads with TensorFlow unless `reader` (prefix -> {name: array}) is given.
  Heads absent from the checkpoint start fresh.
  """
  if reader is None:
    try:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError('reading TF checkpoints needs TensorFlow: '
                        'pip install tensorflow-cpu') from e

    def reader(prefix):
      r = tf.train.load_checkpoint(str(prefix))
      return {n: r.get_tensor(n) for n in r.get_variable_to_shape_map()}
  weights = reader(ckpt_prefix)
  params, _ = _convert_in(config, weights, 'tf', str(ckpt_prefix), seed)
  return params


def to_tf_names(config: BertConfig, params: Params) -> dict[str, np.ndarray]:
  """Our params -> {Google TF variable name: array} (used to write test ckpts)."""
  return _convert_out(config, params, 'tf')
