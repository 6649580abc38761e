"""Run checkpoints with orbax: train state + data-iterator position.

A run started on a workdir that holds checkpoints resumes from the newest
complete one (orbax writes to a temporary directory and renames it only when
the save is complete, so a crash mid-save never leaves a loadable partial
checkpoint). Restoring takes the target shardings of the current mesh, so a
checkpoint saved on 8 devices restores on 1 or 4.

This module holds the orbax run state; `hf_weights.py` holds the HF/TF
weight conversion. The two share nothing.
"""

from __future__ import annotations

import os
import pathlib
import uuid
from typing import Any, Optional

from absl import logging
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp


class CheckpointSaveError(RuntimeError):
  """A checkpoint could not be written; names the path."""


@jax.jit
def _finite_on_device(tree: Any) -> jax.Array:
  """bool []: every float leaf of `tree` is finite, reduced on the devices.

  The result is a replicated scalar, so every host can read it even when
  the leaves are sharded across processes (FSDP on a pod), where copying a
  leaf to the host would fail: no host holds all of it.
  """
  leaves = [x for x in jax.tree_util.tree_leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.floating)]
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves] +
                           [jnp.array(True)]))


def check_writable(directory: pathlib.Path) -> None:
  """Creates `directory` and writes a probe file there, or raises CheckpointSaveError.

  The probe has a name no other writer uses: on a pod every host probes the
  same shared directory at the same moment, and with one common name a host
  could delete another's probe between its write and its unlink.
  """
  try:
    directory.mkdir(parents=True, exist_ok=True)
    probe = directory / f'.write_probe.{uuid.uuid4().hex}'
    probe.write_text('')
    probe.unlink()
  except OSError as e:
    raise CheckpointSaveError(
        f'checkpoint directory {directory} is not writable: {e}') from e


class RunCheckpointer:
  """Saves and restores `{'state': TrainState, 'data': iterator state}`."""

  def __init__(self, directory: str | os.PathLike, *, keep: int = 3,
               async_save: bool = True):
    self.directory = pathlib.Path(directory).absolute()
    check_writable(self.directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save,
            create=True))

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, data_state: dict[str, Any]) -> None:
    """Saves unless the state holds a non-finite value (then raises)."""
    # The train step never applies a step whose loss or gradient is
    # non-finite, but a finite update can still overflow a parameter.
    if not bool(_finite_on_device(state.params)):
      raise FloatingPointError(
          f'refusing to checkpoint step {step}: parameters hold NaN/Inf; the '
          f'last good checkpoint is step {self.latest_step()} in {self.directory}')
    try:
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          data=ocp.args.JsonSave(data_state)))
    except Exception as e:  # orbax wraps OSError in several types
      raise CheckpointSaveError(
          f'saving checkpoint step {step} to {self.directory} failed: {e}; '
          f'earlier checkpoints are intact (latest: {self.latest_step()})') from e

  def wait(self) -> None:
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # the background save's error, re-raised here
      raise CheckpointSaveError(
          f'asynchronous checkpoint save to {self.directory} failed: {e}; '
          f'earlier checkpoints are intact (latest: {self.latest_step()})'
      ) from e

  def restore(self, abstract_state: Any, step: Optional[int] = None
              ) -> tuple[Any, dict[str, Any], int]:
    """abstract_state: ShapeDtypeStructs with target shardings.

    Returns (state, data_state, step) of `step` or the newest checkpoint.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'no checkpoint in {self.directory}')
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=ocp.args.JsonRestore()))
    logging.info('restored checkpoint step %d from %s', step, self.directory)
    return restored['state'], dict(restored['data'] or {}), step

  def close(self) -> None:
    # The last save is asynchronous: a full disk shows up here, at the end of
    # a run, and must name the path like any other failed save.
    self.wait()
    self._manager.close()
