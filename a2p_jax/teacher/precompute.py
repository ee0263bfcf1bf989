"""Precompute a teacher's prior maps into a store (resumable).

    python -m a2p_jax.teacher.precompute --teacher oracle --dataset synthetic \
        --root DIR --split train --out STORE [--grid 32 24] [--pca K]
    python -m a2p_jax.teacher.precompute --teacher sapiens --dataset interhand26m \
        --root /data/InterHand2.6M --split train --out /data/priors/sapiens_train \
        --mano_dir /data/mano --sapiens_dir /ckpt/sapiens_1b [--batch 8] [--device cuda]
        (or --sapiens_pose P --sapiens_seg S --sapiens_depth D)
    python -m a2p_jax.teacher.precompute --teacher sapiens_features --dataset interhand26m \
        --root /data/InterHand2.6M --split train --out /data/priors/sapiens_features_train \
        --mano_dir /data/mano --sapiens_dir /ckpt/sapiens_pth --pca 64 [--batch 64]

Teachers: 'oracle' (the synthetic set's rendered priors), 'sapiens' (the task
OUTPUTS of Sapiens TorchScript files, run with PyTorch: teacher/sapiens.py),
'sapiens_features' (the backbone FEATURES of Sapiens .pth or TorchScript
files, run with Sapiens-JAX on every local device: teacher/features.py; the
paper's implicit distillation; needs --pca).

Several processes (hosts of a pod, `jax.distributed`, or any launcher with
--process_index/--process_count): each computes the shards k with
k % count == index; process 0 fits the PCA and writes meta.json first (the
others wait for it), and whichever process finds every shard committed
verifies the store and marks it complete. --out must be a folder all
processes see.

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
import time
from typing import Callable, Optional

import jax
import numpy as np
from tqdm import tqdm

from a2p_jax import teacher as teacher_lib
from a2p_jax.data import open_source
from a2p_jax.data.sources import READERS
from a2p_jax.teacher import features as features_lib
from a2p_jax.teacher import sapiens_jax
from a2p_jax.teacher import store as store_lib
from a2p_jax.teacher.oracle import OracleTeacher
from a2p_jax.teacher.sapiens import SapiensTeacher, find_checkpoints

DEFAULT_SHARD_SIZE = 1024
TEACHERS = ('oracle', 'sapiens', 'sapiens_features')
# Patch-conv padding of the released Sapiens task files (design.md): pose 2,
# goliath seg and depth none.
PATCH_PADDING = {'pose': 2, 'seg': 0, 'depth': 0}
IH26M_TRAIN_ANNOTATIONS = 1_360_000   # InterHand2.6M train, ~1.36 M annotations: the size estimate
META_WAIT_S = 3600


def default_grid(name: str):
  return features_lib.GRID if name == 'sapiens_features' else teacher_lib.GRID


def make_teacher(name: str, *, grid=None, extend=teacher_lib.TEACHER_EXTEND,
                 sapiens_pose=None, sapiens_seg=None, sapiens_depth=None, sapiens_dir=None,
                 device=None, patch_padding=None, input_hw=None, batch: int = 1,
                 dtype='float32', num_heads=None):
  grid = default_grid(name) if grid is None else grid
  if name == 'oracle':
    return OracleTeacher(grid=grid, extend=extend)
  if name == 'sapiens':
    return SapiensTeacher(pose=sapiens_pose, seg=sapiens_seg, depth=sapiens_depth,
                          directory=sapiens_dir, grid=grid, extend=extend, device=device)
  if name == 'sapiens_features':
    files = find_checkpoints(sapiens_pose, sapiens_seg, sapiens_depth, sapiens_dir,
                             exts=('pth', 'pt2', 'pt'))
    pad = dict(PATCH_PADDING, **(patch_padding or {}))
    models = {t: sapiens_jax.load(f, patch_padding=pad[t], dtype=dtype, num_heads=num_heads)
              for t, f in files.items()}
    return features_lib.FeatureTeacher(models, files=files, grid=grid, extend=extend,
                                       input_hw=input_hw or features_lib.INPUT_HW,
                                       batch=batch)
  raise ValueError(f'--teacher must be one of {TEACHERS}, got {name!r}')


def build_meta(teacher, grid, pca_k, source_info, num_examples, shard_size, basis=None,
               reduced_groups=None) -> dict:
  """meta.json of a store. With PCA the basis goes to store.PCA_BASIS (it
  can be thousands x hundreds) and the full flip as a permutation."""
  meta = {
      'format_version': store_lib.FORMAT_VERSION,
      'teacher': teacher.name, 'teacher_config': teacher.config(),
      'signal': getattr(teacher, 'signal', 'outputs'),
      'grid': list(grid), 'source': source_info,
      'num_examples': int(num_examples), 'shard_size': int(shard_size),
      'channel_names': list(teacher.channel_names),
  }
  if basis is None:
    perm_p = teacher_lib.flip_permutation_matrix(teacher.flip_permutation)
    meta.update(num_channels=teacher.num_channels, groups=teacher.groups,
                flip_matrix=perm_p.tolist(), pca=None)
  else:
    perm = np.asarray(teacher.flip_permutation, np.int64)
    flip = basis[perm].T @ basis   # B^T P B with P[c, perm[c]] = 1: (P B)[c] = B[perm[c]]
    flip[np.abs(flip) < 1e-9] = 0.0
    meta.update(num_channels=int(basis.shape[1]), groups=reduced_groups,
                flip_matrix=flip.tolist(),
                pca={'k': int(pca_k), 'basis_file': store_lib.PCA_BASIS,
                     'groups_full': teacher.groups,
                     'flip_permutation_full': perm.tolist()})
  return meta


def _same_run(a: dict, b: dict) -> bool:
  keys = ('format_version', 'teacher', 'teacher_config', 'grid', 'source', 'num_examples',
          'shard_size', 'channel_names')
  pa = (a.get('pca') or {}).get('k')
  pb = (b.get('pca') or {}).get('k')
  return all(json.loads(json.dumps(a.get(k))) == json.loads(json.dumps(b.get(k)))
             for k in keys) and pa == pb


def _fit_pca(teacher, source, n, k, pca_samples, batch):
  """(basis, reduced groups) from the teacher's maps of `pca_samples`
  examples spread over the source, accumulated batch by batch."""
  idx = np.unique(np.linspace(0, n - 1, min(pca_samples, n)).round().astype(np.int64))
  moments = None
  for b in range(0, len(idx), batch):
    exs = [source[int(i)] for i in idx[b:b + batch]]
    for maps, _ in teacher(exs):
      rows = np.asarray(maps, np.float32).reshape(-1, maps.shape[-1])
      moments = store_lib.add_moments(moments, store_lib.group_covariances(rows, teacher.groups))
  return store_lib.fit_pca_from_moments(
      moments, teacher.groups, teacher_lib.flip_permutation_matrix(teacher.flip_permutation),
      int(k), teacher.num_channels)


def _wait_for(path: str, what: str, timeout_s: float):
  t0 = time.monotonic()
  while not os.path.exists(path):
    if time.monotonic() - t0 > timeout_s:
      raise TimeoutError(f'waited {timeout_s:.0f} s for {path} ({what}) from process 0')
    time.sleep(1.0)


def record_bytes(grid, channels: int) -> int:
  """Bytes of one stored record before compression."""
  return store_lib.HEADER_BYTES + int(grid[0]) * int(grid[1]) * int(channels) * 2


def precompute(teacher, source, out: str, *, grid=None, pca: int = 0,
               pca_samples: int = 256, batch: int = 8,
               shard_size: int = DEFAULT_SHARD_SIZE, source_info: Optional[dict] = None,
               progress: bool = True, callback: Optional[Callable[[int], None]] = None,
               process_index: Optional[int] = None, process_count: Optional[int] = None):
  """Writes (or completes) this process's shards of the store `out`; returns
  it opened once every shard is committed, else None (other processes
  still write theirs).

  teacher: a teacher object (`OracleTeacher`, `SapiensTeacher`,
  `features.FeatureTeacher`) or the name 'oracle' (others need arguments:
  `make_teacher`). source: random-access examples with annot_id.
  callback(n) runs after each computed example (n computed so far in this
  run), e.g. to report or to interrupt in tests. process_index/count:
  default jax.process_index()/process_count().
  """
  if isinstance(teacher, str):
    teacher = make_teacher(teacher, grid=grid)
  grid = tuple(teacher.grid) if grid is None else tuple(int(v) for v in grid)
  if tuple(teacher.grid) != grid:
    raise ValueError(f'teacher grid {teacher.grid} != grid {grid}')
  pi = jax.process_index() if process_index is None else int(process_index)
  pc = jax.process_count() if process_count is None else int(process_count)
  if not 0 <= pi < pc:
    raise ValueError(f'process_index {pi} is not in [0, process_count={pc})')
  if getattr(teacher, 'signal', 'outputs') == 'features' and not pca:
    raise ValueError(f'the {teacher.name} teacher needs --pca K (it has {teacher.num_channels} '
                     'channels per cell before the reduction)')
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
  if pi != 0 and not os.path.exists(meta_path):
    _wait_for(meta_path, 'the store\'s meta.json', META_WAIT_S)
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
      basis, reduced = _fit_pca(teacher, source, n, pca, pca_samples, batch)
      meta = build_meta(teacher, grid, pca, source_info, n, shard_size, basis, reduced)
      store_lib.write_pca_basis(out, basis)
    store_lib.write_json(meta_path, meta)   # last: its presence says the basis is there
  basis = store_lib.pca_basis(out, meta)
  if basis is not None:
    basis = basis.astype(np.float32)

  num_shards = -(-n // shard_size)
  mine = [k for k in range(num_shards) if k % pc == pi]
  done = set(store_lib.committed_shards(out))
  todo = [k for k in mine if k not in done]
  size = lambda k: min(shard_size, n - k * shard_size)  # noqa: E731
  bar = None
  if progress:
    bar = tqdm(total=sum(size(k) for k in mine),
               initial=sum(size(k) for k in mine if k in done),
               desc=f'{teacher.name} priors' + (f' (process {pi}/{pc})' if pc > 1 else ''),
               unit='ex', dynamic_ncols=True)
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
  if len(store_lib.committed_shards(out)) < num_shards:
    return None   # other processes still write theirs; the last one completes the store
  # Verified before it is marked complete: duplicate or lost ids show here.
  st = store_lib.open_store(out)
  if len(st) != n:
    raise store_lib.StoreError(f'{out}: {len(st)} stored ids for {n} examples')
  store_lib.write_json(os.path.join(out, store_lib.COMPLETE),
                       {'num_examples': n, 'num_shards': num_shards})
  return st


def storage_report(meta: dict, num_examples: int) -> str:
  """Bytes per example (before compression) and the InterHand2.6M train total."""
  per = record_bytes(meta['grid'], meta['num_channels'])
  return (f'{per:,} bytes per example before compression ({meta["grid"][0]}x{meta["grid"][1]} '
          f'cells x {meta["num_channels"]} float16 channels): {per * num_examples / 1e9:.2f} GB '
          f'for these {num_examples:,} examples, {per * IH26M_TRAIN_ANNOTATIONS / 1e9:.1f} GB '
          f'for InterHand2.6M train (~{IH26M_TRAIN_ANNOTATIONS / 1e6:.2f} M annotations)')


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--teacher', required=True, choices=TEACHERS)
  p.add_argument('--dataset', required=True, choices=sorted(READERS))
  p.add_argument('--root', required=True)
  p.add_argument('--split', default='train')
  p.add_argument('--out', required=True)
  p.add_argument('--grid', type=int, nargs=2, default=None, metavar=('H', 'W'),
                 help=f'store grid (default {teacher_lib.GRID} for map teachers, '
                      f'{features_lib.GRID} for sapiens_features)')
  p.add_argument('--pca', type=int, default=0, help='components per channel group (0: none)')
  p.add_argument('--pca_samples', type=int, default=256)
  p.add_argument('--extend', type=float, default=teacher_lib.TEACHER_EXTEND)
  p.add_argument('--mano_dir', default=None)
  p.add_argument('--sapiens_pose', default=None)
  p.add_argument('--sapiens_seg', default=None)
  p.add_argument('--sapiens_depth', default=None)
  p.add_argument('--sapiens_dir', default=None,
                 help='folder searched for *pose*, *seg*, *depth* checkpoint files')
  for task, pad in PATCH_PADDING.items():
    p.add_argument(f'--sapiens_{task}_padding', type=int, default=pad,
                   help=f'patch-conv padding of the {task} file (sapiens_features; '
                        f'default {pad}, see the README\'s table)')
  p.add_argument('--teacher_hw', type=int, nargs=2, default=list(features_lib.INPUT_HW),
                 metavar=('H', 'W'), help='sapiens_features input size')
  p.add_argument('--sapiens_num_heads', type=int, default=None,
                 help='attention heads of a non-standard Sapiens size (the four released '
                      'sizes are recognised from their weights)')
  p.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'),
                 help='sapiens_features compute dtype')
  p.add_argument('--device', default=None, help='torch device (sapiens; default cuda if '
                 'available)')
  p.add_argument('--batch', type=int, default=8,
                 help='examples per teacher call (sapiens_features: split over the local '
                      'devices, rounded up to a multiple of their number)')
  p.add_argument('--shard_size', type=int, default=DEFAULT_SHARD_SIZE)
  p.add_argument('--distributed', action='store_true',
                 help='jax.distributed.initialize() first (a pod: one process per host)')
  p.add_argument('--process_index', type=int, default=None)
  p.add_argument('--process_count', type=int, default=None)
  args = p.parse_args(argv)
  if args.distributed:
    jax.distributed.initialize()
  grid = tuple(args.grid) if args.grid else None
  teacher = make_teacher(args.teacher, grid=grid, extend=args.extend,
                         sapiens_pose=args.sapiens_pose, sapiens_seg=args.sapiens_seg,
                         sapiens_depth=args.sapiens_depth, sapiens_dir=args.sapiens_dir,
                         device=args.device, batch=args.batch, dtype=args.dtype,
                         input_hw=tuple(args.teacher_hw), num_heads=args.sapiens_num_heads,
                         patch_padding={t: getattr(args, f'sapiens_{t}_padding')
                                        for t in PATCH_PADDING})
  source = open_source(args.dataset, args.root, args.split, mano_dir=args.mano_dir)
  info = {'dataset': args.dataset, 'root': os.path.abspath(args.root), 'split': args.split}
  st = precompute(teacher, source, args.out, grid=grid, pca=args.pca,
                  pca_samples=args.pca_samples, batch=args.batch, shard_size=args.shard_size,
                  source_info=info, process_index=args.process_index,
                  process_count=args.process_count)
  meta = store_lib.read_meta(args.out)
  if st is None:
    print(f'{args.out}: this process\'s shards are done; the store completes when the other '
          'processes finish theirs')
  else:
    print(f'{st}: {len(st)} examples')
  print(storage_report(meta, len(source)))


if __name__ == '__main__':
  sys.exit(main())
