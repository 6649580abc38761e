"""Configs are plain data; `config.model` is checked against BertConfig.

BertConfig (bert_jax/model.py) is the one list of the model's fields: the
configs set only what differs from its defaults, the run checks
`config.model` against it, fine-tuning from `init_from` takes the fields it
marks as execution options, and the HF converters read and write its
HF fields.
"""

import ast
import dataclasses
import json
import pathlib

import ml_collections
import pytest

from bert_jax import config_cli
from bert_jax import model as model_lib
from bert_jax import runs
from bert_jax.model import BertConfig
from bert_jax.tasks import base
from bert_jax.tasks import finetune
from bert_jax.tasks import pretraining
from configs import ablation
from configs import common
from configs import finetune as finetune_configs
from configs import pretrain as pretrain_configs

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted(ROOT.joinpath('configs').glob('*.py'))

# A valid value unlike the default, for every field (sizes stay divisible).
OTHER = dict(vocab_size=211, hidden_size=48, num_hidden_layers=3,
             num_attention_heads=6, intermediate_size=80, hidden_act='relu',
             hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.2,
             max_position_embeddings=40, type_vocab_size=3,
             initializer_range=0.05, layer_norm_eps=1e-6, pad_token_id=1,
             num_entity_types=3, dtype='bfloat16', param_dtype='bfloat16',
             attention_implementation='xla', scan_layers=True,
             remat_policy='full', last_layer_at_outputs=False)
FIELDS = [f.name for f in dataclasses.fields(BertConfig)]


def test_other_values_cover_every_field_and_differ_from_the_defaults():
  assert sorted(OTHER) == sorted(FIELDS)
  default = BertConfig()
  assert all(OTHER[k] != getattr(default, k) for k in FIELDS)
  BertConfig(**OTHER)   # valid together


# ---------------------------------------------------------------- plain data
def _imports(path: pathlib.Path) -> list[str]:
  names = []
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      names += [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      names.append('.' * node.level + (node.module or ''))
  return names


@pytest.mark.parametrize('path', CONFIG_FILES, ids=lambda p: p.name)
def test_config_files_import_only_ml_collections_and_configs(path):
  bad = [n for n in _imports(path)
         if n.split('.')[0] not in ('ml_collections', 'configs')]
  assert not bad, f'configs/{path.name} imports {bad}: configs are plain data'


def test_the_import_check_sees_imports(tmp_path):
  path = tmp_path / 'x.py'
  path.write_text('import ml_collections\nfrom configs import common\n'
                  'def f():\n  from bert_jax import optim\n  import os.path\n')
  assert _imports(path) == ['ml_collections', 'configs', 'bert_jax', 'os.path']


def _every_config():
  yield from ((f'finetune:{p}', finetune_configs.get_config(p))
              for p in finetune_configs.PRESETS)
  yield from ((f'pretrain:{v}', pretrain_configs.get_config(v))
              for v in pretrain_configs.VARIANTS)
  yield 'ablation:smoke', ablation.get_config('drug_reviews,smoke')


def test_every_preset_model_section_holds_bert_config_fields_only():
  for name, c in _every_config():
    fields = base.model_fields(c)   # raises naming a bad key
    assert set(c.model.keys()) - set(fields) <= {'init_from'}, name
    if not c.model.init_from:
      BertConfig(**fields)


def test_the_common_model_section_is_init_from_alone():
  assert common.base_config().model.to_dict() == {'init_from': ''}
  assert common.model_config(hidden_size=64).to_dict() == {
      'init_from': '', 'hidden_size': 64}


# ------------------------------------------------------- config.model checks
def _config(**model):
  c = common.base_config()
  c.model.update(model)
  return c


def test_an_unknown_model_key_is_named_with_the_valid_keys():
  with pytest.raises(ValueError) as e:
    base.model_fields(_config(hiden_size=64))
  message = str(e.value)
  assert message.startswith('config.model.hiden_size: unknown key')
  assert "Did you mean 'hidden_size'?" in message
  for key in FIELDS + ['init_from']:
    assert key in message.split('Valid keys:')[1], key
  # The task builders check the same way.
  with pytest.raises(ValueError, match='config.model.hiden_size'):
    pretraining.bert_config_from(_config(hiden_size=64))
  with pytest.raises(ValueError, match='config.model.hiden_size'):
    finetune.bert_config(_config(hiden_size=64), vocab_size=100)


@pytest.mark.parametrize('key,value,expected', [
    ('hidden_size', 'abc', 'expected int'),
    ('hidden_size', 64.0, 'expected int'),
    ('hidden_size', True, 'expected int'),
    ('scan_layers', 1, 'expected bool'),
    ('hidden_dropout_prob', 'high', 'expected float'),
    ('attention_implementation', 3, 'expected str or None'),
    ('dtype', 16, 'expected str'),
])
def test_a_model_value_of_the_wrong_type_names_key_and_type(key, value,
                                                            expected):
  with pytest.raises(ValueError, match=rf'config\.model\.{key}: wrong type: '
                     rf'{expected}, got'):
    base.model_fields(_config(**{key: value}))


def test_model_fields_take_ints_for_floats_and_none_as_not_given():
  fields = base.model_fields(_config(hidden_dropout_prob=0, hidden_size=None,
                                     attention_implementation=None))
  assert fields == {'hidden_dropout_prob': 0.0}
  assert isinstance(fields['hidden_dropout_prob'], float)
  with pytest.raises(ValueError, match='config.model.init_from: wrong type'):
    base.model_fields(ml_collections.ConfigDict(dict(model=dict(init_from=3))))


def test_a_command_line_model_override_reaches_bert_config():
  config, _, _ = config_cli.parse([
      'prog', '--config=configs/pretrain.py:tiny', '--workdir=/tmp/unused',
      '--config.model.num_attention_heads=4', '--config.model.dtype=bfloat16',
      '--config.model.attention_implementation=xla',
      '--config.model.hidden_dropout_prob=0',
      '--config.model.num_hidden_layers=None'])   # the preset's 2 taken back
  bert = pretraining.bert_config_from(config)
  assert (bert.hidden_size, bert.num_attention_heads, bert.dtype) == (
      128, 4, 'bfloat16')                    # the preset's, then the overrides
  assert bert.attention_implementation == 'xla'
  assert bert.hidden_dropout_prob == 0.0
  assert bert.num_hidden_layers == BertConfig().num_hidden_layers == 12
  assert bert.layer_norm_eps == BertConfig().layer_norm_eps   # a default
  # Fine-tuning, fresh: the same, with the tokenizer's vocabulary size.
  config, _, _ = config_cli.parse([
      'prog', '--config=configs/finetune.py:drug_reviews', '--workdir=/tmp/u',
      '--config.model.init_from=', '--config.model.hidden_size=64',
      '--config.model.num_attention_heads=2', '--config.model.scan_layers=True'])
  bert = finetune.bert_config(config, vocab_size=123)
  assert (bert.hidden_size, bert.num_attention_heads, bert.scan_layers,
          bert.vocab_size) == (64, 2, True, 123)
  # A vocabulary size set by hand must be the vocab's (not replaced).
  with config.unlocked():
    config.model.vocab_size = 123
  assert finetune.bert_config(config, vocab_size=123).vocab_size == 123
  config.model.vocab_size = 999
  with pytest.raises(ValueError, match=r'config\.model\.vocab_size=999, but '
                     r'the vocab .* has 123 entries'):
    finetune.bert_config(config, vocab_size=123)
  # A misspelled model key parses (the section is free-form) and the run's
  # first check names it.
  config, _, _ = config_cli.parse([
      'prog', '--config=configs/pretrain.py:tiny', '--workdir=/tmp/unused',
      '--config.model.hidden_sise=64'])
  with pytest.raises(ValueError, match=r"config\.model\.hidden_sise: unknown "
                     r"key .*Did you mean 'hidden_size'\?"):
    base.model_fields(config)


# --------------------------------------------------------- init_from fields
@pytest.fixture
def pretrained(tmp_path):
  """A HF directory's config.json (no weights: bert_config reads no more)."""
  arch = {k: v for k, v in OTHER.items() if k in model_lib.hf_fields()}
  arch.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
  tmp_path.joinpath('config.json').write_text(
      json.dumps(BertConfig(**arch).to_hf_dict()))
  return tmp_path, BertConfig(**arch)


def test_execution_fields_are_what_init_from_lets_config_model_set(pretrained):
  directory, saved = pretrained
  assert set(model_lib.execution_fields()) == {
      'dtype', 'param_dtype', 'attention_implementation', 'scan_layers',
      'remat_policy', 'last_layer_at_outputs', 'num_entity_types',
      'hidden_dropout_prob', 'attention_probs_dropout_prob'}
  # Unset execution options take BertConfig's defaults (dropout 0.1), not
  # the directory's (0.0); the architecture is the directory's, whatever
  # the tokenizer's vocabulary size.
  bert = finetune.bert_config(_config(init_from=str(directory)), vocab_size=7)
  default = BertConfig()
  for key in FIELDS:
    want = (getattr(default, key) if key in model_lib.execution_fields()
            else getattr(saved, key))
    assert getattr(bert, key) == want, key
  # Each execution option set is honoured; each architecture field set must
  # equal the directory's.
  for key in FIELDS:
    if key in model_lib.execution_fields():
      c = _config(init_from=str(directory), **{key: OTHER[key]})
      assert getattr(finetune.bert_config(c, 7), key) == OTHER[key], key
      continue
    same = _config(init_from=str(directory), **{key: getattr(saved, key)})
    assert finetune.bert_config(same, 7) == bert, key
    c = _config(init_from=str(directory), **{key: _unlike(getattr(saved, key))})
    with pytest.raises(ValueError, match=rf'^config\.model\.{key}='):
      finetune.bert_config(c, 7)


def test_pretraining_from_init_from_takes_the_checkpoint_architecture(
    pretrained):
  """Pretraining on from a checkpoint builds the model its weights fit,
  by fine-tuning's rule; without init_from, config.model's own sizes."""
  directory, saved = pretrained
  bert = pretraining.bert_config_from(_config(init_from=str(directory),
                                               dtype='bfloat16'))
  for key in FIELDS:
    if key not in model_lib.execution_fields():
      assert getattr(bert, key) == getattr(saved, key), key
  assert bert.dtype == 'bfloat16' and bert.hidden_dropout_prob == 0.1
  with pytest.raises(ValueError, match=r'^config\.model\.hidden_size=64, but '
                     r'the config\.json of config\.model\.init_from='):
    pretraining.bert_config_from(_config(init_from=str(directory),
                                         hidden_size=64))
  fresh = pretraining.bert_config_from(_config(hidden_size=64,
                                                num_attention_heads=2))
  assert fresh.hidden_size == 64 and fresh.vocab_size == BertConfig().vocab_size


def _unlike(value):
  """A value of the same type unlike `value`."""
  if isinstance(value, (int, float)):
    return value * 2 + 1
  return 'relu' if value == 'gelu' else 'gelu'


def test_an_architecture_key_unlike_the_pretrained_one_is_named(pretrained):
  directory, saved = pretrained
  c = _config(init_from=str(directory), hidden_size=96)
  with pytest.raises(ValueError) as e:
    finetune.bert_config(c, 7)
  message = str(e.value)
  assert message.startswith('config.model.hidden_size=96')
  assert f'hidden_size={saved.hidden_size}' in message
  assert 'or set it to None' in message
  c.model.hidden_size = None   # taken back: the directory's size
  assert finetune.bert_config(c, 7).hidden_size == saved.hidden_size


# ------------------------------------------------------------ HF converters
def test_hf_dict_round_trips_every_field():
  config = BertConfig(**OTHER)
  d = config.to_hf_dict()
  assert set(d) == set(model_lib.hf_fields()) | {'model_type',
                                                  'position_embedding_type'}
  assert all(d[k] == OTHER[k] for k in model_lib.hf_fields())
  # Every field is in HF's config.json or is one init_from lets the run set
  # (a field in neither would be lost on export and unsettable on import).
  not_hf = [k for k in FIELDS if k not in model_lib.hf_fields()]
  assert set(not_hf) <= set(model_lib.execution_fields())
  assert BertConfig.from_hf_dict(d, **{k: OTHER[k] for k in not_hf}) == config
  assert json.loads(json.dumps(d)) == d
  # Keys that are not HF fields are not read (newer transformers write
  # `dtype` into config.json: a torch dtype, not our compute dtype).
  again = BertConfig.from_hf_dict(dict(d, dtype='bfloat16', scan_layers=True))
  assert (again.dtype, again.scan_layers) == ('float32', False)


def test_hf_fields_are_transformers_bert_config_attributes():
  transformers = pytest.importorskip('transformers')
  hf = transformers.BertConfig(**{k: OTHER[k] for k in model_lib.hf_fields()})
  for key in model_lib.hf_fields():
    assert getattr(hf, key) == OTHER[key], key


# ------------------------------------------------------- old run directories
def test_an_old_run_config_loses_the_architecture_init_from_ignored(tmp_path):
  old_model = dict(dataclasses.asdict(BertConfig()), init_from='minilm',
                   dtype='bfloat16')
  tmp_path.joinpath('config.json').write_text(json.dumps(
      {'task': 'classification', 'model': old_model}))
  model = runs.load_run_config(tmp_path).model.to_dict()
  assert set(model) == set(model_lib.execution_fields()) | {'init_from'}
  assert model['dtype'] == 'bfloat16' and model['init_from'] == 'minilm'
  # Older still: written before an execution field existed.
  older = {k: v for k, v in old_model.items() if k != 'last_layer_at_outputs'}
  tmp_path.joinpath('config.json').write_text(json.dumps(
      {'task': 'classification', 'model': older}))
  assert set(runs.load_run_config(tmp_path).model.to_dict()) == (
      set(model_lib.execution_fields()) - {'last_layer_at_outputs'}
      | {'init_from'})
  # A fresh old run keeps every field; a new one is left as written.
  for section in (dict(old_model, init_from=''),
                  {'init_from': 'minilm', 'hidden_size': 384}):
    tmp_path.joinpath('config.json').write_text(json.dumps(
        {'task': 'classification', 'model': section}))
    assert runs.load_run_config(tmp_path).model.to_dict() == section
