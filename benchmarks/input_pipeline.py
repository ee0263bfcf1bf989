"""Input pipeline throughput: synthetic set -> (reader | TFDS array_record) -> grain.

    python benchmarks/input_pipeline.py [--frames 48] [--input 256] [--batch 16]

Generates a small synthetic two-hand set in a temporary folder, builds its
TFDS array_record version, then times training batches (augmentation on,
JPEG decode included) from both sources with 0 and 2 grain worker
processes. Prints examples/s per configuration (median over batches after
a warm-up batch).
"""

import argparse
import os
import platform
import tempfile
import time

from a2p_jax.data import pipeline, synthetic, tfds_builders
from a2p_jax.data.hands import load_hand_models
from a2p_jax.data.interhand26m import InterHand26M
from timing import median_s


def _rate(ds, batch, num_batches):
  it = iter(ds)
  # The warm-up batch pays for worker start and the first decode.
  return batch / median_s(lambda: next(it), num_batches)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  ap.add_argument('--frames', type=int, default=48)
  ap.add_argument('--input', type=int, default=256)
  ap.add_argument('--batch', type=int, default=16)
  ap.add_argument('--batches', type=int, default=10)
  args = ap.parse_args(argv)
  models = load_hand_models()
  cfg = pipeline.AugmentConfig(input_hw=(args.input, args.input))
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    root = os.path.join(tmp, 'synthetic')
    synthetic.generate(root, synthetic.Options(num_frames=args.frames, seed=0))
    reader = InterHand26M(root, 'train')
    t0 = time.perf_counter()
    tfds_builders.build('synthetic', root, os.path.join(tmp, 'tfds'))
    t_build = time.perf_counter() - t0
    tfds_source = tfds_builders.data_source('synthetic', 'train', os.path.join(tmp, 'tfds'))
    for name, source in (('reader (JPEG files)', reader), ('TFDS array_record', tfds_source)):
      for workers in (0, 2):
        ds = pipeline.make_dataset(source, cfg=cfg, models=models, batch_size=args.batch,
                                   seed=0, training=True, num_workers=workers)
        rows.append((name, workers, _rate(ds, args.batch, args.batches)))
  print(f'# input pipeline ({platform.machine()}, {os.cpu_count()} cores): synthetic set, '
        f'{len(reader)} train examples, crop {args.input}x{args.input}, batch {args.batch}, '
        f'augmentation on; TFDS build {t_build:.1f} s')
  print('| source | grain workers | examples/s |')
  print('|---|---:|---:|')
  for name, workers, rate in rows:
    print(f'| {name} | {workers} | {rate:.1f} |')


if __name__ == '__main__':
  main()
