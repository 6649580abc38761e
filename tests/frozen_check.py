"""A task's model reading cached encoder outputs (bert_jax.frozen) against
the same model running its encoder: shared by the task test files, which
own the data and tiny configs of each task."""

import re

import jax
import numpy as np


def dots(fn, *args) -> int:
  """Matrix products (dot_general) in fn's traced program, nested ones too."""
  return len(re.findall(r'\bdot_general\b', str(jax.make_jaxpr(fn)(*args))))


def assert_cache_replays(task, n: int = 8) -> None:
  """On the first `n` train and eval examples of `task` (built with both
  encoder dropouts 0): a batch that carries the encoder's outputs
  (`task.encoder_outputs`) gives the loss, the eval metric sums and the
  eval outputs of the plain batch, and traces no encoder matrix product."""
  train = {k: v[:n] for k, v in task.train_features.items()}
  params = task.init_params(jax.random.PRNGKey(0), train)
  rng = jax.random.PRNGKey(1)
  state = task.init_loss_state()

  def loss(batch):
    return task.train_loss(params, batch, rng, state)[0]

  cached = dict(train, **task.encoder_outputs(params, train))
  assert dots(loss, cached) < dots(loss, train)
  np.testing.assert_allclose(loss(cached), loss(train), rtol=1e-5, atol=1e-6)
  ev = {k: v[:n] for k, v in task.eval_features.items()}
  ev_cached = dict(ev, **task.encoder_outputs(params, ev))
  got, want = task.eval_step(params, ev_cached), task.eval_step(params, ev)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(a, np.float64),
                               np.asarray(b, np.float64), rtol=1e-5,
                               atol=1e-5)
