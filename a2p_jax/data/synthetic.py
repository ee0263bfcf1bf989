"""Synthetic two-hand data set, written in EXACTLY the InterHand2.6M v1.0 layout.

    python -m a2p_jax.data.synthetic --out DIR --num_frames N --seed S \
        [--mano_dir DIR] [--num_cameras C] [--penetrating_fraction F] \
        [--single_hand_fraction F] [--image_size H,W] [--workers K] [--rig dome|capture]

Hands come from `a2p_jax.data.hands.load_hand_models` (the procedural hand,
which is NOT MANO, unless --mano_dir points at real MANO files). Each frame
has natural poses (pose-PCA samples within joint limits, `poses.py`; the
coefficients' spread is the procedural asset's `hands_coeffs_std`, used for
real MANO too, where the joint limits keep the poses anatomical), two
hands brought into contact along a random direction with a random relative
rotation (then moved apart by a small gap, or pushed into each other for the
penetrating frames), or a single hand; it is seen by every camera of its
capture's rig and rasterized (`raster.py`) over a cluttered background with
random lighting and a per-subject skin tone. Output, all official files
exactly as InterHand2.6M's:

  DIR/images/{split}/Capture<c>/<seq_name>/cam<camid>/image<frame>.jpg
  DIR/annotations/{split}/InterHand2.6M_{split}_data.json        COCO-like
  DIR/annotations/{split}/InterHand2.6M_{split}_camera.json      mm, camrot
  DIR/annotations/{split}/InterHand2.6M_{split}_joint_3d.json    world mm
  DIR/annotations/{split}/InterHand2.6M_{split}_MANO_NeuralAnnot.json
      world fits: world_vertices = mano_jax.forward(model, pose, shape,
      trans).vertices (trans in m, flat_hand_mean=False); null = absent hand
and the extras (not in InterHand2.6M):

  DIR/annotations/{split}/synthetic_{split}_meta.json   keyed like joint_3d:
      {capture: {frame: {'penetration_volume_cm3', 'penetrating',
                         'contact_offset_mm', 'hand_type'}}}
      penetration volume = a2p_jax.geometry.penetration_volume of the world
      meshes (cm^3); 0 by construction for the other frames (they are moved
      apart until no vertex of either hand crosses the other's surface).
  DIR/priors/{split}/<same path as the image>.npz   oracle 2D priors:
      keypoints (42, 2) float32 px (u, v), InterHand order, right 0-20 then
          left 21-41 (pixel (row i, col j) has its centre at (u, v) = (j, i));
      keypoint_visible (42,) uint8: 1 if the hand is present, the joint
          projects inside the image and the surface seen at its pixel is the
          same hand no more than render.VISIBLE_DEPTH_M in front of the joint;
      segmentation (H, W) uint8, `render.PART_LABELS`, 0 background;
      depth (H, W) float16 camera z in metres, 0 background.
  DIR/synthetic_config.json: the generator's options.

Splits: the frames are cut into train/val/test (80/10/10, at least one val
and test frame when N >= 3), each split into captures of at most
`frames_per_capture` frames; a capture is one subject (skin tone) filmed
by the rig: by default one dome of `num_cameras` cameras shared by every
capture and split, as in InterHand2.6M (`--rig capture`: each capture its
own cameras, so the test split sees viewpoints training never saw).
Deterministic given the options: every frame, rig and image draws from its
own numpy Generator seeded by (seed, stream, index).

This module writes the files; what each frame is comes from
`synthetic_frames`, where the hands go from `contact`, the pixels and priors
from `render`.
"""

import argparse
import concurrent.futures
import dataclasses
import io
import json
import os
import sys
import time
import zipfile

import numpy as np
from PIL import Image
from tqdm import tqdm

import mano_jax
from a2p_jax.data import contact
from a2p_jax.data import hands
from a2p_jax.data import poses
from a2p_jax.data import render
from a2p_jax.data.synthetic_frames import (
    RIG_STREAM, RIGS, SIDES, SPLITS, VIEW_STREAM, Options, plan_frames, present_sides,
    sample_frame, sample_rig, sample_subject)

# Sequence names by frame kind (InterHand2.6M keeps single-hand and
# interacting sequences apart).
SEQ_NAMES = {'interacting': '0000_synthetic_interacting',
             'right': '0001_synthetic_right', 'left': '0002_synthetic_left'}


# ----------------------------------------------------------------------------
# Files: encoded images and priors, JSON records.

def encode_jpeg(rgb, quality):
  """JPEG bytes of an (H, W, 3) uint8 image."""
  buf = io.BytesIO()
  Image.fromarray(rgb).save(buf, format='JPEG', quality=quality)
  return buf.getvalue()


def encode_priors(priors):
  """An .npz (np.load reads it) with fast deflate and fixed timestamps."""
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, 'w', zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
    for key, value in priors.items():
      arr = io.BytesIO()
      np.lib.format.write_array(arr, np.asarray(value), allow_pickle=False)
      zf.writestr(zipfile.ZipInfo(key + '.npy', date_time=(1980, 1, 1, 0, 0, 0)),
                  arr.getvalue(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=1)
  return buf.getvalue()


def _floats(x):
  return np.asarray(x, np.float64).tolist()


def joint_3d_record(result, hand_type):
  """joint_3d.json entry: world_coord 42x3 mm, joint_valid 42x1, hand_type."""
  coord = np.zeros((42, 3))
  valid = np.zeros((42, 1))
  for side in present_sides(hand_type):
    sl = slice(0, 21) if side == 'right' else slice(21, 42)
    coord[sl] = result['joints_mm'][side]
    valid[sl] = 1.0
  return dict(world_coord=_floats(coord), joint_valid=_floats(valid),
              hand_type=hand_type, hand_type_valid=1)


def mano_record(result, draw, hand_type):
  sides = present_sides(hand_type)
  return {s: (dict(pose=_floats(draw['pose'][s]), shape=_floats(draw['shape'][s]),
                   trans=_floats(result['trans'][s])) if s in sides else None)
          for s in SIDES}


def rig_index(opts: Options, capture: int) -> int:
  """Which rig films `capture`: one dome for all ('dome'), or its own."""
  return 0 if opts.rig == 'dome' else capture


def camera_record(rig):
  keys = ('campos', 'camrot', 'focal', 'princpt')
  return {k: {cid: _floats(cam[k]) for cid, cam in rig.items()} for k in keys}


def image_path(split, capture, hand_type, camid, frame_idx):
  """Path relative to images/{split}/ (and priors/{split}/ without .jpg)."""
  return (f'Capture{capture}/{SEQ_NAMES[hand_type]}/cam{camid}/'
          f'image{frame_idx}.jpg')


def read_camera(cam_json_entry, camid):
  """One camera of camera.json back as the arrays `render.render_view` uses."""
  return {k: np.asarray(cam_json_entry[k][camid], np.float64)
          for k in ('campos', 'camrot', 'focal', 'princpt')}


# ----------------------------------------------------------------------------
# The generator.

def generate(out_dir, opts: Options, *, progress=True):
  """Writes the data set to out_dir; returns a summary dict (counts, timings)."""
  opts.validate()
  t_start = time.perf_counter()
  height, width = opts.image_size
  models = hands.load_hand_models(opts.mano_dir)
  coeffs_std = np.load(os.path.join(mano_jax.io.ASSET_DIR, 'procedural_hand_right.npz'))[
      'hands_coeffs_std']
  priors = [poses.pose_prior(m, coeffs_std) for m in models]
  part_faces = {s: (np.asarray(m.faces, np.int64), render.part_labels(m, s))
                for s, m in zip(SIDES, models)}
  specs = plan_frames(opts)
  captures = sorted({s.capture for s in specs})
  rigs = {c: sample_rig(np.random.default_rng([opts.seed, RIG_STREAM, rig_index(opts, c)]),
                        opts.num_cameras, height, width, opts.orientation_deg) for c in captures}
  # The rig as written: JSON floats round-trip exactly, so render with them.
  rigs = {c: {cid: read_camera(camera_record(rig), cid) for cid in rig}
          for c, rig in rigs.items()}
  subjects = {c: sample_subject(opts.seed, c) for c in captures}
  mano = contact.ManoBatch(models, min(opts.chunk_frames, len(specs)))
  noise = render.noise_field(opts.seed, height, width)

  out = {split: dict(images=[], annotations=[], joint_3d={}, mano={}, meta={},
                     camera={}) for split in SPLITS}
  for spec in specs:
    out[spec.split]['camera'][str(spec.capture)] = camera_record(rigs[spec.capture])
  total_images = len(specs) * opts.num_cameras
  bar = tqdm(total=total_images, unit='img', disable=not progress, desc='synthetic')
  pool = concurrent.futures.ThreadPoolExecutor(opts.workers)
  pending = []

  def finish(job):
    spec, camid, fut, image_id = job
    bbox = fut.result()
    out[spec.split]['annotations'][image_id]['bbox'] = bbox
    bar.update(1)

  try:
    for start in range(0, len(specs), opts.chunk_frames):
      chunk = specs[start:start + opts.chunk_frames]
      draws = [sample_frame(opts.seed, s, priors, opts.orientation_deg) for s in chunk]
      # Contacts in this thread: the pool is busy rendering the previous chunk.
      results = contact.solve_chunk(chunk, draws, mano)
      # Views of the previous chunk rendered while this one was solved.
      for job in pending:
        finish(job)
      pending = []
      for spec, draw, res in zip(chunk, draws, results):
        res.update(hand_type=spec.hand_type, light_dir=draw['light_dir'],
                   light_color=draw['light_color'], ambient=draw['ambient'],
                   joints_mm={s: res['joints'][s].astype(np.float64) * 1000.0 for s in SIDES})
        subject = subjects[spec.capture]
        albedo = {s: render.skin_albedo(subject, m, draw['skin_jitter'][k])
                  for k, (s, m) in enumerate(zip(SIDES, models))}
        split = out[spec.split]
        cap, fr = str(spec.capture), str(spec.frame_idx)
        split['joint_3d'].setdefault(cap, {})[fr] = joint_3d_record(res, spec.hand_type)
        split['mano'].setdefault(cap, {})[fr] = mano_record(res, draw, spec.hand_type)
        split['meta'].setdefault(cap, {})[fr] = dict(
            penetration_volume_cm3=res['volume_cm3'], penetrating=spec.penetrating,
            contact_offset_mm=None if res['offset_m'] is None else res['offset_m'] * 1000.0,
            hand_type=spec.hand_type)
        for c, (camid, cam) in enumerate(rigs[spec.capture].items()):
          rel = image_path(spec.split, spec.capture, spec.hand_type, camid, spec.frame_idx)
          image_id = len(split['images'])
          split['images'].append(dict(
              id=image_id, file_name=rel, width=width, height=height, capture=spec.capture,
              subject=spec.capture, seq_name=SEQ_NAMES[spec.hand_type], camera=camid,
              frame_idx=spec.frame_idx))
          split['annotations'].append(dict(
              id=image_id, image_id=image_id, bbox=None,
              joint_valid=joint_3d_record(res, spec.hand_type)['joint_valid'],
              hand_type=spec.hand_type, hand_type_valid=1))
          rng = np.random.default_rng([opts.seed, VIEW_STREAM, spec.index, c])
          fut = pool.submit(_render_and_write, out_dir, spec.split, rel, res, albedo, cam,
                            height, width, rng, part_faces, noise, opts.jpeg_quality)
          pending.append((spec, camid, fut, image_id))
    for job in pending:
      finish(job)
  finally:
    pool.shutdown(wait=True)
    bar.close()

  for split in SPLITS:
    if not out[split]['images']:
      continue
    _write_split(out_dir, split, out[split])
  with open(os.path.join(out_dir, 'synthetic_config.json'), 'w') as f:
    json.dump(dict(dataclasses.asdict(opts), generator='a2p_jax.data.synthetic',
                   hand_model=models[0].name, part_labels=render.PART_LABELS), f, indent=1)
  elapsed = time.perf_counter() - t_start
  return dict(frames=len(specs), images=total_images, seconds=elapsed,
              images_per_second=total_images / elapsed,
              penetrating=sum(s.penetrating for s in specs))


def _render_and_write(out_dir, split, rel, res, albedo, cam, height, width, rng,
                      part_faces, noise, quality):
  rgb, priors, bbox = render.render_view(res, albedo, cam, height, width, rng, part_faces, noise)
  img_path = os.path.join(out_dir, 'images', split, rel)
  prior_path = os.path.join(out_dir, 'priors', split, rel[:-len('.jpg')] + '.npz')
  for path, data in ((img_path, encode_jpeg(rgb, quality)), (prior_path, encode_priors(priors))):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
      f.write(data)
  return bbox


def _write_split(out_dir, split, rec):
  ann_dir = os.path.join(out_dir, 'annotations', split)
  os.makedirs(ann_dir, exist_ok=True)
  files = {
      f'InterHand2.6M_{split}_data.json': dict(images=rec['images'],
                                               annotations=rec['annotations']),
      f'InterHand2.6M_{split}_camera.json': rec['camera'],
      f'InterHand2.6M_{split}_joint_3d.json': rec['joint_3d'],
      f'InterHand2.6M_{split}_MANO_NeuralAnnot.json': rec['mano'],
      f'synthetic_{split}_meta.json': rec['meta'],
  }
  for name, obj in files.items():
    with open(os.path.join(ann_dir, name), 'w') as f:
      json.dump(obj, f)


def _parse_size(text):
  try:
    h, w = (int(x) for x in text.split(','))
  except ValueError:
    raise argparse.ArgumentTypeError(f'--image_size must be H,W (ints), got {text!r}')
  return (h, w)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--out', required=True, help='output directory (InterHand2.6M layout)')
  p.add_argument('--num_frames', type=int, required=True)
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--mano_dir', default=None,
                 help='folder with MANO_RIGHT.pkl / MANO_LEFT.pkl (default: procedural hand, not MANO)')
  p.add_argument('--num_cameras', type=int, default=Options.num_cameras)
  p.add_argument('--penetrating_fraction', type=float, default=Options.penetrating_fraction)
  p.add_argument('--single_hand_fraction', type=float, default=Options.single_hand_fraction)
  p.add_argument('--image_size', type=_parse_size, default=Options.image_size,
                 help='H,W in pixels (default 512,334 like InterHand2.6M)')
  p.add_argument('--frames_per_capture', type=int, default=Options.frames_per_capture)
  p.add_argument('--workers', type=int, default=Options.workers)
  p.add_argument('--orientation_deg', type=float, default=Options.orientation_deg,
                 help='spread of hand orientations and camera azimuths (180: uniform)')
  p.add_argument('--rig', choices=RIGS, default=Options.rig,
                 help="'dome': one set of cameras for every capture, as InterHand2.6M "
                      "(default); 'capture': each capture its own cameras")
  args = p.parse_args(argv)
  opts = Options(num_frames=args.num_frames, seed=args.seed, num_cameras=args.num_cameras,
                 image_size=args.image_size, penetrating_fraction=args.penetrating_fraction,
                 single_hand_fraction=args.single_hand_fraction,
                 frames_per_capture=args.frames_per_capture, mano_dir=args.mano_dir,
                 workers=args.workers, orientation_deg=args.orientation_deg, rig=args.rig)
  try:
    opts.validate()
  except ValueError as e:
    p.error(str(e))
  summary = generate(args.out, opts)
  print(json.dumps(summary))
  return 0


if __name__ == '__main__':
  sys.exit(main())
