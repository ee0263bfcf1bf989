"""Precompute a teacher's prior maps into a store (resumable).

    python -m a2p_jax.teacher.precompute --teacher oracle --dataset synthetic \
        --root DIR --split train --out STORE [--grid 32 24] [--pca K]
    python -m a2p_jax.teacher.precompute --teacher sapiens --dataset interhand26m \
        --root /data/InterHand2.6M --split train --out /data/priors/sapiens_train \
        --mano_dir /data/mano --sapiens_dir /ckpt/sapiens_1b [--batch 8] [--device cuda]
        (or --sapiens_pose P --sapiens_seg S --sapiens_depth D)

Examples are cut, in source order, into shards of --shard_size; each shard is
written atomically with its id list (`store.write_shard`), so an interrupted
run continues where it stopped when rerun with the same arguments, and the
result is identical to an uninterrupted run (each example's maps depend only
on the example). A store made with other arguments is refused, never
overwritten. --pca K: per channel group, K uncentred principal components
fitted on --pca_samples examples spread over the source (store.fit_pca).
"""

import argparse
import json
import os
import sys
from typing import Callable, Optional

import numpy as np
from tqdm import tqdm

from a2p_jax import teacher as teacher_lib
from a2p_jax.data import open_source
from a2p_jax.teacher import store as store_lib
from a2p_jax.teacher.oracle import OracleTeacher
from a2p_jax.teacher.sapiens import SapiensTeacher

DEFAULT_SHARD_SIZE = 1024


def make_teacher(name: str, *, grid=teacher_lib.GRID, extend=teacher_lib.TEACHER_EXTEND,
                 sapiens_pose=None, sapiens_seg=None, sapiens_depth=None, sapiens_dir=None,
                 device=None):
  if name == 'oracle':
    return OracleTeacher(grid=grid, extend=extend)
  if name == 'sapiens':
    return SapiensTeacher(pose=sapiens_pose, seg=sapiens_seg, depth=sapiens_depth,
                          directory=sapiens_dir, grid=grid, extend=extend, device=device)
  raise ValueError(f'--teacher must be sapiens or oracle, got {name!r}')


def _examples(source, lo, hi):
  return [source[i] for i in range(lo, hi)]


def _run(teacher, source, indices, batch):
  out = []
  for b in range(0, len(indices), batch):
    exs = [source[int(i)] for i in indices[b:b + batch]]
    out += [(ex['annot_id'], *r) for ex, r in zip(exs, teacher(exs))]
  return out


def build_meta(teacher, grid, pca_k, source_info, num_examples, shard_size, basis=None,
               reduced_groups=None) -> dict:
  perm_p = teacher_lib.flip_permutation_matrix(teacher.flip_permutation)
  meta = {
      'format_version': store_lib.FORMAT_VERSION,
      'teacher': teacher.name, 'teacher_config': teacher.config(),
      'grid': list(grid), 'source': source_info,
      'num_examples': int(num_examples), 'shard_size': int(shard_size),
      'channel_names': list(teacher.channel_names),
  }
  if basis is None:
    meta.update(num_channels=teacher.num_channels, groups=teacher.groups,
                flip_matrix=perm_p.tolist(), pca=None)
  else:
    flip = basis.T @ perm_p @ basis
    flip[np.abs(flip) < 1e-9] = 0.0
    meta.update(num_channels=int(basis.shape[1]), groups=reduced_groups,
                flip_matrix=flip.tolist(),
                pca={'k': int(pca_k), 'basis': basis.tolist(), 'groups_full': teacher.groups,
                     'flip_matrix_full': perm_p.tolist()})
  return meta


def _same_run(a: dict, b: dict) -> bool:
  keys = ('format_version', 'teacher', 'teacher_config', 'grid', 'source', 'num_examples',
          'shard_size', 'channel_names')
  pa = (a.get('pca') or {}).get('k')
  pb = (b.get('pca') or {}).get('k')
  return all(json.loads(json.dumps(a.get(k))) == json.loads(json.dumps(b.get(k)))
             for k in keys) and pa == pb


def precompute(teacher, source, out: str, *, grid=teacher_lib.GRID, pca: int = 0,
               pca_samples: int = 256, batch: int = 8,
               shard_size: int = DEFAULT_SHARD_SIZE, source_info: Optional[dict] = None,
               progress: bool = True, callback: Optional[Callable[[int], None]] = None):
  """Writes (or completes) the store `out`; returns it opened.

  teacher: a teacher object (`OracleTeacher`, `SapiensTeacher`) or the name
  'oracle' (others need arguments: `make_teacher`). source: random-access
  examples with annot_id. callback(n) runs after each computed example (n
  computed so far in this run), e.g. to report or to interrupt in tests.
  """
  if isinstance(teacher, str):
    teacher = make_teacher(teacher, grid=grid)
  grid = tuple(int(v) for v in grid)
  if tuple(teacher.grid) != grid:
    raise ValueError(f'teacher grid {teacher.grid} != grid {grid}')
  n = len(source)
  if n == 0:
    raise ValueError('precompute: the source has no examples')
  if source_info is None:
    source_info = {'type': type(source).__name__,
                   'root': os.path.abspath(getattr(source, 'root', '') or ''),
                   'split': getattr(source, 'split', None)}
  source_info = json.loads(json.dumps(source_info))
  os.makedirs(out, exist_ok=True)
  meta_path = os.path.join(out, store_lib.META)
  want = build_meta(teacher, grid, pca, source_info, n, shard_size)
  if os.path.exists(meta_path):
    have = store_lib.read_meta(out)
    # The basis is fitted later; only the requested k is compared (0: no PCA).
    if not _same_run(have, dict(want, pca={'k': int(pca)} if pca else None)):
      diff = [k for k in want if k not in ('num_channels', 'groups', 'flip_matrix', 'pca')
              and json.loads(json.dumps(want[k])) != have.get(k)]
      raise ValueError(f'{out} holds a prior store made with other arguments (differs in '
                       f'{diff or ["pca"]}): delete it or choose another --out')
    meta = have
  else:
    if any(f.startswith('shard-') for f in os.listdir(out)):
      raise ValueError(f'{out} has shard files but no {store_lib.META}: not resumable; '
                       'delete it')
    meta = want
    if pca:
      idx = np.unique(np.linspace(0, n - 1, min(pca_samples, n)).round().astype(np.int64))
      recs = _run(teacher, source, idx, batch)
      samples = np.concatenate([m.reshape(-1, m.shape[-1]) for _, m, _ in recs])
      basis, reduced = store_lib.fit_pca(
          samples, teacher.groups, teacher_lib.flip_permutation_matrix(teacher.flip_permutation),
          int(pca))
      meta = build_meta(teacher, grid, pca, source_info, n, shard_size, basis, reduced)
    store_lib.write_json(meta_path, meta)
  basis = np.asarray(meta['pca']['basis'], np.float32) if meta.get('pca') else None

  num_shards = -(-n // shard_size)
  done = set(store_lib.committed_shards(out))
  todo = [k for k in range(num_shards) if k not in done]
  finished = sum(min(shard_size, n - k * shard_size) for k in done if k < num_shards)
  bar = None
  if progress:
    bar = tqdm(total=n, initial=finished, desc=f'{teacher.name} priors', unit='ex',
               dynamic_ncols=True)
  computed = 0
  try:
    for k in todo:
      lo, hi = k * shard_size, min((k + 1) * shard_size, n)
      records = []
      for b in range(lo, hi, batch):
        exs = [source[i] for i in range(b, min(b + batch, hi))]
        for ex, (maps, affine) in zip(exs, teacher(exs)):
          maps = np.asarray(maps, np.float32)
          if basis is not None:
            h, w, c = maps.shape
            maps = (maps.reshape(-1, c) @ basis).reshape(h, w, -1)
          with np.errstate(over='ignore'):  # overflow -> inf, refused just below
            maps16 = maps.astype(np.float16)
          if not (np.all(np.isfinite(maps16)) and np.all(np.isfinite(affine))):
            # NaN from the teacher, or values beyond float16's range: refuse
            # before the shard is written (finished shards stay as they are).
            raise ValueError(f'{teacher.name} teacher: non-finite maps or affine for '
                             f'annot_id {ex["annot_id"]} (image {ex.get("image_path")}); '
                             f'nothing of shard {k} was written to {out}')
          records.append((int(ex['annot_id']), maps16, affine))
          computed += 1
          if bar is not None:
            bar.update(1)
          if callback is not None:
            callback(computed)
      store_lib.write_shard(out, k, records)
  finally:
    if bar is not None:
      bar.close()
  # Verified before it is marked complete: duplicate or lost ids show here.
  st = store_lib.open_store(out)
  if len(st) != n:
    raise store_lib.StoreError(f'{out}: {len(st)} stored ids for {n} examples')
  store_lib.write_json(os.path.join(out, store_lib.COMPLETE),
                       {'num_examples': n, 'num_shards': num_shards})
  return st


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--teacher', required=True, choices=('sapiens', 'oracle'))
  p.add_argument('--dataset', required=True, choices=('synthetic', 'interhand26m', 'hic'))
  p.add_argument('--root', required=True)
  p.add_argument('--split', default='train')
  p.add_argument('--out', required=True)
  p.add_argument('--grid', type=int, nargs=2, default=list(teacher_lib.GRID),
                 metavar=('H', 'W'))
  p.add_argument('--pca', type=int, default=0, help='components per channel group (0: none)')
  p.add_argument('--pca_samples', type=int, default=256)
  p.add_argument('--extend', type=float, default=teacher_lib.TEACHER_EXTEND)
  p.add_argument('--mano_dir', default=None)
  p.add_argument('--sapiens_pose', default=None)
  p.add_argument('--sapiens_seg', default=None)
  p.add_argument('--sapiens_depth', default=None)
  p.add_argument('--sapiens_dir', default=None,
                 help='folder searched for *pose*, *seg*, *depth* .pt2/.pt files')
  p.add_argument('--device', default=None, help='torch device (default cuda if available)')
  p.add_argument('--batch', type=int, default=8)
  p.add_argument('--shard_size', type=int, default=DEFAULT_SHARD_SIZE)
  args = p.parse_args(argv)
  grid = tuple(args.grid)
  teacher = make_teacher(args.teacher, grid=grid, extend=args.extend,
                         sapiens_pose=args.sapiens_pose, sapiens_seg=args.sapiens_seg,
                         sapiens_depth=args.sapiens_depth, sapiens_dir=args.sapiens_dir,
                         device=args.device)
  source = open_source(args.dataset, args.root, args.split, mano_dir=args.mano_dir)
  info = {'dataset': args.dataset, 'root': os.path.abspath(args.root), 'split': args.split}
  st = precompute(teacher, source, args.out, grid=grid, pca=args.pca,
                  pca_samples=args.pca_samples, batch=args.batch, shard_size=args.shard_size,
                  source_info=info)
  print(f'{st}: {len(st)} examples')


if __name__ == '__main__':
  sys.exit(main())
