"""Device mesh, parameter/batch shardings and global batches.

One mesh over all devices of all processes with two axes: 'data' (batch
split) and 'fsdp' (parameters split along their largest divisible axis,
batch split over it too). config.mesh.fsdp = 1 is plain data parallelism
with replicated parameters; the same code runs on 1 CPU, 8 fake CPU
devices, a GPU node or a TPU pod slice.
"""

from typing import Any, Optional

import jax
import numpy as np
from jax._src import distributed  # the coordination service (no public handle)
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

BATCH_AXES = ('data', 'fsdp')


def initialize_distributed(coordinator: Optional[str] = None,
                           num_processes: Optional[int] = None,
                           process_id: Optional[int] = None) -> None:
  """`jax.distributed.initialize` for multi-host training, before any other
  JAX call. With no arguments the cluster is detected (Cloud TPU, SLURM,
  Open MPI, Kubernetes); elsewhere give all three (coordinator: host:port
  of process 0). CPU hosts exchange collectives over gloo."""
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                             process_id=process_id)


_key_counts = {}


def _coordination(name: str):
  """(coordination-service client, a fresh key for `name`): keys are
  single-use, so each call numbers them (every process calls in the same
  order, so the numbers agree)."""
  n = _key_counts[name] = _key_counts.get(name, 0) + 1
  return distributed.global_state.client, f'a2p_{name}_{n}'


def barrier(name: str, timeout_s: int = 7200) -> None:
  """Every process waits here for the others (no-op with one process).
  Through JAX's coordination service rather than a device collective:
  CPU (gloo) collectives give up on a process more than 30 s late, and
  process 0 may spend minutes writing data the others then read."""
  if jax.process_count() == 1:
    return
  client, key = _coordination(name)
  client.wait_at_barrier(key, timeout_s * 1000)


def all_processes(name: str, ok: bool, timeout_s: int = 7200) -> bool:
  """True when `ok` holds on every process (one process: `ok`). Each
  process posts its flag to the coordination service's key-value store and
  reads everyone's, so all return the same answer (no device collective)."""
  if jax.process_count() == 1:
    return bool(ok)
  client, key = _coordination(name)
  client.key_value_set(f'{key}/{jax.process_index()}', '1' if ok else '0')
  return all(client.blocking_key_value_get(f'{key}/{i}', timeout_s * 1000) == '1'
             for i in range(jax.process_count()))


def make_mesh(fsdp: int = 1, devices=None) -> Mesh:
  """Mesh ('data', 'fsdp') over `devices` (default jax.devices()); fsdp
  must divide the count."""
  devices = jax.devices() if devices is None else list(devices)
  n = len(devices)
  if fsdp < 1 or n % fsdp:
    raise ValueError(f'config.mesh.fsdp={fsdp} must divide the device count {n}')
  return Mesh(np.asarray(devices).reshape(n // fsdp, fsdp), BATCH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over every device."""
  return NamedSharding(mesh, P(BATCH_AXES))


def _param_spec(shape, fsdp: int, min_size: int) -> P:
  if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  # Largest axis divisible by the fsdp size; ties go to the last axis.
  best = None
  for ax in range(len(shape)):
    if shape[ax] % fsdp == 0 and (best is None or shape[ax] >= shape[best]):
      best = ax
  if best is None:
    return P()
  spec = [None] * len(shape)
  spec[best] = 'fsdp'
  return P(*spec)


def state_shardings(mesh: Mesh, state: Any, *, min_fsdp_size: int = 2 ** 14) -> Any:
  """NamedShardings for a pytree of arrays: replicated, or FSDP-split for
  leaves of at least `min_fsdp_size` elements when the mesh has fsdp > 1."""
  fsdp = mesh.shape['fsdp']
  return jax.tree.map(
      lambda x: NamedSharding(mesh, _param_spec(np.shape(x), fsdp, min_fsdp_size)), state)


def put(tree: Any, shardings: Any) -> Any:
  """`jax.device_put` that also places onto meshes spanning several
  processes (device_put refuses shardings over other processes' devices):
  every process holds the same values (same seed, same files) and fills its
  own devices. `shardings`: a tree like `tree`, or one sharding for all."""
  if isinstance(shardings, jax.sharding.Sharding):
    shardings = jax.tree.map(lambda _: shardings, tree)

  def one(x, s):
    if s.is_fully_addressable:
      return jax.device_put(x, s)
    x = x if isinstance(x, jax.Array) else np.asarray(x)
    return jax.make_array_from_callback(x.shape, s, lambda index: x[index])

  return jax.tree.map(one, tree, shardings)


def global_batch(local: dict, sharding: NamedSharding) -> dict:
  """This process's batch (numpy, leading axis = local batch) -> global
  jax.Arrays split over every device of every process."""
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local)


def check_batch_size(global_batch_size: int, mesh: Mesh) -> int:
  """Per-process batch size; the global batch must split evenly."""
  n_dev, n_proc = mesh.size, jax.process_count()
  if int(global_batch_size) != global_batch_size or global_batch_size <= 0:
    raise ValueError(f'config.batch_size={global_batch_size} must be a positive integer')
  if global_batch_size % n_dev:
    raise ValueError(f'config.batch_size={global_batch_size} must be a multiple of the '
                     f'device count {n_dev}')
  return global_batch_size // n_proc
