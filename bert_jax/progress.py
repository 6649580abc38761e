"""Progress bars (tqdm) for long loops: on a terminal only.

A bar shows the count, the rate and the ETA when the total is known. It is
off when stderr is not a terminal (log files, pipes) or under CI (the `CI`
environment variable is set), so logs stay free of carriage returns, and on
every process but the first of a multi-host run.
"""

from __future__ import annotations

import os
import sys
from typing import Iterable, Optional

import jax
import tqdm


def enabled() -> bool:
  """Whether bars are drawn: stderr is a TTY, not CI, process 0."""
  return (sys.stderr.isatty() and not os.environ.get('CI')
          and jax.process_index() == 0)


def bar(iterable: Optional[Iterable] = None, *, total: Optional[int] = None,
        desc: str = '', unit: str = 'it', initial: int = 0) -> tqdm.tqdm:
  """A `tqdm` bar over `iterable` (or one updated by hand), quiet where
  `enabled()` is False; `leave=False`, so finished bars do not pile up."""
  return tqdm.tqdm(iterable, total=total, desc=desc, unit=unit,
                   initial=initial, leave=False, dynamic_ncols=True,
                   disable=not enabled())
