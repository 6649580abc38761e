"""Command-line config overrides (bert_jax.config_cli), in-process.

Every `python -m bert_jax.main` command in README.md is parsed against its
preset, so an override the README documents cannot break unnoticed.
(tests/test_config_validation.py runs bad configs through the real CLI.)
"""

import pathlib
import re
import shlex

import pytest

from bert_jax import config_cli
from bert_jax.tasks import base

ROOT = pathlib.Path(__file__).resolve().parents[1]
PRESET = '--config=configs/finetune.py:drug_reviews'


def _parse(*overrides):
  return config_cli.parse(['prog', PRESET, '--workdir=/tmp/unused', *overrides])


def test_free_form_sections_take_new_keys_as_literals():
  config, workdir, rest = _parse('--config.data.reader_options.text_field=review',
                                 '--config.data.reader_options.skip_header=True',
                                 '--config.loss.name=focal',
                                 '--config.loss.gamma=2',
                                 '--config.loss.alpha=[1, 2.5, 3]')
  assert workdir == '/tmp/unused' and rest == ['prog']
  assert config.data.reader_options.text_field == 'review'
  assert config.data.reader_options.skip_header is True
  assert config.loss.name == 'focal' and config.loss.gamma == 2
  assert config.loss.alpha == [1, 2.5, 3]
  # The rest of the config stays locked.
  with pytest.raises(AttributeError):
    config.optim.not_a_key = 1


def test_locked_sections_still_refuse_new_keys_naming_key_and_choices():
  with pytest.raises(config_cli.ConfigError) as e:
    _parse('--config.optim.lrr=1')
  message = str(e.value)
  assert message.startswith('config.optim.lrr: unknown key')
  assert 'locked section' in message and "Did you mean 'lr'?" in message
  assert 'weight_decay' in message   # the valid keys are listed
  with pytest.raises(config_cli.ConfigError, match=r"config\.dat\.train: unknown "
                     r"key 'dat' in config .*Did you mean 'data'\?"):
    _parse('--config.dat.train=x')


def test_wrong_type_names_the_key():
  with pytest.raises(config_cli.ConfigError,
                     match=r"config\.optim\.lr: wrong type for 'abc'"):
    _parse('--config.optim.lr=abc')


def test_a_free_form_value_of_the_wrong_type_for_an_existing_key():
  # reader_options.format is a string in the relation presets: a number
  # stays the string the user typed; a number key refuses a word.
  config, _, _ = config_cli.parse(['prog', '--config=configs/finetune.py:semeval',
                                   '--config.data.reader_options.format=7'])
  assert config.data.reader_options.format == '7'


def test_the_model_section_is_free_form():
  config, _, _ = _parse('--config.model.hidden_size=128',
                        '--config.model.dtype=bfloat16',
                        '--config.model.attention_implementation=None',
                        '--config.model.init_from=')
  assert config.model.to_dict() == dict(
      init_from='', hidden_size=128, dtype='bfloat16',
      attention_implementation=None)
  # The init_from of the preset stays a string, whatever it looks like.
  config, _, _ = _parse('--config.model.init_from=2024')
  assert config.model.init_from == '2024'


def test_literal():
  assert config_cli.literal('2') == 2 and config_cli.literal('0.5') == 0.5
  assert config_cli.literal('True') is True and config_cli.literal('[1]') == [1]
  assert config_cli.literal('review') == 'review'
  assert config_cli.literal('1e-3') == 1e-3


def _readme_commands():
  """Each `python -m bert_jax.main ...` command of README.md, its lines joined."""
  text = ROOT.joinpath('README.md').read_text()
  text = re.sub(r'\\\n\s*', ' ', text)
  commands = []
  for line in text.splitlines():
    if 'python -m bert_jax.main' not in line:
      continue
    command = line[line.index('python -m bert_jax.main'):]
    command = re.split(r'\s(?:&&|\||;)\s|`|"', command)[0]
    # A template's preset placeholder stands for any preset.
    command = command.replace('configs/finetune.py:<preset>',
                              'configs/finetune.py:drug_reviews')
    if '--config=' in command:   # prose naming the module alone is skipped
      commands.append(command.strip())
  return commands


README_COMMANDS = _readme_commands()


def test_the_readme_documents_main_commands():
  assert len(README_COMMANDS) >= 3, README_COMMANDS


@pytest.mark.parametrize('command', README_COMMANDS)
def test_every_readme_override_parses_against_its_preset(command):
  args = shlex.split(command)[3:]   # drop `python -m bert_jax.main`
  # Placeholders (DIR, FILE, <...>) are fine as values: nothing is read.
  config, _, _ = config_cli.parse(['prog', *args])
  base.model_fields(config)   # the free-form model section: BertConfig's keys
  for arg in args:
    m = re.match(r'--config\.([A-Za-z0-9_.]+)=(.*)$', arg)
    if not m:
      continue
    node = config
    for part in m.group(1).split('.'):
      node = node[part]
    assert str(node) == m.group(2) or node == config_cli.literal(m.group(2)), (
        arg, node)


def _readme_inline_overrides():
  """Each `--config.key=value` the README's prose shows in backticks (outside
  the commands above), with the backticks' quoting removed."""
  text = ROOT.joinpath('README.md').read_text()
  found = re.findall(r"`(--config\.[A-Za-z0-9_.]+=[^`\s]+)`", text)
  # `--config.key=value` and `<...>` are placeholders, not overrides.
  return sorted({arg.replace("'", '') for arg in found
                 if not arg.startswith('--config.key=') and '<' not in arg})


README_INLINE = _readme_inline_overrides()
# Keys that only some presets have: tried against each until one parses.
PRESETS_TO_TRY = ('configs/finetune.py:drug_reviews',
                  'configs/finetune.py:conll_sample',
                  'configs/finetune.py:semeval', 'configs/finetune.py:squad',
                  'configs/finetune.py:multilabel', 'configs/pretrain.py:tiny')


def test_the_readme_shows_inline_overrides():
  assert len(README_INLINE) >= 10, README_INLINE
  assert '--config.optim.freeze=^bert/embeddings/' in README_INLINE


@pytest.mark.parametrize('arg', README_INLINE)
def test_every_inline_readme_override_parses(arg):
  errors = []
  for preset in PRESETS_TO_TRY:
    try:
      config_cli.parse(['prog', f'--config={preset}', arg])
      return
    except config_cli.ConfigError as e:
      errors.append(f'{preset}: {e}')
  pytest.fail('\n'.join(errors))
