"""Sapiens teacher with tiny TorchScript modules built here (same input and
output shapes as the real checkpoints; nothing is downloaded)."""

import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip('torch')
import torch.nn.functional as F  # noqa: E402

from a2p_jax import teacher as teacher_lib  # noqa: E402
from a2p_jax.teacher import precompute as pre  # noqa: E402
from a2p_jax.teacher import sapiens  # noqa: E402


class FakePose(torch.nn.Module):
  """Heatmaps: the red channel pooled (stride 4) + 10 x channel index."""

  def forward(self, x):
    assert x.shape[2] == 1024 and x.shape[3] == 768
    ch = torch.arange(308, dtype=x.dtype).view(1, 308, 1, 1)
    return F.avg_pool2d(x[:, :1], 4) + 10.0 * ch


class FakeSeg(torch.nn.Module):
  """Logits: right hand (14) where the image is bright, background (0) elsewhere."""

  def forward(self, x):
    bright = (F.avg_pool2d(x[:, :1], 2) > 0).to(x.dtype)
    zeros = torch.zeros_like(bright)
    parts = [10.0 * (1.0 - bright)] + [zeros] * 13 + [10.0 * bright] + [zeros] * 13
    return torch.cat(parts, 1)


class FakeDepth(torch.nn.Module):
  """Relative depth: the green channel."""

  def forward(self, x):
    return x[:, 1:2] * 1.0


@pytest.fixture(scope='module')
def ckpt_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp('sapiens')
  for task, mod in (('pose', FakePose()), ('seg', FakeSeg()), ('depth', FakeDepth())):
    os.makedirs(d / task)
    torch.jit.script(mod).save(str(d / task / f'sapiens_0.3b_{task}_torchscript.pt2'))
  (d / 'pose' / 'sapiens_0.3b_pose_bfloat16.pt2').write_bytes(b'skipped')
  return str(d)


pytestmark = pytest.mark.filterwarnings('ignore:`torch.jit.*deprecated:DeprecationWarning')


def _example(aid, square_uv=(62, 90)):
  img = np.zeros((200, 150, 3), np.uint8)
  u, v = square_uv
  img[v - 2:v + 3, u - 2:u + 3, 0] = 255
  img[v - 2:v + 3, u - 2:u + 3, 1] = np.arange(5, dtype=np.uint8)[None, :] * 40 + 60
  return {'annot_id': aid, 'image': img, 'bbox': np.array([50.0, 60.0, 40.0, 30.0]),
          'joints_cam': np.ones((42, 3)), 'joint_valid': np.zeros(42),
          'camera': {'focal': np.array([100.0, 100.0]), 'princpt': np.array([75.0, 100.0])}}


def test_find_checkpoints(ckpt_dir, tmp_path):
  files = sapiens.find_checkpoints(directory=ckpt_dir)
  assert {t: os.path.basename(f) for t, f in files.items()} == {
      t: f'sapiens_0.3b_{t}_torchscript.pt2' for t in sapiens.TASKS}
  explicit = os.path.join(ckpt_dir, 'seg', 'sapiens_0.3b_seg_torchscript.pt2')
  assert sapiens.find_checkpoints(seg=explicit, directory=ckpt_dir)['seg'] == explicit
  (tmp_path / 'a_pose.pt2').write_bytes(b'x')
  (tmp_path / 'b_pose.pt').write_bytes(b'x')
  with pytest.raises(ValueError, match='several \\*pose\\*'):
    sapiens.find_checkpoints(directory=str(tmp_path))
  with pytest.raises(FileNotFoundError, match='seg'):
    sapiens.find_checkpoints(pose=str(tmp_path / 'a_pose.pt2'), directory=str(tmp_path))
  with pytest.raises(ValueError, match='--sapiens_pose'):
    sapiens.find_checkpoints()


def test_sapiens_maps_channels_and_affine(ckpt_dir):
  assert 'torch' in sys.modules  # (the teacher package itself never imports it)
  t = sapiens.SapiensTeacher(directory=ckpt_dir, device='cpu')
  exs = [_example(1), _example(2, square_uv=(75, 60))]
  out = t(exs)
  assert len(out) == 2
  for ex, (maps, affine) in zip(exs, out):
    assert maps.shape == (32, 24, 46) and maps.dtype == np.float32
    # Box: bbox 40 x 30 at (50, 60) -> width 80, height 106.7, centred.
    box = teacher_lib.teacher_box(ex)
    np.testing.assert_allclose(box, [30, 75 - 80 * 2 / 3, 80, 80 * 4 / 3])
    np.testing.assert_allclose(affine, teacher_lib.box_affine(box, (32, 24)), rtol=1e-6)
    # Goliath 21 + i -> InterHand channel i: the fake puts 10 x index in each.
    kp = maps[..., :42]
    np.testing.assert_allclose(kp - kp[..., :1], np.broadcast_to(10.0 * np.arange(42), kp.shape),
                               atol=1e-3)
    assert abs(np.median(kp[..., 0]) - (10 * 21 + (0 - 123.5) / 58.5)) < 1e-3
    # The square's heatmap peak is at its map position (affine) within a cell.
    cell = affine[:, :2] @ np.array([ex['image'][..., 0].nonzero()[1].mean(),
                                     ex['image'][..., 0].nonzero()[0].mean()]) + affine[:, 2]
    r, q = np.unravel_index(np.argmax(kp[..., 5]), (32, 24))
    assert abs(q - cell[0]) <= 1 and abs(r - cell[1]) <= 1
    # Segmentation: not-hand / right / left sum to 1, right hand at the square.
    seg = maps[..., 42:45]
    np.testing.assert_allclose(seg.sum(-1), 1.0, atol=1e-5)
    assert np.unravel_index(np.argmax(seg[..., 1]), (32, 24)) == (r, q)
    assert seg[..., 2].max() < 1e-3 and seg[..., 0].min() > -1e-6
    # Depth: zero off the hand, normalised (zero-median-ish, finite) on it.
    depth = maps[..., 45]
    assert np.all(np.isfinite(depth))
    assert np.all(depth[seg[..., 1] == 0] == 0)
    assert np.abs(depth).max() > 0


def test_sapiens_precompute_store(ckpt_dir, tmp_path):
  t = sapiens.SapiensTeacher(directory=ckpt_dir, device='cpu')
  exs = [_example(10), _example(11, square_uv=(70, 80)), _example(12, square_uv=(55, 100))]
  st = pre.precompute(t, exs, str(tmp_path / 's'), batch=2, shard_size=2, progress=False)
  assert len(st) == 3 and st.num_channels == 46 and st.meta['teacher'] == 'sapiens'
  assert teacher_lib.prior_channels(st, 'segmentation,depth') == 4
  f = np.asarray(st.meta['flip_matrix'])
  assert f[43, 44] == 1 and f[44, 43] == 1 and f[0, 21] == 1 and f[45, 45] == 1
  maps, affine = st.get(11)
  want, want_aff = t([exs[1]])[0]
  np.testing.assert_array_equal(maps, want.astype(np.float16))
  np.testing.assert_array_equal(affine, want_aff)


def test_precompute_per_source_of_a_mix(ckpt_dir, tmp_path):
  """A prior store per source (here COCO-WholeBody's fixture, 2D keypoints
  only: the teacher crop comes from them) joins that source's examples by
  annot_id in the mix."""
  from a2p_jax import teacher as teacher_lib
  from a2p_jax.data import open_source, pipeline
  from a2p_jax.data.hands import load_hand_models
  from tests import coco_wholebody_fixtures
  root = str(tmp_path / 'coco')
  coco_wholebody_fixtures.write(root, load_hand_models(None))
  ds = open_source('coco_wholebody', root, 'val', progress=False)
  t = sapiens.SapiensTeacher(directory=ckpt_dir, device='cpu')
  box = teacher_lib.teacher_box(ds[0])
  uv = np.asarray(ds[0]['joints_img'])[np.asarray(ds[0]['joints_img_valid']) > 0]
  assert np.all(uv >= box[:2]) and np.all(uv <= box[:2] + box[2:])   # the crop holds the hands
  st = pre.precompute(t, ds, str(tmp_path / 'store'), batch=2, shard_size=2, progress=False)
  st.check_covers(teacher_lib.source_annot_ids(ds))
  cfg = pipeline.AugmentConfig(input_hw=(64, 64), prior_hw=(2, 2))
  part = pipeline.MixPart(ds, 1.0, teacher_lib.join_priors(st), 'coco_wholebody')
  batch = next(iter(pipeline.make_mixed_dataset([part], cfg=cfg, models=load_hand_models(None),
                                                batch_size=2, seed=0)))
  assert batch['priors'].shape == (2, 2, 2, 46) and np.all(np.isfinite(batch['priors']))
