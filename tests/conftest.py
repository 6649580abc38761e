"""Suite-wide setup: one persistent XLA compilation cache for the whole run.

Many tests train the same tiny models, in this process, in the other xdist
worker and in subprocesses (`python -m bert_jax.main`); with a shared
cache each distinct program compiles once per suite run instead of once per
test. Results do not change: a cache hit returns the executable that the
compile would have produced. The cache lives in a fresh directory per run
(made by the controlling process and handed to the workers and their
subprocesses through the environment), so nothing carries over between
runs. A test that sets its own `compilation_cache_dir` is unaffected in a
subprocess; set BERT_JAX_TEST_NO_XLA_CACHE=1 to run without the cache.
"""

import os
import shutil
import tempfile

_ENV = 'JAX_COMPILATION_CACHE_DIR'


def pytest_configure(config):
  del config
  if os.environ.get('BERT_JAX_TEST_NO_XLA_CACHE') or _ENV in os.environ:
    return   # off, or already set (an xdist worker inherits the controller's)
  os.environ[_ENV] = tempfile.mkdtemp(prefix='bert_jax_test_xla_cache_')
  os.environ['BERT_JAX_TEST_XLA_CACHE_OWNER'] = str(os.getpid())
  # Cache every program, however quick to compile or small (the defaults
  # skip programs under a second of compile time: most of a tiny model's).
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '0'


def pytest_unconfigure(config):
  del config
  if os.environ.get('BERT_JAX_TEST_XLA_CACHE_OWNER') == str(os.getpid()):
    shutil.rmtree(os.environ.pop(_ENV), ignore_errors=True)
