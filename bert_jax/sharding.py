"""Device mesh, parameter/batch shardings, and global batches from host data.

One code path from one CPU to a multi-host pod: the mesh has two axes,
`data` (pure data parallelism) and `fsdp` (data parallelism whose members also
shard parameters and optimizer state). The batch is split over both axes;
with `fsdp > 1` every parameter is split along its largest dimension that the
`fsdp` size divides (big_vision's rule), so memory per device falls with the
number of devices. The jitted step gets these shardings and XLA inserts the
collectives.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

BATCH_AXES = ('data', 'fsdp')
STRATEGIES = ('dp', 'fsdp')


def make_mesh(mesh_config: Mapping[str, int] | None = None) -> Mesh:
  """Mesh over all devices; `mesh_config` = {'data': -1, 'fsdp': 1}.

  -1 takes the devices that the other axis leaves. The product must equal the
  device count.
  """
  cfg = dict(mesh_config or {'data': -1, 'fsdp': 1})
  unknown = set(cfg) - set(BATCH_AXES)
  if unknown:
    raise ValueError(f'config.mesh: unknown axes {sorted(unknown)}; '
                     f'known: {BATCH_AXES}')
  n = jax.device_count()
  sizes = [int(cfg.get(a, 1)) for a in BATCH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError('config.mesh: at most one axis may be -1')
  if -1 in sizes:
    known = int(np.prod([s for s in sizes if s != -1]))
    if n % known:
      raise ValueError(f'config.mesh: {dict(zip(BATCH_AXES, sizes))} does not '
                       f'divide the {n} devices')
    sizes[sizes.index(-1)] = n // known
  if int(np.prod(sizes)) != n or min(sizes) < 1:
    raise ValueError(f'config.mesh: {dict(zip(BATCH_AXES, sizes))} needs '
                     f'{int(np.prod(sizes))} devices, there are {n}')
  devices = np.asarray(jax.devices()).reshape(sizes)
  return Mesh(devices, BATCH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over all mesh axes."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _fsdp_spec(shape: tuple[int, ...], fsdp: int, min_size: int) -> P:
  if fsdp == 1 or not shape or int(np.prod(shape)) < min_size:
    return P()
  for axis in np.argsort(shape)[::-1]:   # largest dimension first
    if shape[axis] % fsdp == 0:
      spec = [None] * len(shape)
      spec[axis] = 'fsdp'
      return P(*spec)
  return P()


def state_shardings(abstract_state: Any, mesh: Mesh, strategy: str = 'dp',
                    min_fsdp_size: int = 2 ** 12) -> Any:
  """Shardings for a pytree of arrays (TrainState of ShapeDtypeStructs).

  strategy 'dp': everything replicated. 'fsdp': every array of at least
  `min_fsdp_size` elements split over the `fsdp` axis along its largest
  divisible dimension (optimizer moments follow their parameters because they
  have the same shapes); scalars and small arrays stay replicated.
  """
  check_strategy(strategy)
  fsdp = mesh.shape['fsdp'] if strategy == 'fsdp' else 1
  return jax.tree_util.tree_map(
      lambda x: NamedSharding(mesh, _fsdp_spec(tuple(x.shape), fsdp,
                                               min_fsdp_size)),
      abstract_state)


def check_strategy(strategy: str) -> None:
  """config.sharding must name a strategy (checked before any tracing)."""
  if strategy not in STRATEGIES:
    raise ValueError(f'config.sharding: unknown strategy {strategy!r}; '
                     f'known: {STRATEGIES}')


def check_batch_size(global_batch_size: int, mesh: Mesh,
                     key: str = 'config.batch_size') -> None:
  n = mesh.size
  if global_batch_size % n:
    raise ValueError(f'{key}={global_batch_size} is not divisible by the '
                     f'{n} devices of the mesh {dict(mesh.shape)}')
  if global_batch_size % jax.process_count():
    raise ValueError(f'{key}={global_batch_size} is not divisible by the '
                     f'{jax.process_count()} processes')


def local_batch_size(global_batch_size: int) -> int:
  """This host's share of the global batch."""
  return global_batch_size // jax.process_count()


def make_global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh
                      ) -> dict[str, jax.Array]:
  """Per-host numpy batch [local_B, ...] -> global jax arrays [global_B, ...]."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}
