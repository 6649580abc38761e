"""Entry point: `python -m bert_jax.main --config=configs/<job>.py:<arg> --workdir=DIR`.

Every config field can be overridden on the command line
(`--config.loss.name=dice --config.optim.lr=3e-5`); configs are locked, so a
misspelled key is an error.
"""

import os
import sys

# TensorFlow (used only for TensorBoard summaries) is chatty at start-up.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
from ml_collections import config_flags

from bert_jax import runs
from bert_jax import train

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file, e.g. configs/finetune.py:drug_reviews.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory: checkpoints, '
                               'TensorBoard logs, results.json.')
flags.mark_flags_as_required(['config', 'workdir'])


class _QuietLibraries(logging.logging.Filter):
  """Drops INFO records of orbax/absl internals (dozens per checkpoint)."""

  def filter(self, record):
    noisy = '/orbax/' in record.pathname or '/jax/_src/' in record.pathname
    return record.levelno >= logging.logging.WARNING or not noisy


def _parse_flags(argv):
  """absl's flag parsing, with config-override errors as one clear line.

  ml_collections raises AttributeError/KeyError/TypeError/ValueError for an
  unknown key or a value of the wrong type (`--config.optim.lrr=1`); show the
  message, not a traceback.
  """
  try:
    return flags.FLAGS(argv)
  except flags.Error:
    raise
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    message = str(e).strip('\'"').replace('\\n', ' ').replace('\\\'', "'")
    sys.stderr.write(f'FATAL config error: {message}\n')
    sys.exit(2)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_QuietLibraries())
  config = _CONFIG.value
  results = train.run(config, _WORKDIR.value)
  command = runs.predict_command(config, _WORKDIR.value, results)
  if command:
    logging.info('label new text with this run:\n  %s', command)
    print(f'Label new text with this run:\n  {command}', flush=True)


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
