"""Shaded-mesh figures (a2p_jax.inference.draw): coverage, colours and
blending, depth order, shading, the side view and the report's figures,
checked on meshes whose pictures are known exactly."""

import time

import numpy as np
import pytest
from PIL import Image

from a2p_jax.inference import draw

FOCAL = (100.0, 100.0)
PRINCPT = (32.0, 24.0)
H, W = 48, 64
QUAD_FACES = np.array([[0, 1, 2], [0, 2, 3]])
CUBE_FACES = np.array([[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4],
                       [2, 3, 7], [2, 7, 6], [1, 2, 6], [1, 6, 5], [0, 4, 7], [0, 7, 3]])


def quad(cx, cy, z, half):
  """A square facing the camera, centred on (cx, cy, z) m."""
  return np.array([[cx - half, cy - half, z], [cx + half, cy - half, z],
                   [cx + half, cy + half, z], [cx - half, cy + half, z]])


def cube(centre, half):
  c = np.asarray(centre, np.float64)
  corners = np.array([[x, y, z] for z in (-1, 1) for x, y in
                      ((-1, -1), (1, -1), (1, 1), (-1, 1))], np.float64)
  return c + half * corners


def noise_image(seed=0):
  return np.random.default_rng(seed).integers(0, 256, (H, W, 3), np.uint8)


def expected_blend(img, color, alpha, shade=1.0):
  return np.round((1 - alpha) * img.astype(np.float64)
                  + alpha * shade * np.asarray(color, np.float64))


def box_mask(rows, cols):
  m = np.zeros((H, W), bool)
  m[rows[0]:rows[1] + 1, cols[0]:cols[1] + 1] = True
  return m


@pytest.mark.parametrize('k', [0, 1])
def test_covered_pixels_get_the_hands_colour_blended_and_others_are_unchanged(k):
  # Corners at +-0.105 m, 1 m away, f = 100: u in [21.5, 42.5], v in [13.5, 34.5],
  # so exactly the pixel centres of columns 22..42 and rows 14..34 are covered.
  img = noise_image()
  verts = np.full((2, 4, 3), np.nan)
  verts[k] = quad(0.0, 0.0, 1.0, 0.105)
  out = draw.render_hands(img, verts, [QUAD_FACES, QUAD_FACES], FOCAL, PRINCPT, alpha=0.6)
  assert out.shape == img.shape and out.dtype == np.uint8
  inside = box_mask((14, 34), (22, 42))
  np.testing.assert_array_equal(out[~inside], img[~inside])
  # A square facing the camera is lit at the maximum (shade 1) everywhere.
  np.testing.assert_allclose(out[inside], expected_blend(img[inside], draw.COLORS[k], 0.6),
                             atol=1)
  assert not np.shares_memory(out, img)


def test_the_nearer_hand_wins_where_both_overlap():
  img = np.full((H, W, 3), 100, np.uint8)
  faces = [QUAD_FACES, QUAD_FACES]

  def at_depth(du, z):
    """The square of test 1 moved du px right, scaled to depth z: it covers
    the same pixels at any depth."""
    return quad(du / FOCAL[0] * z, 0.0, z, 0.105 * z)

  # The right hand covers columns 17..37, the left 27..47: both 27..37.
  for near in (0, 1):
    z = (1.0, 2.0) if near == 0 else (2.0, 1.0)
    verts = np.stack([at_depth(-5, z[0]), at_depth(5, z[1])])
    out = draw.render_hands(img, verts, faces, FOCAL, PRINCPT, alpha=1.0)
    np.testing.assert_array_equal(out[14:35, 27:38],
                                  np.broadcast_to(draw.COLORS[near], (21, 11, 3)))
    np.testing.assert_array_equal(out[14:35, 17:27],
                                  np.broadcast_to(draw.COLORS[0], (21, 10, 3)))
    np.testing.assert_array_equal(out[14:35, 38:48],
                                  np.broadcast_to(draw.COLORS[1], (21, 10, 3)))
    assert np.all(out[:, :17] == 100) and np.all(out[:, 48:] == 100)


def test_shading_is_brightest_where_the_surface_faces_the_camera():
  img = np.zeros((H, W, 3), np.uint8)
  faces = [QUAD_FACES, QUAD_FACES]
  flat = np.stack([quad(0.0, 0.0, 1.0, 0.105), np.full((4, 3), np.nan)])
  out_flat = draw.render_hands(img, flat, faces, FOCAL, PRINCPT, alpha=1.0)
  covered = box_mask((14, 34), (22, 42))
  np.testing.assert_array_equal(out_flat[covered],
                                np.broadcast_to(draw.COLORS[0], (covered.sum(), 3)))
  # Turned 60 degrees about the vertical axis: n . light = cos 60 = 0.5 everywhere.
  a = np.radians(60)
  rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
  tilted = flat.copy()
  tilted[0] = (flat[0] - [0, 0, 1.0]) @ rot.T + [0, 0, 1.0]
  out = draw.render_hands(img, tilted, faces, FOCAL, PRINCPT, alpha=1.0)
  mask = np.any(out > 0, -1)
  assert mask.sum() > 100
  shade = draw.AMBIENT + (1 - draw.AMBIENT) * 0.5
  np.testing.assert_allclose(out[mask], np.round(shade * draw.COLORS[0].astype(float))
                             + np.zeros((mask.sum(), 3)), atol=1)
  # A cube seen face on: the face towards the camera is the brightest part.
  box = np.stack([cube([0.0, 0.0, 1.0], 0.1), np.full((8, 3), np.nan)])
  out = draw.render_hands(img, box, [CUBE_FACES, CUBE_FACES], FOCAL, PRINCPT, alpha=1.0)
  np.testing.assert_array_equal(out[24, 32], draw.COLORS[0])
  assert out[..., 0].max() == draw.COLORS[0][0]


def side_colours(panel):
  """Column and row centroids of the red-ish and blue-ish pixels of a panel."""
  p = panel.astype(int)
  out = []
  for m in (p[..., 0] > p[..., 2] + 20, p[..., 2] > p[..., 0] + 20):
    rows, cols = np.nonzero(m)
    out.append((cols.mean(), rows.mean(), m.sum()) if len(cols) else None)
  return out


def test_side_view_shows_depth_left_to_right_and_height_as_is():
  faces = [CUBE_FACES, CUBE_FACES]
  near_right = np.stack([cube([0.0, 0.0, 0.5], 0.03), cube([0.0, 0.0, 0.7], 0.03)])
  red, blue = side_colours(draw.side_view(near_right, faces, (80, 90)))
  assert red[0] < blue[0]  # the nearer hand is nearer the camera: on the left
  assert abs(red[1] - blue[1]) < 1
  far_right = np.stack([cube([0.0, 0.0, 0.7], 0.03), cube([0.0, 0.0, 0.5], 0.03)])
  red, blue = side_colours(draw.side_view(far_right, faces, (80, 90)))
  assert red[0] > blue[0]
  # Image x does not show in the side view; image y (down) stays down.
  apart = np.stack([cube([-0.2, 0.1, 0.6], 0.03), cube([0.2, -0.1, 0.6], 0.03)])
  panel = draw.side_view(apart, faces, (80, 90))
  assert panel.shape == (80, 90, 3)
  red, blue = side_colours(panel)
  assert abs(red[0] - blue[0]) < 1 and red[1] > blue[1]


def test_a_nan_hand_is_skipped():
  img = noise_image(1)
  faces = [QUAD_FACES, QUAD_FACES]
  right = quad(-0.1, 0.0, 1.0, 0.055)
  left = quad(0.1, 0.0, 1.0, 0.055)
  only_right = draw.render_hands(img, np.stack([right, np.full((4, 3), np.nan)]), faces,
                                 FOCAL, PRINCPT)
  one_nan = left.copy()
  one_nan[2, 1] = np.nan  # one bad coordinate drops the whole hand
  np.testing.assert_array_equal(
      draw.render_hands(img, np.stack([right, one_nan]), faces, FOCAL, PRINCPT), only_right)
  assert np.any(only_right[24, 20] != img[24, 20])
  np.testing.assert_array_equal(only_right[:, 37:], img[:, 37:])
  np.testing.assert_array_equal(
      draw.render_hands(img, np.full((2, 4, 3), np.nan), faces, FOCAL, PRINCPT), img)
  blank = draw.side_view(np.full((2, 8, 3), np.nan), [CUBE_FACES, CUBE_FACES], (30, 40))
  assert np.all(blank == np.asarray(draw.SIDE_BACKGROUND, np.uint8))
  red, blue = side_colours(draw.side_view(np.stack([cube([0, 0, 0.5], 0.03),
                                                    np.full((8, 3), np.nan)]),
                                          [CUBE_FACES, CUBE_FACES], (30, 40)))
  assert red is not None and blue is None


def test_figure_is_the_image_plus_a_square_side_panel_under_a_title(tmp_path):
  img = noise_image(2)
  verts = np.stack([cube([-0.05, 0.0, 0.6], 0.03), cube([0.05, 0.0, 0.65], 0.03)])
  faces = [CUBE_FACES, CUBE_FACES]
  fig = draw.figure(img, verts, faces, FOCAL, PRINCPT)
  assert fig.shape == (H, W + H, 3)
  np.testing.assert_array_equal(fig[:, :W], draw.render_hands(img, verts, faces, FOCAL, PRINCPT))
  path = str(tmp_path / 'f.png')
  draw.save_figure(img, verts, faces, FOCAL, PRINCPT, path, 'a title')
  saved = np.asarray(Image.open(path))
  th = draw.title_height(W + H)
  assert saved.shape == (th + H, W + H, 3)
  np.testing.assert_array_equal(saved[th:, :W], fig[:, :W])
  assert np.any(saved[:th] != 255)  # the title is written


def test_procedural_hands_render_fast(models):
  import mano_jax
  h, w = 334, 512
  img = noise_image(3)
  img = np.asarray(Image.fromarray(img).resize((w, h)))
  pose = np.zeros(48)
  pose[0] = np.pi / 2
  verts = [np.asarray(mano_jax.forward(m, pose).vertices, np.float64) for m in models]
  verts = np.stack([v - v.mean(0) + [x, 0.0, 0.5] for v, x in zip(verts, (-0.06, 0.06))])
  faces = [np.asarray(m.faces) for m in models]
  draw.figure(img, verts, faces, (600.0, 600.0), (w / 2, h / 2))  # compile / warm up
  t0 = time.perf_counter()
  fig = draw.figure(img, verts, faces, (600.0, 600.0), (w / 2, h / 2))
  seconds = time.perf_counter() - t0
  assert fig.shape == (h, w + h, 3)
  assert seconds < 1.0, seconds
  grey = np.full((h, w, 3), 128, np.uint8)
  red, blue = side_colours(draw.render_hands(grey, verts, faces, (600.0, 600.0), (w / 2, h / 2)))
  assert red[2] > 1000 and blue[2] > 1000 and red[0] < blue[0]  # right hand on the left
  red, blue = side_colours(fig[:, w:])
  assert red[2] > 1000 and blue[2] > 1000


def _fake_split(n=3):
  """n examples (an image, a camera), a cube per hand in front of the camera
  for each, and a per-sample result whose joint error is i mm for sample i."""
  rng = np.random.default_rng(4)
  examples = [{'annot_id': 100 + i, 'image': rng.integers(0, 256, (H, W, 3), np.uint8),
               'camera': {'focal': np.array(FOCAL), 'princpt': np.array(PRINCPT)}}
              for i in range(n)]
  res = {'annot_id': np.array([e['annot_id'] for e in examples]),
         'interwild/joint_err': np.repeat(np.arange(n, dtype=np.float64)[::-1, None], 42, 1)}
  verts = np.stack([np.stack([cube([-0.05, 0.0, 0.6], 0.03), cube([0.05, 0.0, 0.62], 0.03)])
                    for _ in range(n)])
  return examples, res, verts


def test_report_write_draws_shaded_best_median_worst_figures(tmp_path, monkeypatch):
  from a2p_jax.eval import report
  # The figures only: the summary and its markdown are not under test here.
  monkeypatch.setattr(report.metrics, 'summarize', lambda res: {'count': len(res['annot_id'])})
  monkeypatch.setattr(report, 'markdown', lambda summary, meta: '')
  examples, res, verts = _fake_split()
  calls = []

  def predict(exs):
    calls.append([e['annot_id'] for e in exs])
    return {'verts': verts[:len(exs)]}

  report.write(str(tmp_path / 'shaded'), res, {'dataset': 'fake', 'split': 'test'},
               examples=examples, predict=predict, faces=[CUBE_FACES, CUBE_FACES])
  assert calls == [[102, 101, 100]]  # best, median, worst
  th = draw.title_height(W + H)
  for name in ('best', 'median', 'worst'):
    img = np.asarray(Image.open(tmp_path / 'shaded' / 'figures' / f'{name}.png'))
    assert img.shape == (th + H, W + H, 3), name
    # The image panel is the example's image with the meshes blended in.
    i = {'best': 2, 'median': 1, 'worst': 0}[name]
    np.testing.assert_array_equal(
        img[th:, :W], draw.render_hands(examples[i]['image'], verts[0], [CUBE_FACES] * 2,
                                        FOCAL, PRINCPT))
  # Without faces: the projected vertex dots on the image, as before.
  report.write(str(tmp_path / 'dots'), res, {'dataset': 'fake', 'split': 'test'},
               examples=examples, predict=predict)
  for name in ('best', 'median', 'worst'):
    assert np.asarray(Image.open(tmp_path / 'dots' / 'figures' / f'{name}.png')).shape == \
        (H, W, 3)


def test_repair_figures_put_before_and_after_side_by_side(tmp_path):
  from a2p_jax.eval import report
  examples, _, verts = _fake_split(2)
  after = verts.copy()
  after[:, 1] += [0.0, 0.0, 0.05]
  paths = report.repair_figures(str(tmp_path), examples, verts, after,
                                [CUBE_FACES, CUBE_FACES])
  assert [p.split('/')[-1] for p in paths] == ['repair_100.png', 'repair_101.png']
  th = draw.title_height(2 * (W + H))
  img = np.asarray(Image.open(paths[0]))
  assert img.shape == (th + H, 2 * (W + H), 3)
  # Before, the cubes' depths overlap (0.57-0.63 and 0.59-0.65 m): in the side
  # view they touch (the left one, nearer the side camera, hides part of the
  # right one). The left hand moved 5 cm away (0.64-0.70 m): a gap of
  # background columns between them.
  def gap_columns(panel):
    p = panel.astype(int)
    cols = np.nonzero(np.any(np.abs(p[..., 0] - p[..., 2]) > 20, 0))[0]
    return cols.max() - cols.min() + 1 - len(cols)

  assert gap_columns(img[th:, W:W + H]) == 0
  assert gap_columns(img[th:, 2 * W + H:]) >= 2
