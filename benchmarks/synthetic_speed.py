"""Throughput of the synthetic data generator (images/s, end to end: sampling,
MANO, placement, penetration volumes, rendering, JPEG/npz/JSON writing).

    .venv/bin/python benchmarks/synthetic_speed.py [--frames 128] [--workers 2]

Each configuration is run once untimed on a few frames first, so jit/numba
compilation is not counted (it is reported separately).
"""

import argparse
import os
import platform
import shutil
import tempfile
import time

from a2p_jax.data import synthetic


def run(frames, cameras, workers, pen, size, seed=0):
  out = tempfile.mkdtemp(prefix='synthetic_speed_')
  try:
    opts = synthetic.Options(num_frames=frames, seed=seed, num_cameras=cameras,
                             image_size=size, penetrating_fraction=pen, workers=workers)
    return synthetic.generate(out, opts, progress=False)
  finally:
    shutil.rmtree(out, ignore_errors=True)


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--frames', type=int, default=128)
  p.add_argument('--workers', type=int, default=2)
  args = p.parse_args()
  t = time.perf_counter()
  # Warm-up: compiles MANO at the chunk size, the volume at a few pad sizes
  # and loads the numba cache.
  run(synthetic.Options.chunk_frames, 2, args.workers, 0.25, (512, 334), seed=1)
  warm = time.perf_counter() - t
  print(f'machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; '
        f'warm-up (compilation) {warm:.1f} s')
  print(f'| frames | cameras | image H x W | penetrating | workers | images | s | images/s |')
  print('|---|---|---|---|---|---|---|---|')
  for cameras, pen, size in ((4, 0.1, (512, 334)), (2, 0.1, (512, 334)),
                             (4, 0.5, (512, 334)), (4, 0.1, (256, 256))):
    s = run(args.frames, cameras, args.workers, pen, size)
    print(f'| {args.frames} | {cameras} | {size[0]} x {size[1]} | {pen} | {args.workers} | '
          f'{s["images"]} | {s["seconds"]:.1f} | {s["images_per_second"]:.1f} |', flush=True)


if __name__ == '__main__':
  main()
