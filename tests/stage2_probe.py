"""Stage-2 training on 8 (fake) devices: runs train_and_evaluate of
a2p_jax/configs/diffusion_tiny.py:test for STEPS steps on the pairs file under each
of two layouts, 8-way data parallel and data x FSDP (2 x 4), and prints one
JSON list: per layout the last loss, the train-step trace count and
checksums of the trained parameters.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 \
        python tests/stage2_probe.py PAIRS.npz WORKDIR STEPS
"""

import json
import os
import sys

import jax
from flax import nnx


def run(pairs, workdir, steps, fsdp):
  from a2p_jax.train import stage2
  from tests.test_diffusion_train import _config
  from tests.train_step_probe import param_checksums
  c = _config(pairs, steps)
  c.mesh.fsdp = fsdp
  out = stage2.train_and_evaluate(c, workdir)
  graphdef = stage2.create_train_state(c, stage2.shard_lib.make_mesh(1))[0]
  return dict(param_checksums(nnx.merge(graphdef, out['state'])[0]),
              devices=jax.device_count(), fsdp=fsdp,
              loss=float(out['history'][-1]['loss']), traces=out['train_step_traces'])


def main(pairs, workdir, steps):
  sys.path.insert(0, os.getcwd())
  if jax.device_count() < 8:
    raise SystemExit(f'needs 8 devices, got {jax.device_count()} (set XLA_FLAGS)')
  print(json.dumps([run(pairs, os.path.join(workdir, f'fsdp{f}'), steps, f) for f in (1, 4)]))


if __name__ == '__main__':
  main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
