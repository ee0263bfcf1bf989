"""Throughput of the synthetic data generator (images/s, end to end: sampling,
MANO, placement, penetration volumes, rendering, JPEG/npz/JSON writing).

    .venv/bin/python benchmarks/synthetic_speed.py [--frames 128] [--workers 2]

Each configuration is run once untimed on a few frames first, so jit/numba
compilation is not counted (it is reported separately).
"""

import argparse
import glob
import json
import os
import platform
import shutil
import tempfile
import time

import numpy as np

from a2p_jax.data import synthetic


def stats(root):
  """What the frames look like: penetration volumes, hand-box overlap and
  keypoint visibility of the two-hand images."""
  vols, overlap, vis = [], [], []
  for meta_path in glob.glob(os.path.join(root, 'annotations', '*', 'synthetic_*_meta.json')):
    for frames in json.load(open(meta_path)).values():
      vols += [m['penetration_volume_cm3'] for m in frames.values() if m['penetrating']]
  for npz in glob.glob(os.path.join(root, 'priors', '*', '*', '*interacting', '*', '*.npz')):
    seg = np.load(npz)['segmentation']
    boxes = []
    for lo, hi in ((1, 16), (17, 32)):
      ii, jj = np.nonzero((seg >= lo) & (seg <= hi))
      boxes.append(None if ii.size == 0 else (jj.min(), ii.min(), jj.max(), ii.max()))
    if None not in boxes:
      a, b = boxes
      overlap.append(min(a[2], b[2]) >= max(a[0], b[0]) and min(a[3], b[3]) >= max(a[1], b[1]))
    vis.append(np.load(npz)['keypoint_visible'].mean())
  return dict(pen_vol_median=float(np.median(vols)) if vols else 0.0,
              pen_vol_range=(float(np.min(vols)), float(np.max(vols))) if vols else (0, 0),
              box_overlap=float(np.mean(overlap)), visible=float(np.mean(vis)))


def run(frames, cameras, workers, pen, size, seed=0, with_stats=False):
  out = tempfile.mkdtemp(prefix='synthetic_speed_')
  try:
    opts = synthetic.Options(num_frames=frames, seed=seed, num_cameras=cameras,
                             image_size=size, penetrating_fraction=pen, workers=workers)
    summary = synthetic.generate(out, opts, progress=False)
    if with_stats:
      summary['stats'] = stats(out)
    return summary
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
  first = None
  for cameras, pen, size in ((4, 0.1, (512, 334)), (2, 0.1, (512, 334)),
                             (4, 0.5, (512, 334)), (4, 0.1, (256, 256))):
    s = run(args.frames, cameras, args.workers, pen, size, with_stats=first is None)
    first = first or s
    print(f'| {args.frames} | {cameras} | {size[0]} x {size[1]} | {pen} | {args.workers} | '
          f'{s["images"]} | {s["seconds"]:.1f} | {s["images_per_second"]:.1f} |', flush=True)
  st = first['stats']
  print(f'\nfirst row: penetrating frames\' volume median {st["pen_vol_median"]:.2f} cm^3 '
        f'(range {st["pen_vol_range"][0]:.2f}-{st["pen_vol_range"][1]:.2f}); two-hand images '
        f'whose hand boxes overlap {100 * st["box_overlap"]:.0f}%; '
        f'visible keypoints {100 * st["visible"]:.0f}%')


if __name__ == '__main__':
  main()
