"""Small COCO-WholeBody data sets in the official layout (InterWild's
data/MSCOCO tree), with NeuralAnnot MANO fits the tests choose.

    <root>/images/{train,val}2017/<12-digit id>.jpg          (tiny images)
    <root>/annotations/coco_wholebody_{train,val}_v1.0.json
    <root>/annotations/MSCOCO_train_MANO_NeuralAnnot.json

The quirks of the real files are kept: COCO's full annotation records
(segmentation polygons, crowd RLE, body/foot/face keypoints), JSON bools for
*_valid, invalid hands as all-zero keypoints and boxes, visibility 2, 1 and
float confidences in (0, 1) (example_gt.json), x = y = 0 where v = 0,
several people on one image, images without people, boxes that leave the
image, NeuralAnnot entries with a null hand and entries for annotations
InterWild skips. Each fitted hand has its own camera (NeuralAnnot's crop
camera, focal 5000 at 256 px, mapped back to the image) and its keypoints are
the projections of its MANO joints, so fits and keypoints agree exactly.
"""

import json
import os
import pathlib
import shutil

import jax
import numpy as np
from PIL import Image

import mano_jax

# COCO-WholeBody hand order (wrist; thumb1..4; forefinger1..4; middle1..4;
# ring1..4; pinky1..4, 1 at the base, 4 the tip) as indices into mano_jax's
# 'mano' order (wrist, index1-3, middle1-3, pinky1-3, ring1-3, thumb1-3, then
# the tips of thumb, index, middle, ring, pinky). Written out by hand, not
# derived from mano_jax.joints, so the reader's mapping is checked against it.
COCO_FROM_MANO = [0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20]
SIDES = ('right', 'left')
IMAGE_HW = (480, 640)


def wholebody_path(root, split):
  return os.path.join(root, 'annotations', f'coco_wholebody_{split}_v1.0.json')


def mano_path(root):
  return os.path.join(root, 'annotations', 'MSCOCO_train_MANO_NeuralAnnot.json')


def hand_fit(model, rng, centre_px):
  """A camera-space fit and its NeuralAnnot camera around `centre_px`."""
  crop = rng.uniform(40.0, 120.0)
  focal = np.full(2, 5000.0 * crop / 256.0) * (1.0 + rng.normal(0, 0.01, 2))
  princpt = np.asarray(centre_px, np.float64) + rng.normal(0, 2.0, 2)
  pose = rng.normal(0, 0.3, 48)
  pose[:3] = rng.normal(0, 1.5, 3)
  shape = rng.normal(0, 1, 10)
  trans = np.array([0.0, 0.0, 5.0]) + rng.normal(0, 0.05, 3)
  with jax.enable_x64(True):
    out = mano_jax.forward(model, pose, shape, trans, joint_order='mano')
    joints, verts = np.asarray(out.joints), np.asarray(out.vertices)
  uv = joints[:, :2] / joints[:, 2:] * focal + princpt
  return dict(pose=pose, shape=shape, trans=trans, focal=focal, princpt=princpt,
              verts=verts, uv_mano=uv)


def visibilities(rng, n=21):
  """COCO-WholeBody's mix: 2, 1, float confidences and some 0."""
  v = rng.choice([2, 1, 0.5, 0], size=n, p=[0.4, 0.3, 0.2, 0.1]).astype(object)
  for i in range(n):
    if v[i] == 0.5:
      v[i] = float(rng.uniform(0.005, 0.4))
    elif v[i] == 0:
      v[i] = 0.0 if rng.random() < 0.5 else 0
    else:
      v[i] = int(v[i])
  v[0] = 2                          # the wrist labelled
  v[1] = float(rng.uniform(0.01, 0.05))   # a low but positive confidence
  v[2] = 0.0                        # not labelled
  return list(v)


def hand_entry(rng, uv_coco, valid):
  """(kpts list (63,), box [x, y, w, h], truth) of one hand as the file has it."""
  if not valid:
    return [0.0] * 63, [0.0, 0.0, 0.0, 0.0], None
  vis = visibilities(rng)
  labelled = np.array([v > 0 for v in vis])
  xy = np.where(labelled[:, None], uv_coco, 0.0)
  kpts = [float(c) for k in range(21) for c in (xy[k, 0], xy[k, 1])]
  kpts = [x for k in range(21) for x in (kpts[2 * k], kpts[2 * k + 1], vis[k])]
  lo, hi = xy[labelled].min(0), xy[labelled].max(0)
  box = [round(float(lo[0]), 2), round(float(lo[1]), 2), round(float(hi[0] - lo[0]), 2),
         round(float(hi[1] - lo[1]), 2)]
  return kpts, box, dict(xy=xy, labelled=labelled)


def _polygon(rng, box):
  x, y, w, h = box
  return [[float(c) for c in np.round(np.stack([x + rng.uniform(0, w, 8),
                                                 y + rng.uniform(0, h, 8)], -1).ravel(), 2)]]


def annotation(rng, aid, image_id, *, valid=(True, True), uv=(None, None), iscrowd=0,
               num_keypoints=17, person_box=None, hand_boxes=(None, None)):
  """A full COCO-WholeBody annotation record and the truth of its hands."""
  person_box = person_box or [float(v) for v in np.round(
      [rng.uniform(50, 200), rng.uniform(30, 100), rng.uniform(150, 300),
       rng.uniform(200, 350)], 2)]
  rec = {'segmentation': _polygon(rng, person_box), 'num_keypoints': num_keypoints,
         'area': round(person_box[2] * person_box[3] * 0.6, 3), 'iscrowd': iscrowd,
         'keypoints': [float(v) for v in np.round(rng.uniform(0, 400, 51), 2)],
         'image_id': image_id, 'bbox': person_box, 'category_id': 1, 'id': aid,
         'face_box': [float(v) for v in np.round(rng.uniform(10, 60, 4), 2)],
         'foot_kpts': [float(v) for v in np.round(rng.uniform(0, 400, 18), 2)],
         'face_kpts': [float(v) for v in np.round(rng.uniform(0, 400, 204), 2)],
         'face_valid': True, 'foot_valid': False}
  hands = {}
  for side, ok, points, box in zip(SIDES, valid, uv, hand_boxes):
    if ok and points is None:
      points = rng.uniform(100, 400, (2,)) + rng.normal(0, 15, (21, 2))
    kpts, auto_box, truth = hand_entry(rng, points, ok)
    rec[f'{side}hand_kpts'] = kpts
    rec[f'{side}hand_box'] = box if box is not None else auto_box
    rec[f'{side}hand_valid'] = bool(ok)
    hands[side] = truth
  if iscrowd:
    # Crowd regions are RLE in COCO.
    rec['segmentation'] = {'counts': [int(c) for c in rng.integers(1, 50, 12)],
                           'size': list(IMAGE_HW)}
  return rec, hands


def _image(image_id, split):
  name = f'{image_id:012d}.jpg'
  return {'license': 4, 'file_name': name,
          'coco_url': f'http://images.cocodataset.org/{split}2017/{name}',
          'height': IMAGE_HW[0], 'width': IMAGE_HW[1], 'date_captured': '2013-11-19 21:22:42',
          'flickr_url': f'http://farm8.staticflickr.com/7015/{image_id}_z.jpg', 'id': image_id}


def _header():
  return {'info': {'description': 'COCO-WholeBody', 'version': '1.0', 'year': '2020'},
          'licenses': [{'url': 'http://creativecommons.org/licenses/by/2.0/', 'id': 4,
                        'name': 'Attribution License'}],
          'categories': [{'supercategory': 'person', 'id': 1, 'name': 'person',
                          'keypoints': ['nose'] * 17, 'skeleton': [[16, 14]]}]}


# Train cases: (name, hands valid, fitted hands, extra annotation kwargs).
TRAIN_CASES = (
    ('interacting', (True, True), ('right', 'left'), {}),
    ('right', (True, False), ('right',), {}),
    ('left', (False, True), ('left',), {}),
    ('no_fit', (True, True), (), {}),
    ('right_with_left_fit', (True, False), ('right', 'left'), {}),
    ('right_box_outside', (True, True), ('left',),
     {'hand_boxes': ([700.0, 20.0, 30.0, 25.0], None)}),
    ('left_box_clipped', (False, True), (),
     {'hand_boxes': (None, [-12.5, 470.0, 40.0, 30.0])}),
)
# Annotations InterWild skips, by rule (the summary's names).
SKIP_CASES = (
    ('crowd', (False, False), {'iscrowd': 1, 'num_keypoints': 0}),
    ('no_keypoints', (True, True), {'num_keypoints': 0}),
    ('no_valid_hand', (False, False), {}),
    ('bad_person_box', (True, False), {'person_box': [100.0, 50.0, 0.0, 80.0]}),
)


def write(root, models, *, seed=0, write_images=True):
  """Writes train and val; returns {split: {'examples': {aid: truth}, 'skipped':
  {rule: [aid]}, 'annotations': n}}."""
  rng = np.random.default_rng(seed)
  os.makedirs(os.path.join(root, 'annotations'), exist_ok=True)
  truth = {}
  mano_json = {}
  for split in ('train', 'val'):
    cases = TRAIN_CASES if split == 'train' else TRAIN_CASES[:3]
    images, annotations = [], []
    examples, skipped = {}, {}
    base = 100 if split == 'train' else 500
    # Two people per image; the last image has nobody.
    image_ids = [base + 7 * k for k in range((len(cases) + len(SKIP_CASES)) // 2 + 2)]
    images = [_image(i, split) for i in image_ids]
    slot = 0
    for name, valid, fitted, kw in cases:
      aid = 400000 + 1000 * (split == 'val') + 11 * slot
      image_id = image_ids[slot // 2]
      slot += 1
      fits, uv = {}, [None, None]
      for k, side in enumerate(SIDES):
        if side in fitted:
          centre = rng.uniform([150, 120], [500, 360])
          fits[side] = hand_fit(models[k], rng, centre)
          uv[k] = fits[side]['uv_mano'][COCO_FROM_MANO]
      rec, hands = annotation(rng, aid, image_id, valid=valid, uv=uv, **kw)
      annotations.append(rec)
      if split == 'train' and name != 'no_fit':
        mano_json[str(aid)] = {side: None if side not in fits else {
            'mano_param': {'pose': fits[side]['pose'].tolist(),
                           'shape': fits[side]['shape'].tolist(),
                           'trans': fits[side]['trans'].tolist()},
            'cam_param': {'focal': fits[side]['focal'].tolist(),
                          'princpt': fits[side]['princpt'].tolist()}} for side in SIDES}
      examples[aid] = dict(case=name, image_id=image_id, valid=valid, fits=fits, hands=hands,
                           rec=rec, file_name=f'{image_id:012d}.jpg')
    for name, valid, kw in SKIP_CASES:
      aid = 400000 + 1000 * (split == 'val') + 11 * slot
      image_id = image_ids[slot // 2]
      slot += 1
      rec, _ = annotation(rng, aid, image_id, valid=valid, **kw)
      annotations.append(rec)
      skipped.setdefault(name, []).append(aid)
      if split == 'train' and name == 'no_valid_hand':
        mano_json[str(aid)] = {'right': None, 'left': None}
    data = dict(_header(), images=images, annotations=annotations)
    with open(wholebody_path(root, split), 'w') as fh:
      json.dump(data, fh)
    if write_images:
      folder = os.path.join(root, 'images', f'{split}2017')
      os.makedirs(folder, exist_ok=True)
      for img in images:
        Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(
            os.path.join(folder, img['file_name']))
    truth[split] = {'examples': examples, 'skipped': skipped, 'annotations': len(annotations)}
  with open(mano_path(root), 'w') as fh:
    json.dump(mano_json, fh)
  return truth


def rewrite(path, edit):
  """Loads a JSON file, applies edit(obj) (in place), writes it back."""
  obj = json.loads(pathlib.Path(path).read_text())
  edit(obj)
  pathlib.Path(path).write_text(json.dumps(obj))


def private_copy(base, tmp_path):
  """(root, truth) of a copy of a written set, free to edit."""
  root = str(tmp_path / 'coco')
  shutil.copytree(base[0], root)
  return root, base[1]
