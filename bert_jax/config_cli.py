"""`--config=FILE:ARG --config.key=value` parsing with free-form sections.

Configs are locked: a misspelled key is an error. Three sections are
free-form, because the code that consumes them validates their keys when
the run starts: `model` (checked against BertConfig's fields, which give
the defaults: `model.checked_fields`), `loss` (`losses.from_config` knows
each loss's hyperparameters) and `data.reader_options` (the readers know
their options). Overrides into a free-form section may add keys; their
values are read as Python literals (`2`, `0.5`, `True`, `None`, `[1, 2]`),
anything else as a string (`review`).

Every error names the key and says what is wrong (unknown key, locked
section, wrong type), with the valid choices:

  config, workdir, _ = config_cli.parse([
      'prog', '--config=configs/finetune.py:drug_reviews',
      '--config.loss.name=focal', '--workdir=/tmp/x'])
"""

from __future__ import annotations

import ast
import difflib
import re
from typing import Optional, Sequence

from absl import flags
import ml_collections
from ml_collections import config_flags

FREE_FORM = ('model', 'loss', 'data.reader_options')
_OVERRIDE = re.compile(r'^--config\.([A-Za-z0-9_.]+)(?:=(.*))?$', re.S)


class ConfigError(ValueError):
  """A command-line config override that cannot be applied."""


def define_flags(flag_values: flags.FlagValues, argv: Sequence[str]):
  """Defines --config and --workdir on `flag_values`; returns their holders.

  `argv` is what the config flag scans for `--config.*` overrides (by
  default ml_collections scans sys.argv, which still holds the free-form
  overrides this module applies itself)."""
  config = config_flags.DEFINE_config_file(
      'config', None, 'Config file, e.g. configs/finetune.py:drug_reviews.',
      flag_values=flag_values, lock_config=True, sys_argv=list(argv))
  workdir = flags.DEFINE_string(
      'workdir', None, 'Run directory: checkpoints, TensorBoard logs, '
      'results.json.', flag_values=flag_values)
  return config, workdir


def free_form_section(key: str) -> Optional[str]:
  """The free-form section a dotted key sets a leaf of, or None."""
  for section in FREE_FORM:
    if key.startswith(section + '.') and '.' not in key[len(section) + 1:]:
      return section
  return None


def split_free_form(argv: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
  """Takes the overrides into free-form sections out of `argv`.

  Returns (the other arguments, [(dotted key, raw value)]). A value given
  as the next argument (`--config.loss.gamma 2`) is taken too.
  """
  rest, free = [], []
  args = list(argv)
  i = 0
  while i < len(args):
    m = _OVERRIDE.match(args[i])
    if m and free_form_section(m.group(1)):
      value = m.group(2)
      if value is None:
        if i + 1 >= len(args):
          raise ConfigError(f'config.{m.group(1)}: no value given')
        value, i = args[i + 1], i + 1
      free.append((m.group(1), value))
    else:
      rest.append(args[i])
    i += 1
  return rest, free


def literal(text: str):
  """`2` -> 2, `0.5` -> 0.5, `True` -> True, `[1, 2]` -> [1, 2], else text."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _node(config: ml_collections.ConfigDict, dotted: str):
  node = config
  for part in dotted.split('.'):
    node = node[part]
  return node


def apply_free_form(config: ml_collections.ConfigDict,
                    overrides: Sequence[tuple[str, str]]) -> None:
  """Sets free-form overrides (new keys allowed) on a locked config."""
  for key, raw in overrides:
    section_name = free_form_section(key)
    leaf = key[len(section_name) + 1:]
    try:
      section = _node(config, section_name)
    except (KeyError, AttributeError):
      raise ConfigError(f'config.{key}: this config has no {section_name} '
                        'section') from None
    value = literal(raw)
    with section.unlocked():
      if leaf in section and section[leaf] is not None and value is not None:
        old = section[leaf]
        if isinstance(old, bool) != isinstance(value, bool) or (
            isinstance(old, (int, float)) and not isinstance(value, (int, float))):
          raise ConfigError(f'config.{key}: wrong type: expected '
                            f'{type(old).__name__} like {old!r}, got {raw!r}')
        if isinstance(old, str) and not isinstance(value, str):
          value = raw
      try:
        section[leaf] = value
      except TypeError as e:
        raise ConfigError(f'config.{key}: wrong type: {e}') from None


def describe_error(config: Optional[ml_collections.ConfigDict],
                   argv: Sequence[str], error: Exception) -> str:
  """One line naming the override that failed and why, with the choices."""
  if config is not None:
    for arg in argv:
      m = _OVERRIDE.match(arg)
      if not m:
        continue
      parts = m.group(1).split('.')
      node = config
      for i, part in enumerate(parts):
        if not isinstance(node, ml_collections.ConfigDict):
          where = '.'.join(parts[:i])
          return (f'config.{m.group(1)}: config.{where} is a '
                  f'{type(node).__name__}, not a section')
        if part not in node:
          where = '.'.join(parts[:i])
          keys = sorted(node.keys())
          close = difflib.get_close_matches(part, keys, n=1)
          hint = f' Did you mean {close[0]!r}?' if close else ''
          section = f'config.{where}' if where else 'config'
          return (f'config.{m.group(1)}: unknown key {part!r} in {section} '
                  f'(a locked section; free-form sections: '
                  f'{", ".join(FREE_FORM)}).{hint} Valid keys: '
                  f'{", ".join(keys)}')
        node = node[part]
  message = str(error).strip('\'"').replace('\\n', ' ').replace("\\'", "'")
  return f'config error: {message}'


def parse(argv: Sequence[str], flag_values: Optional[flags.FlagValues] = None
          ) -> tuple[ml_collections.ConfigDict, Optional[str], list[str]]:
  """Parses `argv` (program name first).

  Defines --config and --workdir on `flag_values` (default: a fresh
  `FlagValues`, so nothing global changes) and returns (the locked config,
  --workdir or None, the arguments that are not flags). Raises ConfigError
  naming the key.
  """
  if flag_values is None:
    flag_values = flags.FlagValues()
  rest, free = split_free_form(argv)
  config_holder, workdir_holder = define_flags(flag_values, rest)
  try:
    positional = flag_values(rest)
  except flags.Error as e:
    m = re.match(r'flag --config\.([A-Za-z0-9_.]+)=(.*?): (.*)$', str(e), re.S)
    if m:
      raise ConfigError(f'config.{m.group(1)}: wrong type for {m.group(2)!r}: '
                        f'{m.group(3)}') from e
    raise ConfigError(str(e)) from e
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    raise ConfigError(describe_error(_load_for_diagnosis(rest), rest, e)) from e
  config = config_holder.value
  if config is None:
    raise ConfigError('--config=configs/<job>.py:<arg> is required')
  apply_free_form(config, free)
  return config, workdir_holder.value, positional


def _load_for_diagnosis(argv: Sequence[str]):
  """The config file's own config (no overrides), to name a bad key."""
  fv = flags.FlagValues()
  keep = [argv[0]] + [a for a in argv[1:] if a.startswith('--config=')]
  holder, _ = define_flags(fv, keep)
  try:
    fv(keep)
    return holder.value
  except Exception:  # pylint: disable=broad-except
    return None
