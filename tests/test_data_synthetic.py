"""The synthetic data set: official InterHand2.6M files that parse and agree
with each other, priors consistent with them, penetration labels,
determinism; and the natural pose sampler's joint limits."""

import dataclasses
import glob
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

import mano_jax
from a2p_jax.data import contact
from a2p_jax.data import hands
from a2p_jax.data import poses
from a2p_jax.data import render
from a2p_jax.data import synthetic
from a2p_jax.data import synthetic_frames
from a2p_jax.geometry.camera import project

OPTS = synthetic.Options(num_frames=8, seed=0, num_cameras=2, penetrating_fraction=0.25,
                         single_hand_fraction=0.25, frames_per_capture=4)


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
  out = str(tmp_path_factory.mktemp('synthetic'))
  summary = synthetic.generate(out, OPTS, progress=False)
  return out, summary


def load_split(root, split):
  ann = os.path.join(root, 'annotations', split)
  read = lambda name: json.load(open(os.path.join(ann, name.format(s=split))))
  return dict(data=read('InterHand2.6M_{s}_data.json'), camera=read('InterHand2.6M_{s}_camera.json'),
              joint_3d=read('InterHand2.6M_{s}_joint_3d.json'),
              mano=read('InterHand2.6M_{s}_MANO_NeuralAnnot.json'),
              meta=read('synthetic_{s}_meta.json'))


def all_images(root):
  """(split, split files, image entry, annotation) for every image."""
  for split in synthetic_frames.SPLITS:
    if not os.path.isdir(os.path.join(root, 'annotations', split)):
      continue
    rec = load_split(root, split)
    anns = {a['image_id']: a for a in rec['data']['annotations']}
    for img in rec['data']['images']:
      yield split, rec, img, anns[img['id']]


def test_layout_and_official_structure(dataset):
  root, summary = dataset
  assert summary['images'] == 16
  entries = list(all_images(root))
  assert len(entries) == 16
  assert {e[0] for e in entries} == {'train', 'val', 'test'}
  pattern = re.compile(r'^Capture\d+/[^/]+/cam\d+/image[1-9]?\d*\.jpg$')
  for split, rec, img, ann in entries:
    assert pattern.match(img['file_name']), img['file_name']
    assert img['file_name'].endswith(f'/cam{img["camera"]}/image{img["frame_idx"]}.jpg')
    assert img['file_name'].startswith(f'Capture{img["capture"]}/{img["seq_name"]}/')
    path = os.path.join(root, 'images', split, img['file_name'])
    with Image.open(path) as im:
      assert im.format == 'JPEG' and im.size == (img['width'], img['height']) == (334, 512)
    assert set(img) == {'id', 'file_name', 'width', 'height', 'capture', 'subject',
                        'seq_name', 'camera', 'frame_idx'}
    assert set(ann) == {'id', 'image_id', 'bbox', 'joint_valid', 'hand_type', 'hand_type_valid'}
    assert isinstance(img['camera'], str)
    cap, fr = str(img['capture']), str(img['frame_idx'])
    cams = rec['camera'][cap]
    assert set(cams) == {'campos', 'camrot', 'focal', 'princpt'}
    assert np.asarray(cams['camrot'][img['camera']]).shape == (3, 3)
    j3d = rec['joint_3d'][cap][fr]
    assert np.asarray(j3d['world_coord']).shape == (42, 3)
    assert np.asarray(j3d['joint_valid']).shape == (42, 1)
    assert np.asarray(ann['joint_valid']).shape == (42, 1)
    assert j3d['hand_type'] == ann['hand_type']
    assert set(rec['mano'][cap][fr]) == {'right', 'left'}
    assert fr in rec['meta'][cap]
  # A frame index past 9 would show the missing zero padding; the tiny set
  # has frame_idx 0..3 per capture, so check the rule on the path builder.
  assert synthetic.image_path('train', 3, 'left', '400001', 12).endswith('/image12.jpg')


def test_world_joints_are_mano_of_the_world_fit(dataset):
  root, _ = dataset
  right, left = hands.load_hand_models()
  seen = set()
  for split, rec, img, ann in all_images(root):
    cap, fr = str(img['capture']), str(img['frame_idx'])
    if (split, cap, fr) in seen:
      continue
    seen.add((split, cap, fr))
    j3d = rec['joint_3d'][cap][fr]
    fits = rec['mano'][cap][fr]
    world = np.asarray(j3d['world_coord'])
    valid = np.asarray(j3d['joint_valid'])[:, 0]
    for side, model, sl in (('right', right, slice(0, 21)), ('left', left, slice(21, 42))):
      present = side in synthetic_frames.present_sides(j3d['hand_type'])
      assert (fits[side] is not None) == present
      np.testing.assert_array_equal(valid[sl], float(present))
      if not present:
        continue
      fit = fits[side]
      out = mano_jax.forward(model, np.asarray(fit['pose']), np.asarray(fit['shape']),
                             np.asarray(fit['trans']), joint_order='interhand')
      np.testing.assert_allclose(np.asarray(out.joints) * 1000.0, world[sl], atol=1e-3)
  assert len(seen) == 8


def test_priors_agree_with_cameras_and_joints(dataset):
  root, _ = dataset
  for split, rec, img, ann in all_images(root):
    cap, fr, camid = str(img['capture']), str(img['frame_idx']), img['camera']
    cam = rec['camera'][cap]
    rot, pos = np.asarray(cam['camrot'][camid]), np.asarray(cam['campos'][camid])
    world = np.asarray(rec['joint_3d'][cap][fr]['world_coord'])
    valid = np.asarray(rec['joint_3d'][cap][fr]['joint_valid'])[:, 0] > 0
    joints_cam = (world - pos) @ rot.T
    uv = project(joints_cam, cam['focal'][camid], cam['princpt'][camid])
    pr = np.load(os.path.join(root, 'priors', split, img['file_name'][:-4] + '.npz'))
    assert set(pr.files) == {'keypoints', 'keypoint_visible', 'segmentation', 'depth'}
    np.testing.assert_allclose(pr['keypoints'][valid], uv[valid], atol=1e-3)
    assert np.all(pr['keypoint_visible'][~valid] == 0)
    seg, depth = pr['segmentation'], pr['depth']
    assert seg.dtype == np.uint8 and depth.dtype == np.float16
    assert seg.shape == depth.shape == (512, 334)
    assert seg.max() < render.NUM_PART_LABELS
    np.testing.assert_array_equal(seg > 0, depth > 0)
    # Labels only of the hands that are there.
    hand_type = ann['hand_type']
    has_right, has_left = np.any((seg >= 1) & (seg <= 16)), np.any(seg >= 17)
    assert not has_right or hand_type in ('right', 'interacting')
    assert not has_left or hand_type in ('left', 'interacting')
    # Depth: camera z of the hands (about a metre away).
    z = depth[seg > 0].astype(np.float32)
    assert z.size and 0.5 < z.min() and z.max() < 1.5
    # Visible keypoints: on their own hand, no surface more than
    # VISIBLE_DEPTH_M in front (float16 depth: 1 mm slack).
    vis = pr['keypoint_visible'] > 0
    for k in np.flatnonzero(vis):
      u, v = np.round(pr['keypoints'][k]).astype(int)
      assert (seg[v, u] >= 17) == (k >= 21) and seg[v, u] > 0
      assert float(depth[v, u]) > joints_cam[k, 2] / 1000.0 - render.VISIBLE_DEPTH_M - 1e-3
    # The box holds every hand pixel.
    x, y, w, h = ann['bbox']
    ii, jj = np.nonzero(seg > 0)
    assert jj.min() >= x - 1 and jj.max() <= x + w + 1
    assert ii.min() >= y - 1 and ii.max() <= y + h + 1


def test_some_joints_are_occluded_and_some_visible(dataset):
  root, _ = dataset
  vis = [np.load(os.path.join(root, 'priors', s, img['file_name'][:-4] + '.npz'))['keypoint_visible']
         for s, _, img, ann in all_images(root) if ann['hand_type'] == 'interacting']
  vis = np.concatenate(vis)
  assert 0.1 < vis.mean() < 0.95


def test_penetrating_fraction_honoured_and_labelled(dataset):
  root, summary = dataset
  right, left = hands.load_hand_models()
  meta = {}
  for split, rec, img, ann in all_images(root):
    cap, fr = str(img['capture']), str(img['frame_idx'])
    meta[(split, cap, fr)] = (rec['meta'][cap][fr], rec['mano'][cap][fr])
  assert len(meta) == 8
  pen = [m for m, _ in meta.values() if m['penetrating']]
  assert len(pen) == round(0.25 * 8) == summary['penetrating']
  assert all(m['penetration_volume_cm3'] > 0 and m['hand_type'] == 'interacting'
             and m['contact_offset_mm'] < 0 for m in pen)
  assert sum(m['hand_type'] in ('right', 'left') for m, _ in meta.values()) == 2
  # The labels are the geometry's volume: recompute from the written fits.
  pairs, labels = [], []
  for m, fits in meta.values():
    if m['hand_type'] != 'interacting':
      assert m['penetration_volume_cm3'] == 0.0
      continue
    verts = [np.asarray(mano_jax.forward(model, np.asarray(fits[s]['pose']),
                                         np.asarray(fits[s]['shape']),
                                         np.asarray(fits[s]['trans'])).vertices)
             for s, model in (('right', right), ('left', left))]
    pairs.append(verts)
    labels.append(m['penetration_volume_cm3'])
  vol = contact.penetration_volumes_m3(pairs, (right.faces, left.faces)) * 1e6
  np.testing.assert_allclose(vol, labels, rtol=1e-4, atol=1e-6)
  assert np.sum(vol > 0) == len(pen)


def test_same_seed_same_bytes_other_seed_other_images(dataset, tmp_path):
  root, _ = dataset
  again = str(tmp_path / 'again')
  synthetic.generate(again, OPTS, progress=False)
  files = sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, '**', '*'),
                                                              recursive=True) if os.path.isfile(p))
  files2 = sorted(os.path.relpath(p, again) for p in glob.glob(os.path.join(again, '**', '*'),
                                                                recursive=True) if os.path.isfile(p))
  assert files == files2
  assert any(f.endswith('.json') for f in files) and any(f.endswith('.npz') for f in files)
  for f in files:
    with open(os.path.join(root, f), 'rb') as a, open(os.path.join(again, f), 'rb') as b:
      assert a.read() == b.read(), f
  other = str(tmp_path / 'other')
  synthetic.generate(other, OPTS.__class__(**{**OPTS.__dict__, 'seed': 1}), progress=False)
  a = open(os.path.join(root, 'annotations/train/InterHand2.6M_train_joint_3d.json'), 'rb').read()
  b = open(os.path.join(other, 'annotations/train/InterHand2.6M_train_joint_3d.json'), 'rb').read()
  assert a != b


def test_cli_image_size_and_errors(tmp_path, capsys):
  out = str(tmp_path / 'cli')
  assert synthetic.main(['--out', out, '--num_frames', '8', '--seed', '2', '--num_cameras', '1',
                         '--image_size', '96,128', '--penetrating_fraction', '0']) == 0
  summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert summary['images'] == 8 and summary['penetrating'] == 0
  jpgs = glob.glob(os.path.join(out, 'images', '*', '*', '*', '*', '*.jpg'))
  assert len(jpgs) == 8
  with Image.open(jpgs[0]) as im:
    assert im.size == (128, 96)
  data = json.load(open(os.path.join(out, 'annotations/train/InterHand2.6M_train_data.json')))
  assert data['images'][0]['width'] == 128 and data['images'][0]['height'] == 96
  with pytest.raises(SystemExit):
    synthetic.main(['--out', out, '--num_frames', '4', '--image_size', '96x128'])
  with pytest.raises(SystemExit):
    synthetic.main(['--out', out, '--num_frames', '4', '--penetrating_fraction', '1.5'])


def test_plan_counts_and_splits():
  opts = synthetic_frames.Options(num_frames=100, penetrating_fraction=0.3,
                                  single_hand_fraction=0.2, frames_per_capture=30)
  specs = synthetic_frames.plan_frames(opts)
  assert sum(s.penetrating for s in specs) == 30
  assert sum(s.hand_type != 'interacting' for s in specs) == 20
  assert all(s.hand_type == 'interacting' for s in specs if s.penetrating)
  assert [sum(s.split == k for s in specs) for k in synthetic_frames.SPLITS] == [80, 10, 10]
  captures = {}
  for s in specs:
    captures.setdefault(s.capture, set()).add(s.split)
    assert 0 <= s.frame_idx < 30
  assert all(len(v) == 1 for v in captures.values())  # a capture is in one split
  keys = [(s.capture, s.frame_idx) for s in specs]
  assert len(set(keys)) == len(keys)


def test_part_label_table():
  assert render.PART_LABELS[1] == 'right_palm'
  assert render.PART_LABELS[2] == 'right_thumb_proximal'
  assert render.PART_LABELS[16] == 'right_pinky_distal'
  assert render.PART_LABELS[17] == 'left_palm'
  assert render.PART_LABELS[32] == 'left_pinky_distal'
  right, left = hands.load_hand_models()
  lab_r, lab_l = render.part_labels(right, 'right'), render.part_labels(left, 'left')
  assert set(lab_r.tolist()) == set(range(1, 17))
  np.testing.assert_array_equal(lab_l, lab_r + 16)  # the left hand mirrors the right
  # Fingertip vertices belong to their finger's distal segment.
  faces = np.asarray(right.faces)
  for k, tip in enumerate(right.tip_ids):
    f = np.flatnonzero(np.any(faces == tip, 1))
    assert np.all(lab_r[f] == 2 + 3 * k + 2), render.FINGERS[k]


def test_contact_distance_of_two_unit_cubes():
  # Cube B starts on cube A; moving along +x they stop touching at t = 1.
  v = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], float)
  f = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
  jitter = np.array([0.0, 0.013, 0.021])  # off the shared edges
  t = contact.contact_distance(v, f, v + jitter, f, [1.0, 0.0, 0.0])
  np.testing.assert_allclose(t, 1.0, atol=1e-12)
  t = contact.contact_distance(v, f, v + jitter, f, [1.0, 1.0, 0.0])
  np.testing.assert_allclose(t, np.sqrt(2) * (1 - 0.013), atol=1e-12)
  # Either winding: the generator seals with geometry.seal's outward caps.
  t = contact.contact_distance(v, f[:, ::-1], v + jitter, f[:, ::-1], [1.0, 1.0, 0.0])
  np.testing.assert_allclose(t, np.sqrt(2) * (1 - 0.013), atol=1e-12)


def test_pose_limits_hold_and_mean_pose_is_inside():
  std = np.load(os.path.join(mano_jax.io.ASSET_DIR, 'procedural_hand_right.npz'))['hands_coeffs_std']
  for model in hands.load_hand_models():
    prior = poses.pose_prior(model, std)
    np.testing.assert_allclose(poses.apply_limits(np.zeros(45), prior), 0, atol=1e-12)
    rng = np.random.default_rng(0)
    samples = np.stack([poses.sample_hand_pose(rng, prior, spread=2.0) for _ in range(64)])
    ang = poses.decompose((samples + prior['mean']).reshape(-1, 15, 3), prior['frames'])
    assert np.all(ang >= prior['lo'] - 1e-9) and np.all(ang <= prior['hi'] + 1e-9)
    # Wild poses are pulled in; the sampler is deterministic.
    wild = rng.normal(0, 1.5, 45)
    ang = poses.decompose((poses.apply_limits(wild, prior) + prior['mean']).reshape(15, 3),
                          prior['frames'])
    assert np.all(ang >= prior['lo'] - 1e-9) and np.all(ang <= prior['hi'] + 1e-9)
    np.testing.assert_array_equal(poses.sample_hand_pose(np.random.default_rng(5), prior),
                                  poses.sample_hand_pose(np.random.default_rng(5), prior))


def test_decompose_compose_round_trip():
  right, _ = hands.load_hand_models()
  frames = poses.joint_frames(right)
  x = np.random.default_rng(1).normal(0, 0.6, (10, 15, 3))
  np.testing.assert_allclose(poses.compose(poses.decompose(x, frames), frames), x, atol=1e-9)
  # Rows are orthonormal frames.
  np.testing.assert_allclose(frames @ np.swapaxes(frames, 1, 2), np.broadcast_to(np.eye(3), (15, 3, 3)),
                             atol=1e-12)


def test_orientation_spread_bounds_hand_rotations_and_camera_azimuths():
  rng = np.random.default_rng(0)
  angles = [np.linalg.norm(poses.random_rotvec(rng, np.radians(45))) for _ in range(500)]
  assert max(angles) <= np.radians(45) + 1e-12 and min(angles) < np.radians(10)
  full = [np.linalg.norm(poses.random_rotvec(rng)) for _ in range(500)]
  assert max(full) > np.radians(150)  # uniform over SO(3) by default
  rig = synthetic_frames.sample_rig(np.random.default_rng(1), 16, 512, 334, azimuth_deg=30.0)
  for cam in rig.values():
    pos = np.asarray(cam['campos'])
    assert abs(np.degrees(np.arctan2(pos[1], pos[0]))) <= 30.0 + 1e-9
  with pytest.raises(ValueError, match='orientation_deg'):
    synthetic_frames.Options(num_frames=4, orientation_deg=0.0).validate()


def test_one_dome_films_every_split(dataset):
  """Default rig 'dome': every capture of every split has the same cameras
  (InterHand2.6M's splits share its dome); 'capture' gives each its own."""
  root, _ = dataset
  cams = [(split, cap, rec) for split in synthetic_frames.SPLITS
          for rec in [load_split(root, split)['camera']] for cap in rec]
  assert sorted(c for _, c, _ in cams) == ['0', '1', '2', '3']  # train 0, 1; val 2; test 3
  first = cams[0][2][cams[0][1]]
  for _, cap, rec in cams:
    assert rec[cap] == first
  assert [synthetic.rig_index(OPTS, c) for c in range(4)] == [0, 0, 0, 0]
  own = dataclasses.replace(OPTS, rig='capture')
  assert [synthetic.rig_index(own, c) for c in range(4)] == [0, 1, 2, 3]
  with pytest.raises(ValueError, match='rig'):
    dataclasses.replace(OPTS, rig='studio').validate()


def test_a_set_made_with_other_cameras_is_refused_not_overwritten(tmp_path):
  """WORKDIR/data/synthetic written before the `rig` option (no 'rig' in its
  synthetic_config.json: each capture had its own cameras) is that set: used
  as is by a config asking for 'capture', refused by one asking for the dome,
  and left byte-identical either way."""
  from a2p_jax.configs import synthetic_tiny
  from a2p_jax.train import input as input_lib
  c = synthetic_tiny.get_config('test')
  root = tmp_path / 'data' / 'synthetic'
  root.mkdir(parents=True)
  marker = root / 'synthetic_config.json'
  marker.write_text(json.dumps({'num_frames': c.data.synthetic_frames, 'seed': c.data.synthetic_seed,
                                'image_size': list(c.data.synthetic_image_size),
                                'orientation_deg': c.data.synthetic_orientation_deg}))
  before = marker.read_bytes()
  with pytest.raises(ValueError, match=r"holds a synthetic set made with .*'rig': 'capture'.*"
                                       r"'rig': 'dome'"):
    input_lib.synthetic_root(c, str(tmp_path))
  c.data.synthetic_rig = 'capture'
  assert input_lib.synthetic_root(c, str(tmp_path)) == str(root)
  assert marker.read_bytes() == before and os.listdir(root) == ['synthetic_config.json']
