"""Two hands from images with a trained checkpoint.

    python -m a2p_jax.infer IMAGE [IMAGE ...] --checkpoint WORKDIR --out DIR \
        [--boxes "x,y,w,h;x,y,w,h" ...] [--mano_dir DIR] [--stage2 WORKDIR] \
        [--focal fx,fy] [--princpt cx,cy]

Per image, DIR/<image name>/ gets hands.json (both hands' MANO parameters:
axis-angle pose (48, flat_hand_mean=False, MANO's default), betas (10),
transl (3, m) such that mano_jax.forward(model, pose, betas, transl) is the
camera-space mesh; plus the wrist and 21 joints in InterHand order, m),
right.obj / left.obj (camera space, m) and overlay.png (the shaded meshes over
the image, beside a side view of them).

The crop: `--boxes` gives the right and the left hand's box in pixels (one
"x,y,w,h;x,y,w,h" per image, in order); their union, extended by 1.3, is
the two-hand crop, as in training. With no boxes, the whole image is the
two-hand crop (a square around the image: give boxes for small hands).
The camera: `--focal`/`--princpt` in pixels; by default focal = the longer
image side (a 53 degree field of view) and princpt = the image centre. The
absolute depth scales with the focal; the hand shapes and poses do not.

Stage 2 (`--stage2 WORKDIR` of a stage-2 run) repairs interpenetrating
hands: gated on the two hands' 2D boxes overlapping (the given boxes, or
the projected predicted meshes) and the meshes penetrating.
"""

import argparse
import json
import os
import sys
import time
from typing import List, Optional, Sequence

import numpy as np
from PIL import Image

import mano_jax
from a2p_jax.inference import draw
from a2p_jax.inference.restore import check_outside_runs
from a2p_jax.inference.stage1 import augment_config, crop_inputs, load_stage1, mano_joints
from a2p_jax.inference.stage2 import apply_stage2, load_repair
from a2p_jax.runtime.checkpoint import CheckpointError

SIDES = ('right', 'left')


class InferenceError(ValueError):
  pass


def parse_boxes(text: str, where: str) -> np.ndarray:
  """'x,y,w,h;x,y,w,h' -> (2, 4) float (right, left)."""
  try:
    boxes = np.array([[float(v) for v in part.split(',')] for part in text.split(';')])
  except ValueError:
    boxes = None
  if boxes is None or boxes.shape != (2, 4) or not np.all(np.isfinite(boxes)) \
      or np.any(boxes[:, 2:] <= 0):
    raise InferenceError(f'{where}: boxes must be "x,y,w,h;x,y,w,h" (right then left hand, '
                         f'positive sizes), got {text!r}')
  return boxes


def _pair(text: Optional[str], name: str) -> Optional[np.ndarray]:
  if text is None:
    return None
  try:
    v = np.array([float(x) for x in text.split(',')])
  except ValueError:
    v = None
  if v is None or v.shape != (2,) or not np.all(np.isfinite(v)):
    raise InferenceError(f'--{name} must be two numbers "a,b", got {text!r}')
  return v


def _check_camera(focal, princpt):
  """focal (2,) > 0 and princpt (2,) finite, in pixels (None: the default)."""
  out = []
  for name, v in (('focal', focal), ('princpt', princpt)):
    if v is not None:
      try:
        v = np.asarray(v, np.float64)
      except (TypeError, ValueError):
        v = np.zeros(0)
      if v.shape != (2,) or not np.all(np.isfinite(v)) or (name == 'focal' and np.any(v <= 0)):
        raise InferenceError(f'{name} must be two finite numbers (px)'
                             + (', both positive' if name == 'focal' else '')
                             + f', got {v.tolist()}')
    out.append(v)
  return out


def load_image(path: str) -> np.ndarray:
  if not os.path.isfile(path):
    raise InferenceError(f'{path}: no such image file')
  try:
    with Image.open(path) as im:
      return np.asarray(im.convert('RGB'))
  except Exception as e:  # noqa: BLE001 - PIL raises many kinds on corrupt files
    raise InferenceError(f'{path}: cannot read the image ({type(e).__name__}: {e})') from None


def hands_json(pred: dict, i: int, models) -> dict:
  """MANO parameters of sample i of a stage-1 prediction, camera space."""
  out = {}
  for k, side in enumerate(SIDES):
    rot = mano_jax.rot6d_to_matrix(pred['pose_6d'][i, k])
    pose = np.asarray(mano_jax.matrix_to_axis_angle(rot), np.float64).reshape(48)
    betas = np.asarray(pred['betas'][i, k], np.float64)
    fw = mano_jax.forward(models[k], pose, betas, joint_order='interhand')
    transl = pred['root_cam'][i, k] - np.asarray(fw.joints, np.float64)[20]
    out[side] = {'pose': pose.tolist(), 'betas': betas.tolist(), 'transl': transl.tolist(),
                 'wrist': np.asarray(pred['root_cam'][i, k]).tolist(),
                 'joints': np.asarray(pred['joints'][i, 21 * k:21 * (k + 1)]).tolist()}
  out['rel_root'] = np.asarray(pred['rel_root'][i]).tolist()
  out['units'] = 'm'
  return out


def run(images: Sequence[str], checkpoint: str, out_dir: str, *,
        boxes: Optional[Sequence[str]] = None, stage2: Optional[str] = None,
        mano_dir: Optional[str] = None, focal=None, princpt=None) -> List[dict]:
  """Runs inference on image files; returns one record per image."""
  if boxes and len(boxes) != len(images):
    raise InferenceError(f'--boxes given {len(boxes)} times for {len(images)} images '
                         f'(one "x,y,w,h;x,y,w,h" per image, or none)')
  parsed = [parse_boxes(b, f'--boxes #{i + 1}') for i, b in enumerate(boxes)] if boxes else None
  focal, princpt = _check_camera(focal, princpt)
  check_outside_runs(out_dir, checkpoint, stage2)
  pixels = [load_image(p) for p in images]  # all readable before any work
  t0 = time.perf_counter()
  config, predict, step, models = load_stage1(checkpoint, mano_dir=mano_dir)
  fix = load_repair(stage2, mano_dir=mano_dir)[0] if stage2 else None  # both read before work
  t_load = time.perf_counter() - t0
  hw = augment_config(config).input_hw
  items = [crop_inputs(img, parsed[i] if parsed else None, hw, focal=focal, princpt=princpt)
           for i, img in enumerate(pixels)]
  batch = {k: np.stack([it[k] for it in items]) for k in items[0]}
  predict(batch)  # compile once, so the latency below is a steady-state one
  t0 = time.perf_counter()
  pred = predict(batch)
  t_stage1 = (time.perf_counter() - t0) / len(images)
  t_stage2, repaired = 0.0, np.zeros(len(images), bool)
  if stage2:
    img_boxes = None
    if parsed is not None:  # user boxes (x, y, w, h) -> (x_min, y_min, x_max, y_max)
      img_boxes = np.stack([np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], -1) for b in parsed])
    apply_stage2(pred, fix, models, batch, img_boxes, joints=mano_joints(config))  # compile
    t0 = time.perf_counter()
    pred, repaired = apply_stage2(pred, fix, models, batch, img_boxes,
                                  joints=mano_joints(config))
    t_stage2 = (time.perf_counter() - t0) / len(images)
  records = []
  names = [os.path.splitext(os.path.basename(p))[0] for p in images]
  if len(set(names)) < len(names):  # e.g. several cam*/image0.jpg: number them
    names = [f'{i:03d}_{n}' for i, n in enumerate(names)]
  for i, path in enumerate(images):
    name = names[i]
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    rec = hands_json(pred, i, models)
    rec.update(image=os.path.abspath(path), checkpoint=os.path.abspath(checkpoint),
               step=int(step), stage2_applied=bool(repaired[i]),
               camera={'focal': batch['focal'][i].tolist(), 'princpt': batch['princpt'][i].tolist()})
    with open(os.path.join(d, 'hands.json'), 'w') as f:
      json.dump(rec, f, indent=1)
    for k, side in enumerate(SIDES):
      mano_jax.export_mesh(os.path.join(d, f'{side}.obj'), pred['verts'][i, k], models[k].faces)
    draw.save_figure(pixels[i], pred['verts'][i], [m.faces for m in models], batch['focal'][i],
                     batch['princpt'][i], os.path.join(d, 'overlay.png'),
                     f'{name} (red: right, blue: left)')
    records.append(rec)
  print(f'checkpoint {checkpoint} step {step} (load {t_load:.1f} s); '
        f'latency per image: stage 1 {1000 * t_stage1:.1f} ms'
        + (f', stage 2 {1000 * t_stage2:.1f} ms ({int(repaired.sum())} of {len(images)} '
           f'repaired)' if stage2 else '') + '; wrote ' + ', '.join(os.path.join(out_dir, n) for n in names[:3]) + (' ...' if len(names) > 3 else ''))
  return records


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('images', nargs='+')
  p.add_argument('--checkpoint', required=True, help='stage-1 training workdir')
  p.add_argument('--out', required=True)
  p.add_argument('--boxes', action='append', help='"x,y,w,h;x,y,w,h" right;left, per image')
  p.add_argument('--stage2', help='stage-2 training workdir (repairs penetrations)')
  p.add_argument('--mano_dir', help='MANO folder (default: the checkpoint\'s config)')
  p.add_argument('--focal', help='fx,fy in pixels')
  p.add_argument('--princpt', help='cx,cy in pixels')
  a = p.parse_args(argv)
  try:
    run(a.images, a.checkpoint, a.out, boxes=a.boxes, stage2=a.stage2, mano_dir=a.mano_dir,
        focal=_pair(a.focal, 'focal'), princpt=_pair(a.princpt, 'princpt'))
  except (InferenceError, CheckpointError, FileNotFoundError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
