"""Trains A2P.

    python train.py --config configs/synthetic_tiny.py --workdir /tmp/a2p_tiny
    python train.py --config configs/a2p_interhand26m.py --workdir DIR \
        --config.data.root=/data/InterHand2.6M --config.batch_size=96

Resumes from the newest complete checkpoint in --workdir. Multi-host (TPU pod
slices, multi-node GPU): run the same command on every host with
--distributed, which calls jax.distributed.initialize() first (the cluster
is detected on Cloud TPU, SLURM, Open MPI and Kubernetes; elsewhere add
--coordinator=HOST:PORT --num_processes=N --process_id=I). See the README.
"""

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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if FLAGS.distributed:
    from a2p_jax.train.sharding import initialize_distributed
    initialize_distributed(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id)
  if FLAGS.config.get('stage', 'stage1') == 'stage2':
    from a2p_jax.train.stage2 import train_and_evaluate
  else:
    from a2p_jax.train.stage1 import train_and_evaluate
  train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main)
