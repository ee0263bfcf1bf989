"""Feature teacher: Sapiens *backbone features* as A2P's prior (the paper's
implicit distillation), computed with Sapiens-JAX on the accelerators.

Per example and per task model (pose, seg, depth: each Sapiens task file
has its own fine-tuned ViT), the last-layer tokens after the final norm
(`sapiens_jax`: out['features'], (H/16, W/16, C) at the teacher crop) are
average-pooled to the store grid, which covers the same teacher crop as the
outputs teacher (`a2p_jax.teacher.teacher_box`, its `box_affine`): the
pipeline then warps them onto the crop grid the FAE sees (stride 32 of the
training crop), exactly as it warps the output maps.

Horizontal flips. A mirrored image's features are not a channel permutation
of the original's, so the teacher also runs on the mirrored crop and stores
its features un-mirrored (at the original positions) next to the crop's
own: channels per task [view 0: F(crop), view 1: mirror(F(mirror(crop)))].
The flip matrix swaps the two views: under the pipeline's flip the warped
maps become exactly [F(mirror crop), mirror(F(crop))] at the mirrored
positions. The cost is two backbone passes per task model and example; the
projection sees both views (2C channels before PCA).

Channel reduction: 3 x 2 x C channels (6144 for 0.3b) per cell are too many
to store, so the precompute requires a PCA (`--pca K`, K per task; fitted
per group on a sample, flip-even/odd so the swap stays exact: store.fit_pca).

Patch padding: pose checkpoints use a padded patch conv (2 px): token j then
covers crop pixels [16 j - 2, 16 j + 14), 1/8 of a token from the cell the
affine assumes; the shift is not corrected (it is below the store grid's
resolution).
"""

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from typing import Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from a2p_jax import teacher as teacher_lib

TASKS = ('pose', 'seg', 'depth')
GROUP_OF_TASK = {'pose': 'keypoint', 'seg': 'segmentation', 'depth': 'depth'}
INPUT_HW = (1024, 768)          # Sapiens' native input (H, W)
GRID = (16, 12)                 # store grid: 4 x 4 tokens of 16 px per cell at 1024 x 768
# The official (mmpose/mmseg data preprocessor) normalisation, 0-255 RGB.
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
VIEWS = 2


def channel_layout(dims: Dict[str, int]):
  """(channel names, groups, flip permutation) for per-task feature widths
  `dims` {'pose': C, ...} in TASKS order, two views per task."""
  names, groups, perm, start = [], {}, [], 0
  for task in TASKS:
    if task not in dims:
      continue
    c = int(dims[task])
    names += [f'{task}_v{v}_{i}' for v in range(VIEWS) for i in range(c)]
    groups[GROUP_OF_TASK[task]] = list(range(start, start + VIEWS * c))
    perm += list(range(start + c, start + 2 * c)) + list(range(start, start + c))
    start += VIEWS * c
  return names, groups, np.asarray(perm, np.int64)


def pool_to_grid(tokens_NxHxWxC, grid):
  """Average pooling of a token map to `grid` (each side must divide)."""
  n, h, w, c = tokens_NxHxWxC.shape
  gh, gw = grid
  if h % gh or w % gw:
    raise ValueError(f'feature map {h}x{w} cannot be pooled to the grid {gh}x{gw} '
                     '(choose a grid that divides the token grid)')
  x = tokens_NxHxWxC.reshape(n, gh, h // gh, gw, w // gw, c)
  return x.astype(jnp.float32).mean((2, 4))


def make_pooled_features(apply_fn: Callable, grid, mesh: Mesh | None):
  """jit of (params, images (N, H, W, 3)) -> (N, gh, gw, 2C): both views
  pooled; `apply_fn(params, images)` -> the token map (N, H/16, W/16, C).
  The parameters are an argument (replicated), not constants folded into
  the program; the batch is split over `mesh`'s 'data' axis (None: the
  default device)."""

  def fn(params, images):
    n = images.shape[0]
    # Each example's two views stay next to each other (on its device).
    both = jnp.stack([images, images[:, :, ::-1]], 1).reshape((2 * n,) + images.shape[1:])
    f = pool_to_grid(apply_fn(params, both), grid)
    f = f.reshape((n, 2) + f.shape[1:])
    return jnp.concatenate([f[:, 0], f[:, 1, :, ::-1]], -1)

  if mesh is None:
    return jax.jit(fn)
  data, replicated = NamedSharding(mesh, P('data')), NamedSharding(mesh, P())
  return jax.jit(fn, in_shardings=(replicated, data), out_shardings=data)


def _backbone_fn(model):
  """params, images -> the last-layer tokens of a Sapiens-JAX model (its
  head skipped), or of any object with `.apply(params, images,
  features_only=True)['features']`."""
  return lambda params, images: model.apply(params, images, features_only=True)['features']


def local_mesh() -> Mesh:
  """This process's devices on one 'data' axis (each host of a pod computes
  its own examples: no cross-host traffic)."""
  return Mesh(np.asarray(jax.local_devices()), ('data',))


class FeatureTeacher:
  """Teacher interface (`precompute`): `teacher(examples) -> [(maps (gh, gw,
  C_total) float32, affine (2, 3) image px -> map px)]`.

  models: {'pose'|'seg'|'depth': a Sapiens-JAX model} (`sapiens_jax.load`):
  `.params`, `.apply(params, images, features_only=True)` and
  `.arch.embed_dim`. files: the checkpoint file per task (recorded in the
  store's meta).
  """

  name = 'sapiens_features'
  signal = 'features'

  def __init__(self, models: Dict[str, object], *, files: Optional[Dict[str, str]] = None,
               grid=GRID, extend: float = teacher_lib.TEACHER_EXTEND,
               input_hw=INPUT_HW, mesh: Optional[Mesh] = None, batch: int = 1):
    unknown = sorted(set(models) - set(TASKS))
    if unknown or not models:
      raise ValueError(f'feature teacher: models must be some of {TASKS}, got {sorted(models)}')
    self.models = {t: models[t] for t in TASKS if t in models}
    self.files = dict(files or {})
    self.grid = tuple(int(v) for v in grid)
    self.extend = float(extend)
    self.input_hw = tuple(int(v) for v in input_hw)
    self.mesh = local_mesh() if mesh is None else mesh
    d = self.mesh.devices.size
    self.batch = -(-max(int(batch), 1) // d) * d  # calls are padded to this (one compile)
    dims = {t: int(m.arch.embed_dim) for t, m in self.models.items()}
    self.channel_names, self.groups, self.flip_permutation = channel_layout(dims)
    self.num_channels = len(self.channel_names)
    self._fns = {t: make_pooled_features(_backbone_fn(m), self.grid, self.mesh)
                 for t, m in self.models.items()}
    replicated = NamedSharding(self.mesh, P())
    self._params = {t: jax.device_put(m.params, replicated) for t, m in self.models.items()}

  def config(self) -> dict:
    ckpts = {}
    for t, m in self.models.items():
      f = self.files.get(t)
      ckpts[t] = {'arch': _arch_dict(m.arch)}
      if f:
        ckpts[t].update(file=os.path.basename(f), bytes=os.path.getsize(f))
    return {'teacher': self.name, 'signal': self.signal, 'extend': self.extend,
            'input_hw': list(self.input_hw), 'views': VIEWS, 'checkpoints': ckpts}

  def __call__(self, examples: Sequence[dict]):
    n = len(examples)
    x, affines = teacher_lib.teacher_crops(examples, self.input_hw, self.grid,
                                           extend=self.extend, mean=MEAN, std=STD)
    pad = (-n) % self.batch  # one shape for every call: repeat the last crop
    if pad:
      x = np.concatenate([x, np.repeat(x[-1:], pad, 0)])
    maps = np.concatenate([np.asarray(jax.device_get(self._fns[t](self._params[t], x)))[:n]
                           for t in self.models], -1)
    return [(maps[i], affines[i]) for i in range(n)]


def _arch_dict(arch) -> dict:
  if dataclasses.is_dataclass(arch):
    return json.loads(json.dumps(dataclasses.asdict(arch), default=str))
  return {'repr': repr(arch)}
