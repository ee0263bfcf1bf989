"""Stage-1 training of the tiny config as a multi-host job on one machine,
and its single-process twin (tests/test_multihost.py runs both).

worker: process PROCESS_ID of NUM_PROCESSES, joined with
jax.distributed.initialize over 127.0.0.1 (CPU collectives over gloo); runs
the real `stage1.train_and_evaluate` on one shared WORKDIR, each process
reading its own shard of the data.
reference: one process holding as many devices as all the workers
together; `input.train_dataset` is replaced by the workers' streams zipped
and concatenated in process order, so each global batch is exactly the one
the workers assembled with `jax.make_array_from_process_local_data`.

Both save the final train state (model and optimizer, as this process sees
it) to OUT.npz and print one JSON line.

    XLA_FLAGS=--xla_force_host_platform_device_count=2 python tests/multihost_probe.py \\
        worker SPEC.json PROCESS_ID        # once per process
    XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/multihost_probe.py \\
        reference SPEC.json

SPEC.json: {"root", "priors" (synthetic set and its prior store), "steps",
"num_processes", "coordinator" ("127.0.0.1:PORT"; workers), "workdir"
(shared by the workers), "out" (workers append "_<process id>")}.
"""

import json
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def config_for(spec):
  from a2p_jax.configs import synthetic_tiny
  c = synthetic_tiny.get_config('test')
  c.data.root = spec['root']
  c.data.priors = spec['priors']
  c.num_train_steps = int(spec['steps'])
  c.checkpoint_every = 2
  c.log_every = 1
  c.image_every = 3  # predictions drawn from the global state (process 0 writes them)
  return c


def zip_process_streams(num_processes: int):
  """Make input.train_dataset return every process's stream, concatenated
  per batch in process order (= device order of the global batch)."""
  import grain
  from a2p_jax.train import input as input_lib
  own = input_lib.train_dataset

  def zipped(config, src, models, *, local_batch, priors=None, **kw):
    parts = [own(config, src, models, local_batch=local_batch // num_processes, priors=priors,
                 process_index=p, process_count=num_processes, **kw)
             for p in range(num_processes)]
    return grain.experimental.ZipIterDataset(parts).map(
        lambda bs: {k: np.concatenate([b[k] for b in bs]) for k in bs[0]})

  input_lib.train_dataset = zipped


def dump(state, path):
  """This process's copy of every leaf (the state is replicated: fsdp=1)."""
  from a2p_jax.runtime import checkpoint as ckpt_lib
  flat = ckpt_lib.flatten(state)
  np.savez(path, **{k: np.asarray(v.addressable_data(0)) if hasattr(v, 'addressable_data')
                    else np.asarray(v) for k, v in flat.items()})


def main(mode, spec_path, process_id=None):
  with open(spec_path) as f:
    spec = json.load(f)
  out = spec['out']
  if mode == 'worker':
    from a2p_jax.runtime.sharding import initialize_distributed  # what train.py --distributed calls
    initialize_distributed(spec['coordinator'], int(spec['num_processes']), int(process_id))
    out = f'{out}_{process_id}'
  elif mode == 'reference':
    zip_process_streams(int(spec['num_processes']))
  else:
    raise SystemExit(f'mode must be worker or reference, got {mode!r}')
  from a2p_jax.train import stage1
  got = stage1.train_and_evaluate(config_for(spec), spec['workdir'])
  dump(got['state'], out + '.npz')
  print(json.dumps({'process_index': jax.process_index(),
                    'process_count': jax.process_count(),
                    'devices': jax.device_count(), 'local_devices': jax.local_device_count(),
                    'step': got['step'], 'traces': got['train_step_traces'],
                    'out': out + '.npz'}), flush=True)
  if mode == 'worker':
    jax.distributed.shutdown()


if __name__ == '__main__':
  main(*sys.argv[1:])
