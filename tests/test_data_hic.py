"""HIC reader on a small HIC.json + PLY fixture written here."""

import json
import logging
import os
import pickle

import jax
import numpy as np
import pytest
from PIL import Image

import mano_jax
from a2p_jax.data import hic
from a2p_jax.data.interhand26m import AnnotationError
from a2p_jax.geometry.camera import project

# InterHand order per hand -> index into MANO's 16 joints + 5 tips, written out
# by hand as the reference (thumb4..1, index4..1, middle4..1, ring4..1,
# pinky4..1, wrist).
IH_FROM_MANO21 = [16, 15, 14, 13, 17, 3, 2, 1, 18, 6, 5, 4, 19, 12, 11, 10, 20, 9, 8, 7, 0]


def write_ply(path, verts, faces, fmt):
  header = ['ply', f'format {fmt} 1.0', 'comment made by the test',
            f'element vertex {len(verts)}', 'property float x', 'property float y',
            'property float z', 'property uchar red', f'element face {len(faces)}',
            'property list uchar int vertex_indices', 'end_header']
  with open(path, 'wb') as fh:
    fh.write(('\n'.join(header) + '\n').encode())
    if fmt == 'ascii':
      for v in verts:
        fh.write(f'{v[0]:.9g} {v[1]:.9g} {v[2]:.9g} 200\n'.encode())
      for f in faces:
        fh.write(f'3 {f[0]} {f[1]} {f[2]}\n'.encode())
    else:
      end = '<' if fmt == 'binary_little_endian' else '>'
      rec = np.zeros(len(verts), [('x', end + 'f4'), ('y', end + 'f4'), ('z', end + 'f4'),
                                  ('r', 'u1')])
      rec['x'], rec['y'], rec['z'], rec['r'] = verts[:, 0], verts[:, 1], verts[:, 2], 200
      fh.write(rec.tobytes())
      for f in faces:
        fh.write(np.uint8(3).tobytes() + np.asarray(f, end + 'i4').tobytes())


def camera_mesh(model, rng, side):
  pose = rng.normal(0, 0.3, 48)
  trans = np.array([0.06 if side == 'right' else -0.06, 0.0, 0.5])
  with jax.enable_x64(True):
    out = mano_jax.forward(model, pose, rng.normal(0, 1, 10), trans)
  return np.asarray(out.vertices)


def write_hic(tmp_path, models):
  """A HIC folder under tmp_path (a pathlib.Path) with four annotations: both
  hands, right only (left null), left only, no bbox. Returns (root, truth)."""
  rng = np.random.default_rng(0)
  root = tmp_path / 'HIC' / 'data'
  os.makedirs(root / 'meshes')
  images, annotations, truth = [], [], []
  cases = [('interacting', ('right', 'left'), 'ascii', [10.0, 20.0, 300.0, 200.0]),
           ('right', ('right',), 'binary_little_endian', [1.0, 2.0, 3.0, 4.0]),
           ('left', ('left',), 'binary_big_endian', [5.0, 6.0, 7.0, 8.0]),
           ('interacting', ('right', 'left'), 'binary_little_endian', None)]
  for i, (hand_type, sides, fmt, bbox) in enumerate(cases):
    name = f'{i + 1:02d}/{i:06d}.jpg'
    os.makedirs(root / os.path.dirname(name), exist_ok=True)
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(root / name)
    images.append({'id': 100 + i, 'file_name': name, 'width': 640, 'height': 480,
                   'seq_name': f'{i + 1:02d}'})
    ann = {'id': i, 'image_id': 100 + i, 'hand_type': hand_type,
           'right_mano_path': None, 'left_mano_path': None,
           'joint_2d': rng.uniform(0, 400, (28, 2)).tolist(), 'joint_valid': [1] * 28}
    if bbox is not None:
      ann['bbox'] = bbox
    verts = {}
    for side in sides:
      model = models[0 if side == 'right' else 1]
      v = camera_mesh(model, rng, side)
      rel = f'meshes/{i}_{side}.ply'
      write_ply(root / rel, v, np.asarray(model.faces), fmt)
      ann[f'{side}_mano_path'] = rel
      # What the file holds: float32 in binary, 9 digits in ascii.
      verts[side] = v.astype(np.float32).astype(np.float64)
    annotations.append(ann)
    truth.append(dict(verts=verts, bbox=bbox, hand_type=hand_type, image=str(root / name)))
  with open(root / 'HIC.json', 'w') as fh:
    json.dump({'images': images, 'annotations': annotations}, fh)
  return str(root), truth


@pytest.fixture
def hic_root(tmp_path, models):
  return write_hic(tmp_path, models)


def test_items_and_joints_vs_reference(hic_root, models):
  root, truth = hic_root
  ds = hic.HIC(root)
  assert len(ds) == 4
  np.testing.assert_array_equal(ds.annot_ids, [ds[i]['annot_id'] for i in range(len(ds))])
  assert ds.annot_ids.dtype == np.int64
  for i, t in enumerate(truth):
    ex = ds[i]
    assert ex['image_path'] == t['image'] and ex['hand_type'] == t['hand_type']
    assert ex['image_size'] == (480, 640) and ex['hand_type_valid'] == 1
    np.testing.assert_array_equal(ex['camera']['focal'], [525.0, 525.0])
    np.testing.assert_array_equal(ex['camera']['princpt'], [319.5, 239.5])
    assert ex['mano'] == {'right': None, 'left': None}
    assert ex['joints_2d_hic'].shape == (28, 2)
    for k, side in enumerate(('right', 'left')):
      if side not in t['verts']:
        assert ex['verts'][side] is None
        assert not ex['joint_valid'][21 * k:21 * k + 21].any()
        assert not ex['joints_cam'][21 * k:21 * k + 21].any()
        continue
      v = ex['verts'][side]
      assert v.shape == (models[k].num_vertices, 3) and v.dtype == np.float64
      np.testing.assert_allclose(v, t['verts'][side], atol=1e-8)
      # InterWild: joint regressor on the mesh, fingertip vertices, InterHand order.
      reg = np.asarray(models[k].J_regressor, np.float64) @ v
      mano21 = np.concatenate([reg, v[list(models[k].tip_ids)]])
      np.testing.assert_allclose(ex['joints_cam'][21 * k:21 * k + 21],
                                 mano21[IH_FROM_MANO21] * 1000.0, atol=1e-9)
      assert ex['joint_valid'][21 * k:21 * k + 21].all()
    if t['bbox'] is not None:
      np.testing.assert_array_equal(ex['bbox'], t['bbox'])
  # No bbox in the annotation: the box of the projected meshes.
  ex = ds[3]
  uv = np.concatenate([project(v, [525.0, 525.0], [319.5, 239.5])
                       for v in ex['verts'].values()])
  np.testing.assert_allclose(ex['bbox'], [*uv.min(0), *(uv.max(0) - uv.min(0))], atol=1e-9)


def test_picklable_for_worker_processes(hic_root):
  root, _ = hic_root
  ds = hic.HIC(root)
  first = ds[0]
  again = pickle.loads(pickle.dumps(ds))
  np.testing.assert_array_equal(again[0]['joints_cam'], first['joints_cam'])


def test_mesh_joints_match_mano_joints_order(models):
  """The regressed joints follow the same order as mano_jax's 'interhand' joints:
  on the rest mesh J_regressor gives the rest joints exactly."""
  with jax.enable_x64(True):
    out = mano_jax.forward(models[0], np.zeros(48), np.zeros(10), np.zeros(3),
                           flat_hand_mean=True, joint_order='interhand')
  got = hic.mesh_joints_interhand(models[0], np.asarray(out.vertices))
  np.testing.assert_allclose(got, np.asarray(out.joints), atol=1e-12)


def test_finds_json_under_data_and_only_test_split(hic_root):
  root, _ = hic_root
  assert len(hic.HIC(os.path.dirname(root))) == 4
  with pytest.raises(ValueError, match='test split'):
    hic.HIC(root, 'train')
  with pytest.raises(FileNotFoundError, match='HIC.json'):
    hic.HIC(os.path.join(root, 'meshes'))


def test_missing_files_are_counted_or_strict(hic_root, caplog):
  root, truth = hic_root
  os.remove(os.path.join(root, 'meshes', '1_right.ply'))
  os.remove(truth[2]['image'])
  with caplog.at_level(logging.WARNING):
    ds = hic.HIC(root)
  assert len(ds) == 2 and ds.summary['missing_files'] == 2
  np.testing.assert_array_equal(ds.annot_ids, [0, 3])  # the skipped ones are not there
  assert 'HIC' in caplog.text
  with pytest.raises(FileNotFoundError, match='2 annotations'):
    hic.HIC(root, strict=True)


def _edit(root, fn):
  path = os.path.join(root, 'HIC.json')
  obj = json.load(open(path))
  fn(obj)
  json.dump(obj, open(path, 'w'))


@pytest.mark.parametrize('edit,what', [
    (lambda o: o['annotations'][0].pop('right_mano_path'), "'right_mano_path'"),
    (lambda o: o['annotations'][1].__setitem__('hand_type', 'two'), 'hand_type'),
    (lambda o: o['annotations'][1].__setitem__('image_id', 5), 'image_id 5'),
    (lambda o: o['images'][0].pop('file_name'), "'file_name'"),
    (lambda o: o['annotations'][0].__setitem__('bbox', [1, 2, 3]), 'bbox'),
    (lambda o: o['annotations'][1].__setitem__('right_mano_path', None), 'both null'),
    (lambda o: o.pop('images'), "'images'"),
])
def test_malformed_json_raises_naming_the_key(hic_root, edit, what):
  root, _ = hic_root
  _edit(root, edit)
  with pytest.raises(AnnotationError, match='HIC.json') as e:
    hic.HIC(root)
  assert what in str(e.value)


def test_bad_meshes_raise_naming_the_file(hic_root, models):
  root, _ = hic_root
  path = os.path.join(root, 'meshes', '1_right.ply')
  write_ply(path, np.zeros((10, 3)), np.zeros((0, 3), int), 'ascii')
  with pytest.raises(ValueError, match='1_right.ply: 10 vertices'):
    hic.HIC(root)[1]
  data = open(path, 'rb').read()
  open(path, 'wb').write(data.replace(b'element vertex 10', b'element vertex 99'))
  with pytest.raises(ValueError, match='1_right.ply: PLY: truncated'):
    hic.HIC(root)[1]
  open(path, 'wb').write(b'not a ply\n')
  with pytest.raises(ValueError, match='1_right.ply: not a PLY'):
    hic.HIC(root)[1]
  path = os.path.join(root, 'meshes', '2_left.ply')
  data = open(path, 'rb').read()
  open(path, 'wb').write(data[:len(data) // 3])
  with pytest.raises(ValueError, match='2_left.ply: PLY: truncated'):
    hic.HIC(root)[2]
