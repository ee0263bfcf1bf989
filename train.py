"""Trains A2P.

    python train.py --config a2p_jax/configs/synthetic_tiny.py --workdir /tmp/a2p_tiny
    python train.py --config a2p_jax/configs/a2p_interhand26m.py --workdir DIR \
        --config.data.root=/data/InterHand2.6M --config.batch_size=96

Resumes from the newest complete checkpoint in --workdir. Multi-host (TPU pod
slices, multi-node GPU): run the same command on every host with
--distributed, which calls jax.distributed.initialize() first (the cluster
is detected on Cloud TPU, SLURM, Open MPI and Kubernetes; elsewhere add
--coordinator=HOST:PORT --num_processes=N --process_id=I). See docs/manual.md.
"""

import re
import sys

from absl import app, flags
from ml_collections import config_flags

config_flags.DEFINE_config_file('config', None, 'config file', lock_config=True)
flags.DEFINE_string('workdir', None, 'checkpoints, TensorBoard events, generated data')
flags.DEFINE_bool('distributed', False, 'call jax.distributed.initialize() (multi-host)')
flags.DEFINE_string('coordinator', None, 'with --distributed: HOST:PORT of process 0 '
                    '(default: detected from the cluster)')
flags.DEFINE_integer('num_processes', None, 'with --distributed: number of processes')
flags.DEFINE_integer('process_id', None, 'with --distributed: this process, 0..N-1')
flags.mark_flags_as_required(['config', 'workdir'])
FLAGS = flags.FLAGS


def parse_flags(argv):
  """absl's parser; a bad flag or a --config.* override naming a field the
  config does not have is a one-line usage error naming the flag (exit 2),
  not a traceback."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    sys.stderr.write(f'train.py: error: {e}\n')
    sys.exit(2)
  except (AttributeError, KeyError) as e:
    while isinstance(e, BaseException) and e.args:  # ml_collections nests the KeyError
      e = e.args[0]
    msg = ' '.join(str(e).split())
    found = re.search(r"'([A-Za-z_0-9]+)'", msg)
    key = found.group(1) if found else ''
    hint = re.search(r'Did you mean .*', msg)
    bad = [a for a in argv[1:] if a.startswith('--config.') and key and key in a]
    sys.stderr.write(f'train.py: error: {bad[0].split("=")[0] if bad else "--config.*"}: '
                     f'the config has no field {key!r}'
                     f'{". " + hint.group(0) if hint else ""}\n')
    sys.exit(2)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if FLAGS.distributed:
    from a2p_jax.runtime.sharding import initialize_distributed
    initialize_distributed(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id)
  if FLAGS.config.get('stage', 'stage1') == 'stage2':
    from a2p_jax.train.stage2 import train_and_evaluate
  else:
    from a2p_jax.train.stage1 import train_and_evaluate
  train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
