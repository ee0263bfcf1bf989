"""Small InterHand2.6M-format data sets written by the tests, with the quirks
of the official files: captures as ints in data.json but str keys elsewhere,
camera ids as str, frame numbers not zero-padded, null hands, frames with no
MANO entry, hand_type_valid 0, 42x1 joint_valid lists.

World joints are made with mano_jax from the world MANO fits (float64), so
the fits and the joints agree exactly, like NeuralAnnot fits would ideally.
"""

import json
import os
import shutil

import jax
import numpy as np

import mano_jax
from PIL import Image


def random_rotation(rng):
  q = rng.normal(size=4)
  w, x, y, z = q / np.linalg.norm(q)
  return np.array([
      [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
      [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
      [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def look_at_camera(rng, target_mm):
  """A camera ~0.8 m from target, looking at it (camrot rows: x, y, z axes)."""
  d = rng.normal(size=3)
  d /= np.linalg.norm(d)
  campos = np.asarray(target_mm) + 800.0 * d
  z = -d
  x = np.cross(z, [0.0, 0.0, 1.0] if abs(z[2]) < 0.9 else [1.0, 0.0, 0.0])
  x /= np.linalg.norm(x)
  y = np.cross(z, x)
  return campos, np.stack([x, y, z])


def world_hands(models, rng, hand_type):
  """World fits {side: {pose, shape, trans} | None} and joints (42, 3) mm."""
  fits, coord = {}, np.zeros((42, 3))
  present = ('right', 'left') if hand_type == 'interacting' else (hand_type,)
  for k, side in enumerate(('right', 'left')):
    if side not in present:
      fits[side] = None
      continue
    pose = rng.normal(0, 0.3, 48)
    pose[:3] = rng.normal(0, 1.5, 3)
    shape = rng.normal(0, 1, 10)
    trans = np.array([0.05 * (1 if side == 'right' else -1), 0.0, 1.0]) + rng.normal(0, 0.02, 3)
    with jax.enable_x64(True):
      out = mano_jax.forward(models[k], pose, shape, trans, joint_order='interhand')
    coord[21 * k:21 * k + 21] = np.asarray(out.joints) * 1000.0
    fits[side] = {'pose': pose.tolist(), 'shape': shape.tolist(), 'trans': trans.tolist()}
  return fits, coord


SEQS = {'right': 'ROM03_RT_No_Occlusion', 'left': 'ROM03_LT_No_Occlusion',
        'interacting': '0051_dinosaur'}


def write(root, models, *, split='test', seed=0, frames=((0, 1200, 'interacting'),
          (0, 20683, 'right'), (0, 7, 'left'), (1, 31, 'interacting')),
          cameras=('400262', '400263'), no_mano=((1, 31),), hand_type_valid_0=(7,),
          write_images=True):
  """Writes a split; returns the truth: {'frames': {(cap, frame): {...}},
  'cameras': {(cap, camid): {...}}, 'annotations': [dict per annotation]}.

  frames: (capture, frame_idx, hand_type). no_mano: (capture, frame) pairs
  with no MANO_NeuralAnnot entry. hand_type_valid_0: frame ids whose
  annotations have hand_type_valid 0.
  """
  rng = np.random.default_rng(seed)
  ann_dir = os.path.join(root, 'annotations', split)
  os.makedirs(ann_dir, exist_ok=True)
  truth = {'frames': {}, 'cameras': {}, 'annotations': []}
  camera_json, joint_json, mano_json = {}, {}, {}
  images, annotations = [], []
  for cap in sorted({c for c, _, _ in frames}):
    entry = {'campos': {}, 'camrot': {}, 'focal': {}, 'princpt': {}}
    for camid in cameras:
      campos, camrot = look_at_camera(rng, [0.0, 0.0, 1000.0])
      focal = rng.uniform(1000, 1300, 2)
      princpt = np.array([167.0, 256.0]) + rng.normal(0, 3, 2)
      for key, val in (('campos', campos), ('camrot', camrot), ('focal', focal),
                       ('princpt', princpt)):
        entry[key][camid] = val.tolist()
      truth['cameras'][(cap, camid)] = dict(campos=campos, camrot=camrot, focal=focal,
                                            princpt=princpt)
    camera_json[str(cap)] = entry
  for cap, frame, hand_type in frames:
    fits, coord = world_hands(models, rng, hand_type)
    valid = np.zeros(42)
    valid[:21] = hand_type in ('right', 'interacting')
    valid[21:] = hand_type in ('left', 'interacting')
    valid[int(rng.integers(42))] = 0.0      # one invalid joint
    truth['frames'][(cap, frame)] = dict(fits=fits, world=coord, hand_type=hand_type)
    joint_json.setdefault(str(cap), {})[str(frame)] = {
        'world_coord': coord.tolist(), 'joint_valid': valid[:, None].tolist(),
        'hand_type': hand_type, 'hand_type_valid': 1}
    if (cap, frame) not in no_mano:
      mano_json.setdefault(str(cap), {})[str(frame)] = fits
    for camid in cameras:
      image_id = len(images)
      rel = f'Capture{cap}/{SEQS[hand_type]}/cam{camid}/image{frame}.jpg'
      images.append({'id': image_id, 'file_name': rel, 'width': 334, 'height': 512,
                     'capture': cap, 'subject': cap, 'seq_name': SEQS[hand_type],
                     'camera': camid, 'frame_idx': frame})
      aid = 1000 + image_id
      bbox = rng.uniform(0, 200, 4).tolist()
      htv = 0 if frame in hand_type_valid_0 else 1
      annotations.append({'id': aid, 'image_id': image_id, 'bbox': bbox,
                          'joint_valid': valid[:, None].tolist(), 'hand_type': hand_type,
                          'hand_type_valid': htv})
      truth['annotations'].append(dict(annot_id=aid, image_id=image_id, capture=cap,
                                       frame=frame, camera=camid, file_name=rel, bbox=bbox,
                                       joint_valid=valid, hand_type=hand_type,
                                       hand_type_valid=htv))
      if write_images:
        path = os.path.join(root, 'images', split, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(path)
  files = {'data': {'images': images, 'annotations': annotations}, 'camera': camera_json,
           'joint_3d': joint_json, 'MANO_NeuralAnnot': mano_json}
  for key, obj in files.items():
    with open(os.path.join(ann_dir, f'InterHand2.6M_{split}_{key}.json'), 'w') as fh:
      json.dump(obj, fh)
  return truth


def rewrite(root, split, key, edit):
  """Loads one annotation file, applies edit(obj) (in place), writes it back."""
  path = os.path.join(root, 'annotations', split, f'InterHand2.6M_{split}_{key}.json')
  with open(path) as fh:
    obj = json.load(fh)
  edit(obj)
  with open(path, 'w') as fh:
    json.dump(obj, fh)
  return path


def private_copy(base, tmp_path):
  """(root, truth) of a copy of a written set `base` = (root, truth) under
  tmp_path, free to edit (the module-scoped original stays intact)."""
  root = str(tmp_path / 'ih')
  shutil.copytree(base[0], root)
  return root, base[1]
