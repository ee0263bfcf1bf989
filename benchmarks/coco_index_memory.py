"""COCO-WholeBody index: peak memory and time of the first (streamed) and the
cached (memory-mapped) run on a realistic-size annotation file.

    python benchmarks/coco_index_memory.py [--annotations 200000] [--json-load]

Writes, in a temporary folder, a coco_wholebody_train_v1.0.json with full
COCO-WholeBody records (person polygon, body/foot/face/hand keypoints,
boxes; ~4.5 KB each like the real ~1.4 GB file) and a matching
MSCOCO_train_MANO_NeuralAnnot.json, then builds the reader's index in fresh
subprocesses: the first run streams the files and writes the .npy cache,
the second memory-maps it. Each subprocess reports its peak RSS
(resource.getrusage ru_maxrss) after imports and at the end, and the wall
time of `coco_wholebody.load_index`. --json-load also measures `json.load`
of the same file (what pycocotools' COCO() does), for comparison.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

_POOL = 64      # distinct encodings of each large field, reused across records


def _nums(rng, n, lo, hi):
  return ', '.join(f'{v:.2f}' for v in rng.uniform(lo, hi, n))


def _kpts(rng, n, valid=True):
  if not valid:
    return ', '.join(['0.0'] * (3 * n))
  xy = rng.uniform(0, 600, (n, 2))
  v = rng.choice(['2', '1', '0.1234567'], n)
  return ', '.join(f'{x:.5f}, {y:.5f}, {s}' for (x, y), s in zip(xy, v))


def _box(rng):
  x, y = rng.uniform(0, 500, 2)
  w, h = rng.uniform(10, 120, 2)
  return f'{x:.2f}, {y:.2f}, {w:.2f}, {h:.2f}'


def write_files(folder, n_annotations, seed=0):
  """Writes the two annotation files; returns {'kept', 'fits', 'sizes'}."""
  rng = np.random.default_rng(seed)
  ann_dir = os.path.join(folder, 'annotations')
  os.makedirs(ann_dir, exist_ok=True)
  pools = {k: [f(rng) for _ in range(_POOL)] for k, f in (
      ('seg', lambda r: _nums(r, 60, 0, 600)), ('body', lambda r: _kpts(r, 17)),
      ('foot', lambda r: _kpts(r, 6)), ('face', lambda r: _kpts(r, 68)),
      ('hand', lambda r: _kpts(r, 21)), ('box', _box))}
  fit_pool = [json.dumps({'mano_param': {'pose': rng.normal(0, 0.3, 48).tolist(),
                                         'shape': rng.normal(0, 1, 10).tolist(),
                                         'trans': rng.normal(0, 0.1, 3).tolist()},
                          'cam_param': {'focal': rng.uniform(500, 3000, 2).tolist(),
                                        'princpt': rng.uniform(100, 500, 2).tolist()}})
              for _ in range(_POOL)]
  n_images = max(1, int(n_annotations * 0.45))
  zero_hand, zero_box = _kpts(rng, 21, False), '0.0, 0.0, 0.0, 0.0'
  path = os.path.join(ann_dir, 'coco_wholebody_train_v1.0.json')
  mano_path = os.path.join(ann_dir, 'MSCOCO_train_MANO_NeuralAnnot.json')
  kept = fits = 0
  with open(path, 'w') as fh, open(mano_path, 'w') as mh:
    fh.write('{"info": {"description": "COCO-WholeBody", "version": "1.0"}, '
             '"licenses": [], "images": [')
    for i in range(n_images):
      fh.write(('' if i == 0 else ', ') + json.dumps({
          'license': 4, 'file_name': f'{i:012d}.jpg', 'coco_url': 'http://x', 'height': 480,
          'width': 640, 'date_captured': '2013-11-19 21:22:42', 'flickr_url': 'http://y',
          'id': i}))
    fh.write('], "annotations": [')
    mh.write('{')
    draws = rng.random((n_annotations, 4))
    picks = rng.integers(0, _POOL, (n_annotations, 8))
    for i in range(n_annotations):
      d, p = draws[i], picks[i]
      crowd = int(d[0] < 0.01)
      num_kp = 0 if d[1] < 0.35 else 17
      right, left = d[2] < 0.5, d[3] < 0.4
      rec = (f'{{"segmentation": [[{pools["seg"][p[0]]}]], "num_keypoints": {num_kp}, '
             f'"area": 12345.6, "iscrowd": {crowd}, "keypoints": [{pools["body"][p[1]]}], '
             f'"image_id": {i % n_images}, "bbox": [100.5, 50.25, 200.0, 300.0], '
             f'"category_id": 1, "id": {1000000 + i}, "face_box": [{pools["box"][p[2]]}], '
             f'"lefthand_box": [{pools["box"][p[3]] if left else zero_box}], '
             f'"righthand_box": [{pools["box"][p[4]] if right else zero_box}], '
             f'"lefthand_kpts": [{pools["hand"][p[5]] if left else zero_hand}], '
             f'"righthand_kpts": [{pools["hand"][p[6]] if right else zero_hand}], '
             f'"face_kpts": [{pools["face"][p[7]]}], "face_valid": true, '
             f'"lefthand_valid": {str(left).lower()}, '
             f'"righthand_valid": {str(right).lower()}, '
             f'"foot_valid": true, "foot_kpts": [{pools["foot"][p[0]]}]}}')
      fh.write(('' if i == 0 else ', ') + rec)
      if not crowd and num_kp and (right or left):
        kept += 1
        entry = {s: fit_pool[p[k]] if ok else 'null'
                 for k, (s, ok) in enumerate((('right', right), ('left', left)))}
        mh.write(('' if kept == 1 else ', ') + f'"{1000000 + i}": {{"right": '
                 f'{entry["right"]}, "left": {entry["left"]}}}')
        fits += int(right) + int(left)
    fh.write('], "categories": [{"supercategory": "person", "id": 1, "name": "person"}]}')
    mh.write('}')
  return {'kept': kept, 'fits': fits,
          'sizes': {os.path.basename(q): os.path.getsize(q) for q in (path, mano_path)}}


def _rss_mb():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # Linux: KB


def child(mode, root, cache_dir):
  """Runs in a subprocess: one measurement, printed as a JSON line."""
  if mode == 'json_load':
    base = _rss_mb()
    t0 = time.perf_counter()
    with open(os.path.join(root, 'annotations', 'coco_wholebody_train_v1.0.json')) as fh:
      n = len(json.load(fh)['annotations'])
    out = dict(seconds=time.perf_counter() - t0, rows=n)
  else:
    from a2p_jax.data import coco_wholebody
    base = _rss_mb()
    t0 = time.perf_counter()
    index = coco_wholebody.load_index(root, 'train', cache=True, cache_dir=cache_dir,
                                      progress=False)
    a = index['arrays']
    # Touch what a training epoch reads: every keypoint and fit once.
    checksum = float(np.asarray(a['annot_joints_img']).sum() + np.asarray(a['fit_params']).sum())
    out = dict(seconds=time.perf_counter() - t0, rows=len(a['annot_id']),
               fits=len(a['fit_params']), checksum=checksum,
               mmap=type(a['annot_joints_img']).__name__ == 'memmap')
  out.update(rss_after_import_mb=base, rss_peak_mb=_rss_mb())
  print(json.dumps(out))


def _run(mode, root, cache_dir):
  here = os.path.dirname(os.path.abspath(__file__))
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             PYTHONPATH=os.pathsep.join([os.path.dirname(here),
                                         os.environ.get('PYTHONPATH', '')]))
  res = subprocess.run([sys.executable, os.path.abspath(__file__), '--child', mode, root,
                        cache_dir], capture_output=True, text=True, env=env, check=False)
  if res.returncode:
    raise RuntimeError(f'{mode} run failed:\n{res.stderr[-3000:]}')
  return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  ap.add_argument('--annotations', type=int, default=200000)
  ap.add_argument('--json-load', action='store_true',
                  help='also measure json.load of the file (needs several GB at full size)')
  ap.add_argument('--child', nargs=3, metavar=('MODE', 'ROOT', 'CACHE_DIR'),
                  help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  if args.child:
    child(*args.child)
    return
  with tempfile.TemporaryDirectory() as tmp:
    t0 = time.perf_counter()
    info = write_files(tmp, args.annotations)
    gen_s = time.perf_counter() - t0
    cache_dir = os.path.join(tmp, 'cache')
    runs = [('first (stream + write cache)', _run('build', tmp, cache_dir)),
            ('cached (memory-mapped)', _run('build', tmp, cache_dir))]
    if args.json_load:
      runs.append(('json.load (for comparison)', _run('json_load', tmp, cache_dir)))
    cache_mb = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(cache_dir)
                   for f in fs) / 2 ** 20
  sizes = ', '.join(f'{k} {v / 2 ** 20:.0f} MB' for k, v in info['sizes'].items())
  print(f'{platform.node()} ({os.cpu_count()} CPUs), {args.annotations} annotations '
        f'({info["kept"]} kept, {info["fits"]} fitted hands); {sizes}; written in '
        f'{gen_s:.0f} s; index cache {cache_mb:.0f} MB')
  print(f'{"run":<30} {"time s":>8} {"RSS after import MB":>20} {"peak RSS MB":>12} '
        f'{"peak - import MB":>17}')
  for name, r in runs:
    print(f'{name:<30} {r["seconds"]:>8.2f} {r["rss_after_import_mb"]:>20.0f} '
          f'{r["rss_peak_mb"]:>12.0f} {r["rss_peak_mb"] - r["rss_after_import_mb"]:>17.0f}')


if __name__ == '__main__':
  main()
