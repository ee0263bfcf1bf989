"""Two stage-1 train steps on a fixed global batch under several layouts, in
one process with 8 (fake) devices: 1 device, 8-way data parallel, and
data x FSDP (2 x 4). Prints one JSON list: per layout the loss and
checksums of the updated parameters.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 \
        python tests/train_step_probe.py BATCH.npz [PRIOR_CHANNELS]
"""

import json
import sys

import jax
import numpy as np
from flax import nnx

LAYOUTS = ((1, 1), (8, 1), (8, 4))  # (devices, fsdp)


def param_checksums(model) -> dict:
  """Sum and absolute sum (float64) of an nnx module's parameters."""
  leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]
  return {'param_sum': float(sum(x.sum() for x in leaves)),
          'param_abs': float(sum(np.abs(x).sum() for x in leaves))}


def run(n_devices: int, fsdp: int, local: dict, prior_channels: int) -> dict:
  from a2p_jax.data.hands import load_hand_models
  from a2p_jax.runtime import sharding
  from a2p_jax.train import stage1
  from a2p_jax.configs import synthetic_tiny
  config = synthetic_tiny.get_config('test')
  config.mesh.fsdp = fsdp
  mesh = sharding.make_mesh(fsdp, jax.devices()[:n_devices])
  graphdef, state, state_sharding, _ = stage1.create_train_state(config, prior_channels, 10, mesh)
  step, step_fn = stage1.jit_train_step(graphdef, config, mesh, state_sharding,
                                        with_priors=prior_channels > 1)
  batch = sharding.global_batch(local, sharding.batch_sharding(mesh))
  mano = jax.device_put(tuple(load_hand_models()),
                        jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  state, metrics = step(state, batch, mano, np.int32(0))
  state, metrics = step(state, batch, mano, np.int32(1))
  specs = sorted({str(s.spec) for s in jax.tree.leaves(state_sharding)})
  return {'devices': int(mesh.devices.size), 'fsdp': fsdp, 'loss': float(metrics['loss']),
          **param_checksums(nnx.merge(graphdef, state)[0]),
          'traces': step_fn.traces, 'specs': specs}


def main(batch_path: str, prior_channels: int):
  sys.path.insert(0, '.')
  if jax.device_count() < 8:
    raise SystemExit(f'needs 8 devices, got {jax.device_count()} (set XLA_FLAGS)')
  local = dict(np.load(batch_path))
  print(json.dumps([run(n, f, local, prior_channels) for n, f in LAYOUTS]))


if __name__ == '__main__':
  main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1)
