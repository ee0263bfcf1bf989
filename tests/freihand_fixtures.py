"""A tiny FreiHAND_pub_v2 (+ evaluation annotations) folder in the official
layout, made from MANO parameters chosen here (the procedural hand: NOT
MANO, 833 vertices where FreiHAND's MANO has 778).

As the toolbox makes its annotations (lmb-freiburg/freihand utils/model.py,
utils/mano_utils.py): the mesh is MANO(pose, shape) with flat_hand_mean=False
plus a translation that puts the middle MCP (joint 9) at the chosen root;
the 21 joints are J_regressor on the posed mesh plus fingertip vertices, in
FreiHAND's order (wrist, then thumb..pinky, base 1 to tip 4); the 61-D
vector is pose 48, shape 10, uv_root 2 (joint 9 projected with the mean
focal), scale 1 (mean focal / depth of joint 9), stored as [[61 numbers]];
*_scale.json holds |xyz[9] - xyz[10]|. xyz and verts are written as float32
values (the released files' precision); images are 8 x 8 stand-ins.
"""

import json
import os
import shutil

import jax
import numpy as np
from PIL import Image

import mano_jax

# FreiHAND row of each MANO kinematic joint (mano_utils.get_keypoints_from_mesh_ch)
# and of the five fingertip vertices (thumb, index, middle, ring, pinky).
FH_FROM_MANO16 = {0: 0, 1: 5, 2: 6, 3: 7, 4: 9, 5: 10, 6: 11, 7: 17, 8: 18, 9: 19,
                  10: 13, 11: 14, 12: 15, 13: 1, 14: 2, 15: 3}
FH_TIPS = (4, 8, 12, 16, 20)
ROOT = 9
VERSIONS = 4


def freihand_joints(model, verts):
  """(V, 3) mesh -> (21, 3) joints the toolbox's way, FreiHAND order."""
  reg = np.asarray(model.J_regressor, np.float64) @ verts
  out = np.zeros((21, 3))
  for m, f in FH_FROM_MANO16.items():
    out[f] = reg[m]
  for f, v in zip(FH_TIPS, model.tip_ids):
    out[f] = verts[v]
  return out


def make_sample(model, rng, flat_hand_mean=False):
  """One annotated sample (dict of float64 truth and the written entries)."""
  pose = rng.normal(0, 0.3, 48)
  pose[:3] = rng.normal(0, 1.5, 3)
  shape = rng.normal(0, 1, 10)
  fx, fy = rng.uniform(500, 1500, 2)
  pp = np.array([112.0, 112.0]) + rng.normal(0, 8, 2)
  with jax.enable_x64(True):
    verts0 = np.asarray(mano_jax.forward(model, pose, shape, flat_hand_mean=flat_hand_mean)
                        .vertices)
  xyz0 = freihand_joints(model, verts0)
  z = rng.uniform(0.4, 0.9)
  uv = np.array([112.0, 112.0]) + rng.normal(0, 15, 2)
  root = np.array([(uv[0] - pp[0]) * z / fx, (uv[1] - pp[1]) * z / fy, z])
  trans = root - xyz0[ROOT]
  verts, xyz = verts0 + trans, xyz0 + trans
  focal = 0.5 * (fx + fy)            # utils/model.py get_focal_pp
  uv_root = focal * root[:2] / root[2] + pp
  K = np.array([[fx, 0.0, pp[0]], [0.0, fy, pp[1]], [0.0, 0.0, 1.0]])
  xyz_file = xyz.astype(np.float32).astype(np.float64)
  return dict(pose=pose, shape=shape, trans=trans, verts=verts, xyz=xyz, K=K,
              xyz_file=xyz_file, verts_file=verts.astype(np.float32).astype(np.float64),
              mano=np.concatenate([pose, shape, uv_root, [focal / root[2]]]),
              scale=float(np.linalg.norm(xyz_file[9] - xyz_file[10])))


def _dump(path, obj):
  with open(path, 'w') as fh:
    json.dump(obj, fh)


def write_split(root, model, split, n, rng, *, images=True):
  """Writes one split's files; returns the list of samples (make_sample)."""
  samples = [make_sample(model, rng) for _ in range(n)]
  files = {'K': [s['K'].tolist() for s in samples],
           'mano': [[s['mano'].tolist()] for s in samples],
           'xyz': [s['xyz_file'].tolist() for s in samples],
           'verts': [s['verts_file'].tolist() for s in samples],
           'scale': [s['scale'] for s in samples]}
  for key, obj in files.items():
    _dump(os.path.join(root, f'{split}_{key}.json'), obj)
  if images:
    num_images = n * VERSIONS if split == 'training' else n
    folders = ['rgb'] + (['mask'] if split == 'training' else [])
    for folder in folders:
      os.makedirs(os.path.join(root, split, folder), exist_ok=True)
    pixel = Image.fromarray(np.full((8, 8, 3), 90, np.uint8))
    for i in range(num_images):
      pixel.save(os.path.join(root, split, 'rgb', '%08d.jpg' % i))
    for i in range(n if split == 'training' else 0):
      pixel.save(os.path.join(root, split, 'mask', '%08d.jpg' % i))
  return samples


def write(root, model, *, n_train=3, n_eval=2, seed=0):
  """The whole folder; returns {'training': samples, 'evaluation': samples}."""
  rng = np.random.default_rng(seed)
  os.makedirs(root, exist_ok=True)
  return {'training': write_split(root, model, 'training', n_train, rng),
          'evaluation': write_split(root, model, 'evaluation', n_eval, rng)}


def rewrite(root, split, key, edit):
  """Loads {split}_{key}.json, writes edit(obj) back; returns the path."""
  path = os.path.join(root, f'{split}_{key}.json')
  with open(path) as fh:
    obj = json.load(fh)
  _dump(path, edit(obj))
  return path


def private_copy(base, tmp_path):
  """(root, truth): a copy of the module's set under tmp_path, free to edit."""
  root = str(tmp_path / 'FreiHAND_pub_v2')
  shutil.copytree(base[0], root)
  return root, base[1]
