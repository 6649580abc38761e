"""Entry point: `python -m bert_jax.main --config=configs/<job>.py:<arg> --workdir=DIR`.

Every config field can be overridden on the command line
(`--config.loss.name=dice --config.optim.lr=3e-5`); configs are locked, so a
misspelled key is an error, except in the free-form sections `model`,
`loss` and `data.reader_options`, which accept new keys and are checked when
the run starts (see `config_cli`).
"""

import os
import sys

# TensorFlow (used only for TensorBoard summaries) is chatty at start-up.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging

from bert_jax import config_cli
from bert_jax import runs
from bert_jax import train

_PARSED = {}


class _QuietLibraries(logging.logging.Filter):
  """Drops INFO records of orbax/absl internals (dozens per checkpoint)."""

  def filter(self, record):
    noisy = '/orbax/' in record.pathname or '/jax/_src/' in record.pathname
    return record.levelno >= logging.logging.WARNING or not noisy


def _parse_flags(argv):
  """Flags and config overrides; a config error is one clear line, no
  traceback (`FATAL config error: config.optim.lrr: unknown key ...`)."""
  try:
    _PARSED['config'], _PARSED['workdir'], positional = config_cli.parse(
        argv, flags.FLAGS)
  except config_cli.ConfigError as e:
    sys.stderr.write(f'FATAL config error: {e}\n')
    sys.exit(2)
  return positional


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not _PARSED['workdir']:
    raise app.UsageError('--workdir=DIR is required')
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_QuietLibraries())
  config = _PARSED['config']
  results = train.run(config, _PARSED['workdir'])
  command = runs.predict_command(config, _PARSED['workdir'], results)
  if command:
    logging.info('label new text with this run:\n  %s', command)
    print(f'Label new text with this run:\n  {command}', flush=True)


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
