"""Sapiens teacher: the user's Sapiens TorchScript checkpoints -> prior maps.

Sapiens (Meta, ECCV 2024; CC BY-NC 4.0: users bring their own files) comes
as one TorchScript file per task, each with its own fine-tuned ViT backbone.
We load the pose, seg and depth files (any size 0.3B-2B; `*_torchscript.pt2`
or `.pt`, loaded with `torch.jit.load`; the `*_bfloat16.pt2` torch.export
files do not load this way and are skipped by the folder search) with
PyTorch, imported lazily: torch is an optional extra, needed only here.

Input: the example's teacher crop (`a2p_jax.teacher.teacher_box`: the
two-hand box, longer side x 2, aspect 4:3 H:W) warped to Sapiens' native
1024 x 768 (H x W; other sizes fail), RGB on the 0-255 scale normalised
with mean (123.5, 116.5, 103.5) and std (58.5, 57.0, 57.5).

Which tensor, and why: the task OUTPUTS, not the backbone feature map. The
final ViT map (64 x 48 x 1024-1920) may be reachable as a submodule of the
TorchScript file (`m.backbone`), but that is unverified on real files (the
intermediate blocks are not), and at 1024-1920 channels per task it would
not fit the storage budget (>= 3 x 64 x 48 x 1024 x 2 bytes = 18 MB per
example before pooling). The outputs are documented, small after pooling,
interpretable (so the oracle teacher can imitate them on synthetic data)
and carry exactly A2P's three priors:

  keypoint      42 ch  pose heatmaps (N, 308, 256, 192), Goliath channels
                       21-62 (21-41 right hand, 42-62 left, each thumb..pinky,
                       tip first, wrist last, as InterHand2.6M), i.e. InterHand
                       channel i = Goliath 21 + i (GOLIATH_HAND)
  segmentation   3 ch  softmax over seg logits (N, 28, 512, 384) at native
                       resolution: not-hand (1 - right - left), right hand
                       (class 14), left hand (class 5)
  depth          1 ch  depth (N, 1, 1024, 768), normalised inside the hand
                       region (P(right) + P(left) > 0.5, seg upsampled):
                       (d - median) / std over the hand, averaged over a
                       cell's hand pixels, 0 where none (as the oracle)

Each is area-pooled (adaptive average) to the store grid; the default
(32, 24) divides all three output sizes, so a cell is exactly 32 x 32 input
pixels and the record's affine (image px -> map px, `box_affine`) is exact.
46 channels x 32 x 24 x 2 bytes = 70,656 bytes per example before
compression.
"""

import glob
import os
import warnings
from typing import Dict, Optional, Sequence

import numpy as np

from a2p_jax import teacher as teacher_lib

INPUT_HW = (1024, 768)
MEAN = (123.5, 116.5, 103.5)
STD = (58.5, 57.0, 57.5)
GOLIATH_HAND = np.arange(21, 63)    # InterHand channel i <- Goliath channel GOLIATH_HAND[i]
SEG_RIGHT_HAND, SEG_LEFT_HAND = 14, 5
NUM_GOLIATH, NUM_SEG_CLASSES = 308, 28
TASKS = ('pose', 'seg', 'depth')
_CHANNELS = {'pose': NUM_GOLIATH, 'seg': NUM_SEG_CLASSES, 'depth': 1}


def find_checkpoints(pose: Optional[str] = None, seg: Optional[str] = None,
                     depth: Optional[str] = None, directory: Optional[str] = None, *,
                     exts: Sequence[str] = ('pt2', 'pt')) -> Dict[str, str]:
  """{'pose'|'seg'|'depth': file}: the given paths, the others found in
  `directory` (recursively) as the one file with an extension in `exts`
  whose path relative to it contains the task name (bfloat16 torch.export
  files are skipped)."""
  given = {'pose': pose, 'seg': seg, 'depth': depth}
  out = {}
  files = []
  if directory is not None:
    if not os.path.isdir(directory):
      raise FileNotFoundError(f'--sapiens_dir {directory!r} is not a directory')
    for ext in exts:
      files += glob.glob(os.path.join(directory, '**', f'*.{ext}'), recursive=True)
    files = sorted(f for f in files if 'bfloat16' not in os.path.basename(f).lower())
  for task in TASKS:
    path = given[task]
    if path is None:
      if directory is None:
        raise ValueError(f'the Sapiens teacher needs --sapiens_{task} or --sapiens_dir')
      hits = [f for f in files if task in os.path.relpath(f, directory).lower()]
      if not hits:
        raise FileNotFoundError(f'no *{task}* .{"/.".join(exts)} file under {directory}; pass '
                                f'--sapiens_{task}')
      if len(hits) > 1:
        raise ValueError(f'several *{task}* checkpoints under {directory}: {hits}; pass '
                         f'--sapiens_{task} to choose')
      path = hits[0]
    if not os.path.isfile(path):
      raise FileNotFoundError(f'Sapiens {task} checkpoint {path!r} does not exist')
    out[task] = path
  return out


def channel_names():
  names = [f'kp_{s}_{j}' for s in ('right', 'left') for j in range(21)]
  return names + ['seg_not_hand', 'seg_right_hand', 'seg_left_hand', 'depth_rel']


def groups():
  return {'keypoint': list(range(42)), 'segmentation': [42, 43, 44], 'depth': [45]}


def flip_permutation():
  return np.asarray(list((np.arange(42) + 21) % 42) + [42, 44, 43, 45], np.int64)


class SapiensTeacher:
  """Teacher interface: `teacher(examples) -> [(maps (gh, gw, 46) float32,
  affine (2, 3) image px -> map px)]`; models load on first use."""

  name = 'sapiens'

  def __init__(self, pose=None, seg=None, depth=None, directory=None, *,
               grid=teacher_lib.GRID, extend: float = teacher_lib.TEACHER_EXTEND,
               device: Optional[str] = None):
    self.files = find_checkpoints(pose, seg, depth, directory)
    self.grid = tuple(int(v) for v in grid)
    self.extend = float(extend)
    self.device = device
    self.channel_names = channel_names()
    self.groups = groups()
    self.flip_permutation = flip_permutation()
    self.num_channels = len(self.channel_names)
    self._models = None

  def config(self) -> dict:
    return {'teacher': self.name, 'extend': self.extend,
            'checkpoints': {t: {'file': os.path.basename(f), 'bytes': os.path.getsize(f)}
                            for t, f in self.files.items()}}

  def _load(self):
    if self._models is None:
      import torch  # deferred: torch is the optional [sapiens] extra, never a core import
      if self.device is None:
        self.device = 'cuda' if torch.cuda.is_available() else 'cpu'
      models = {}
      for task, f in self.files.items():
        try:
          with warnings.catch_warnings():  # torch >= 2.10 deprecates TorchScript
            warnings.simplefilter('ignore', DeprecationWarning)
            m = torch.jit.load(f, map_location=self.device)
        except Exception as e:  # noqa: BLE001 - torch raises many kinds
          raise ValueError(f'cannot load Sapiens {task} checkpoint {f} with torch.jit.load '
                           f'(a *_torchscript.pt2 file is needed; *_bfloat16.pt2 files are '
                           f'torch.export archives): {e}') from None
        models[task] = m.eval()
      self._models = models
    return self._models

  def _inputs(self, examples):
    x, affines = teacher_lib.teacher_crops(examples, INPUT_HW, self.grid, extend=self.extend,
                                           mean=MEAN, std=STD)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)), affines

  def _run(self, task, x):
    out = self._models[task](x)
    if isinstance(out, (tuple, list)):
      out = out[0]
    n = x.shape[0]
    if out.ndim != 4 or out.shape[0] != n or out.shape[1] != _CHANNELS[task]:
      raise ValueError(f'Sapiens {task} checkpoint {self.files[task]} returned '
                       f'{tuple(out.shape)}, expected ({n}, {_CHANNELS[task]}, H, W)')
    return out.float()

  def __call__(self, examples: Sequence[dict]):
    import torch  # deferred: the optional [sapiens] extra (see _load)
    import torch.nn.functional as F
    models = self._load()
    del models
    x_np, affines = self._inputs(examples)
    gh, gw = self.grid
    with torch.inference_mode():
      x = torch.from_numpy(x_np).to(self.device)
      heat = self._run('pose', x)[:, torch.as_tensor(GOLIATH_HAND)]
      kp = F.adaptive_avg_pool2d(heat, (gh, gw))
      del heat
      prob = torch.softmax(self._run('seg', x), dim=1)
      right, left = prob[:, SEG_RIGHT_HAND:SEG_RIGHT_HAND + 1], prob[:, SEG_LEFT_HAND:SEG_LEFT_HAND + 1]
      seg3 = torch.cat([1.0 - right - left, right, left], 1)
      seg = F.adaptive_avg_pool2d(seg3, (gh, gw))
      d = self._run('depth', x)
      hand = F.interpolate(right + left, size=d.shape[-2:], mode='nearest') > 0.5
      rel = torch.zeros_like(d)
      for i in range(d.shape[0]):
        m = hand[i]
        if bool(m.any()):
          v = d[i][m]
          std = torch.clamp(v.std(unbiased=False), min=1e-6)
          rel[i][m] = (v - v.median()) / std
      handf = hand.float()
      num = F.adaptive_avg_pool2d(rel * handf, (gh, gw))
      den = F.adaptive_avg_pool2d(handf, (gh, gw))
      depth = torch.where(den > 0, num / torch.clamp(den, min=1e-12), torch.zeros_like(num))
      maps = torch.cat([kp, seg, depth], 1).permute(0, 2, 3, 1).cpu().numpy()
    return [(maps[i].astype(np.float32), affines[i]) for i in range(len(examples))]
