"""grain pipeline: image/target consistency under augmentation, determinism,
exact resume, per-process shards."""

import copy
import dataclasses

import jax
import numpy as np
import pytest

import mano_jax
from a2p_jax.data import augment, pipeline
from a2p_jax.data.hands import load_hand_models
from a2p_jax.geometry.camera import project
from a2p_jax.models import camera

W, H = 334, 512
FOCAL = np.array([1100.0, 1100.0])
PRINCPT = np.array([167.0, 256.0])


def _make_source(n, seed=0):
  """Examples whose images have a white dot at every projected joint."""
  rng = np.random.default_rng(seed)
  models = load_hand_models()
  source = []
  for i in range(n):
    joints, mano = [], {}
    for side, model, x in (('right', models[0], -0.04), ('left', models[1], 0.05)):
      fit = {'pose': rng.normal(0, 0.3, 48), 'shape': rng.normal(0, 1, 10),
             'trans': np.array([x, 0.0, 0.9]) + rng.normal(0, 0.01, 3)}
      mano[side] = fit
      with jax.enable_x64(True):
        joints.append(np.asarray(mano_jax.forward(model, fit['pose'], fit['shape'], fit['trans'],
                                                  joint_order='interhand').joints) * 1000)
    joints = np.concatenate(joints)
    image = np.zeros((H, W, 3), np.uint8)
    uv = project(joints, FOCAL, PRINCPT)
    assert np.all((uv > 2) & (uv < [W - 3, H - 3])), 'fixture hands must be in view'
    for u, v in np.round(uv).astype(int):
      image[max(v - 2, 0):v + 3, max(u - 2, 0):u + 3] = 255
    source.append({'image': image, 'annot_id': i, 'joints_cam': joints,
                   'joint_valid': np.ones(42), 'hand_type': 'interacting',
                   'hand_type_valid': 1, 'bbox': np.array([50.0, 100.0, 200.0, 250.0]),
                   'camera': {'focal': FOCAL, 'princpt': PRINCPT}, 'mano': mano})
  return source, models


@pytest.fixture(scope='module')
def source():
  return _make_source(12)


def test_keypoints_land_on_the_image_dots(source):
  src, models = source
  cfg = pipeline.AugmentConfig(input_hw=(128, 128), color=0.0)
  rng = np.random.default_rng(1)
  seen_flip = seen_rot = False
  for k in range(16):
    drawn = pipeline._aug_params(cfg, copy.deepcopy(rng), True)
    out = pipeline.process(src[k % len(src)], rng, cfg=cfg, models=models, training=True)
    inside = np.all((out['joints_2d'] > 2) & (out['joints_2d'] < 125), -1)
    px = np.round(out['joints_2d'][inside]).astype(int)
    vals = out['image'][px[:, 1], px[:, 0], 0]
    assert np.mean(vals > 100) > 0.95, k
    seen_flip |= bool(out['flipped'])
    seen_rot |= drawn['rot'] != 0
  assert seen_flip and seen_rot


def test_3d_targets_match_mano_after_augmentation(source):
  src, models = source
  cfg = pipeline.AugmentConfig(input_hw=(128, 128), rotation_prob=1.0, flip_prob=1.0)
  out = pipeline.process(src[0], np.random.default_rng(2), cfg=cfg, models=models,
                         training=True)
  assert out['flipped'] == 1
  for k, model in enumerate(models):
    with jax.enable_x64(True):
      j = np.asarray(mano_jax.forward(model, out['mano_pose'][k].astype(np.float64),
                                      out['mano_shape'][k].astype(np.float64),
                                      out['mano_trans'][k].astype(np.float64),
                                      joint_order='interhand').joints)
    rel = j - j[20]
    np.testing.assert_allclose(rel, out['joints_rel'][21 * k:21 * (k + 1)], atol=2e-5)
  np.testing.assert_allclose(out['depth_rel'], out['joints_rel'][:, 2])
  # `affine` with focal/princpt is the crop's camera of the mirrored,
  # rotated example: the MANO joints land on joints_2d; no reflection.
  for k, model in enumerate(models):
    with jax.enable_x64(True):
      j = np.asarray(mano_jax.forward(model, out['mano_pose'][k].astype(np.float64),
                                      out['mano_shape'][k].astype(np.float64),
                                      out['mano_trans'][k].astype(np.float64),
                                      joint_order='interhand').joints) * 1000
    uv = camera.project(j[None] / 1000, out['affine'][None].astype(np.float64),
                        out['focal'][None].astype(np.float64),
                        out['princpt'][None].astype(np.float64))[0]
    np.testing.assert_allclose(uv, out['joints_2d'][21 * k:21 * (k + 1)], atol=1e-3)
  assert np.linalg.det(out['affine'][:, :2]) > 0


def _batches(ds, n):
  it = iter(ds)
  return [next(it) for _ in range(n)]


def test_deterministic_and_exact_resume(source):
  src, models = source
  cfg = pipeline.AugmentConfig(input_hw=(64, 64))
  make = lambda seed: pipeline.make_dataset(src, cfg=cfg, models=models, batch_size=4,
                                            seed=seed, training=True)
  a, b = _batches(make(0), 5), _batches(make(0), 5)
  for x, y in zip(a, b):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  c = _batches(make(1), 1)
  assert not np.array_equal(a[0]['image'], c[0]['image'])
  it = iter(make(0))
  for _ in range(3):
    next(it)
  state = it.get_state()
  rest = [next(it) for _ in range(2)]
  it2 = iter(make(0))
  it2.set_state(state)
  for x, y in zip(rest, [next(it2) for _ in range(2)]):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  # 12 examples, batch 4: batches 3 and 4 are the second epoch, reshuffled.
  ids_epoch1 = np.concatenate([a[i]['rel_root'][:, 0] for i in range(3)])
  ids_epoch2 = np.concatenate([a[i]['rel_root'][:, 0] for i in range(3, 5)])
  assert not np.allclose(ids_epoch1[:8], ids_epoch2)


def test_process_shards_are_disjoint_and_eval_is_plain(source):
  src, models = source
  cfg = pipeline.AugmentConfig(input_hw=(64, 64))
  seen = []
  for p in range(2):
    ds = pipeline.make_dataset(src, cfg=cfg, models=models, batch_size=2, seed=0,
                               training=False, process_index=p, process_count=2)
    batches = list(ds)
    assert len(batches) == 3
    seen.append(np.concatenate([b['rel_root'] for b in batches]))
    assert all(np.all(b['flipped'] == 0) for b in batches)
  expect = np.stack([(s['joints_cam'][41] - s['joints_cam'][20]) / 1000 for s in src])
  np.testing.assert_allclose(np.concatenate(seen), expect, atol=1e-6)
  with pytest.raises(ValueError, match='processes'):
    pipeline.shard_for_process(3, 0, 4)


def test_missing_image_names_the_file(tmp_path, source):
  src, models = source
  ex = dict(src[0])
  del ex['image']
  ex['image_path'] = str(tmp_path / 'nope.jpg')
  with pytest.raises(OSError, match='nope.jpg'):
    pipeline.process(ex, np.random.default_rng(0), cfg=pipeline.AugmentConfig(),
                     models=models, training=False)


def test_2d_only_examples_supervise_2d_and_flip_with_the_hands(source):
  """A COCO-like example (2D keypoints only, no 3D, no MANO): joints_2d are
  its annotated keypoints in the crop, valid exactly where annotated; under
  a flip they move to the other hand's slots, mirrored; 3D stays invalid.
  An example with both keeps its 3D-projected targets where it has no 2D."""
  src, models = source
  base = src[0]
  uv = project(base['joints_cam'], FOCAL, PRINCPT)
  img_valid = np.zeros(42, np.float32)
  img_valid[[0, 5, 20, 30, 41]] = 1   # some right and some left keypoints
  ex = dict(base, joints_cam=np.zeros((42, 3)), joint_valid=np.zeros(42),
            mano={'right': None, 'left': None}, joints_img=uv + 3.0, joints_img_valid=img_valid)
  cfg = pipeline.AugmentConfig(input_hw=(128, 128), rotation_prob=1.0)
  for flip_prob in (0.0, 1.0):
    rng = np.random.default_rng(3)
    drawn = pipeline._aug_params(dataclasses.replace(cfg, flip_prob=flip_prob),
                                 copy.deepcopy(rng), True)
    out = pipeline.process(ex, rng, cfg=dataclasses.replace(cfg, flip_prob=flip_prob),
                           models=models, training=True)
    assert out['flipped'] == flip_prob
    pixel_affine = augment.crop_affine(*_crop_of(out, drawn, ex, uv + 3.0, img_valid, cfg),
                                       cfg.input_hw, rot_rad=drawn['rot'],
                                       flip=bool(flip_prob), image_width=W)
    want = augment.apply_affine(pixel_affine, uv + 3.0)
    valid = img_valid
    if flip_prob:
      want, valid = np.concatenate([want[21:], want[:21]]), np.concatenate([valid[21:],
                                                                           valid[:21]])
    np.testing.assert_array_equal(out['joints_2d_valid'], valid)
    np.testing.assert_allclose(out['joints_2d'][valid > 0], want[valid > 0], atol=1e-3)
    assert not out['joint_valid'].any() and not out['mano_valid'].any()
    assert not out['rel_root_valid']
  # 3D + partial 2D: projected 3D where the 2D annotation is missing.
  both = dict(base, joints_img=uv + 3.0, joints_img_valid=img_valid)
  a = pipeline.process(both, np.random.default_rng(4), cfg=cfg, models=models, training=False)
  np.testing.assert_array_equal(a['joints_2d_valid'], 1)
  full = np.vstack([a['affine'].astype(np.float64), [0, 0, 1]])
  source_px = augment.apply_affine(np.linalg.inv(full)[:2], a['joints_2d'].astype(np.float64))
  np.testing.assert_allclose(source_px, np.where(img_valid[:, None] > 0, uv + 3.0, uv),
                             atol=1e-3)


def _crop_of(out, drawn, ex, uv, valid, cfg):
  """The crop centre and side `process` chose, recomputed from its inputs."""
  if out['flipped']:
    uv = uv.copy()
    uv[:, 0] = W - 1 - uv[:, 0]
  box = augment.hands_box(uv, valid, extend=cfg.box_extend)
  return box[:2] + drawn['shift'] * box[2], box[2] * drawn['scale']


def test_mixture_probabilities_follow_interwild():
  # Two 3D sets concatenated (by size), one 2D set: the groups share equally.
  p = pipeline.mixture_probabilities([300, 100, 50], ['3d', '3d', '2d'], [1, 1, 1])
  np.testing.assert_allclose(p, [0.375, 0.125, 0.5])
  p = pipeline.mixture_probabilities([300, 100], ['3d', '3d'], [1, 3])
  np.testing.assert_allclose(p, [0.5, 0.5])
  with pytest.raises(ValueError, match='weights'):
    pipeline.mixture_probabilities([1, 2], ['a', 'b'], [1, -1])
  with pytest.raises(ValueError, match="group 'b'"):
    pipeline.mixture_probabilities([1, 2], ['a', 'b'], [1, 0])


def test_mixed_dataset_draws_by_weight_joins_per_source_and_resumes(source):
  src, models = source
  a = [dict(ex, annot_id=1000 + i) for i, ex in enumerate(src[:6])]
  b = [dict(ex, annot_id=2000 + i) for i, ex in enumerate(src[6:])]
  tag = lambda t: (lambda ex: dict(ex, bbox=np.full(4, t, np.float64)))
  parts = [pipeline.MixPart(a, 0.75, tag(1.0), 'a'), pipeline.MixPart(b, 0.25, tag(2.0), 'b')]
  cfg = pipeline.AugmentConfig(input_hw=(32, 32))
  seen = []

  class Spy:  # records which source each drawn example came from
    def __init__(self, part, k):
      self.part, self.k = part, k

    def __call__(self, ex):
      seen.append(int(ex['annot_id']) // 1000)
      assert seen[-1] == self.k, 'a join got another source\'s example'
      return self.part.join(ex)

  spied = [pipeline.MixPart(p.source, p.probability, Spy(p, k + 1), p.name)
           for k, p in enumerate(parts)]
  make = lambda ps: pipeline.make_mixed_dataset(ps, cfg=cfg, models=models, batch_size=4,
                                                seed=0)
  batches = _batches(make(spied), 10)
  assert abs(seen.count(1) / len(seen) - 0.75) < 0.1, seen
  again = _batches(make(parts), 10)
  for x, y in zip(batches, again):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  it = iter(make(parts))
  for _ in range(4):
    next(it)
  state = it.get_state()
  rest = [next(it) for _ in range(3)]
  it2 = iter(make(parts))
  it2.set_state(state)
  for x, y in zip(rest, [next(it2) for _ in range(3)]):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
