"""The z-buffer rasterizer against exact answers."""

import numpy as np
import pytest

from a2p_jax.data import raster
from a2p_jax.geometry.camera import project


def icosphere(subdiv):
  """Unit icosphere (V, 3), faces (F, 3) outward counter-clockwise."""
  t = (1 + 5 ** 0.5) / 2
  v = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t),
       (0, -1, -t), (0, 1, -t), (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
  f = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4),
       (11, 10, 2), (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8),
       (3, 8, 9), (4, 9, 5), (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1)]
  verts = [np.asarray(p, float) / np.linalg.norm(p) for p in v]
  faces = f
  for _ in range(subdiv):
    cache, new = {}, []

    def mid(a, b):
      key = (min(a, b), max(a, b))
      if key not in cache:
        m = verts[a] + verts[b]
        verts.append(m / np.linalg.norm(m))
        cache[key] = len(verts) - 1
      return cache[key]

    for a, b, c in faces:
      ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
      new += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
    faces = new
  return np.asarray(verts), np.asarray(faces)


def test_triangle_coverage_is_the_pixel_centres_inside():
  # Right triangle with legs of 10 px: centres (j, i) with i, j >= 0 and
  # i + j <= 10, edges included: 66 of them.
  uv = np.array([[5.0, 7.0], [15.0, 7.0], [5.0, 17.0]])
  depth, face, _ = raster.rasterize(uv, np.full(3, 2.0), np.array([[0, 1, 2]]), 32, 40)
  ii, jj = np.nonzero(face == 0)
  assert len(ii) == 66
  assert np.all((jj - 5) + (ii - 7) <= 10) and jj.min() == 5 and ii.min() == 7
  np.testing.assert_allclose(depth[face == 0], 2.0)
  assert np.all(np.isinf(depth[face < 0]))
  # Either winding draws.
  _, face_cw, _ = raster.rasterize(uv, np.full(3, 2.0), np.array([[0, 2, 1]]), 32, 40)
  np.testing.assert_array_equal(face_cw >= 0, face >= 0)


def test_depth_is_the_plane_along_each_pixel_ray():
  focal, princpt = np.array([300.0, 310.0]), np.array([32.0, 24.0])
  tri = np.array([[-0.2, -0.15, 1.0], [0.25, -0.1, 1.6], [0.0, 0.2, 2.2]])
  uv = project(tri, focal, princpt)
  depth, face, bary = raster.rasterize(uv, tri[:, 2], np.array([[0, 1, 2]]), 48, 64)
  ii, jj = np.nonzero(face == 0)
  assert len(ii) > 100
  normal = np.cross(tri[1] - tri[0], tri[2] - tri[0])
  ray = np.stack([(jj - princpt[0]) / focal[0], (ii - princpt[1]) / focal[1],
                  np.ones(len(ii))], -1)
  exact = (normal @ tri[0]) / (ray @ normal)  # z where the ray meets the plane
  np.testing.assert_allclose(depth[ii, jj], exact, rtol=1e-6)
  # Perspective-correct weights put the interpolated 3D point on the ray.
  point = raster.interpolate(tri, np.array([[0, 1, 2]]), face[ii, jj], bary[ii, jj])
  np.testing.assert_allclose(point, ray * exact[:, None], atol=1e-5)


@pytest.mark.parametrize('order', [(0, 1), (1, 0)])
def test_nearer_triangle_wins_whatever_the_draw_order(order):
  near = np.array([[2.0, 2.0], [30.0, 2.0], [2.0, 30.0]])
  far = np.array([[8.0, 8.0], [38.0, 8.0], [8.0, 38.0]])
  uv = np.concatenate([near, far])
  z = np.array([1.0, 1.0, 1.0, 3.0, 3.0, 3.0])
  tris = np.array([[0, 1, 2], [3, 4, 5]])[list(order)]
  depth, face, _ = raster.rasterize(uv, z, tris, 40, 40)
  near_id = order.index(0)
  both = (np.arange(40)[None] >= 8) & (np.arange(40)[:, None] >= 8)
  both &= (np.arange(40)[None] + np.arange(40)[:, None] <= 32)
  assert both.sum() > 50
  assert np.all(face[both] == near_id)
  np.testing.assert_allclose(depth[both], 1.0)
  only_far = (face == 1 - near_id)
  assert only_far.sum() > 50
  np.testing.assert_allclose(depth[only_far], 3.0)


def test_sphere_silhouette_area_and_nearest_depth():
  verts, faces = icosphere(4)
  radius, dist, f = 0.1, 1.0, 400.0
  pts = verts * radius + np.array([0.0, 0.0, dist])
  princpt = np.array([80.0, 80.0])
  uv = project(pts, [f, f], princpt)
  depth, face, _ = raster.rasterize(uv, pts[:, 2], faces, 161, 161)
  # On the axis the silhouette is a circle of radius f r / sqrt(d^2 - r^2).
  r_img = f * radius / np.sqrt(dist**2 - radius**2)
  area = np.sum(face >= 0)
  np.testing.assert_allclose(area, np.pi * r_img**2, rtol=0.015)
  np.testing.assert_allclose(depth[80, 80], dist - radius, atol=2e-4)
  # Nearest surface: every depth at least the sphere's front.
  assert depth[face >= 0].min() >= dist - radius - 1e-6


def test_bad_input_is_named():
  with pytest.raises(ValueError, match='face index'):
    raster.rasterize(np.zeros((3, 2)), np.ones(3), np.array([[0, 1, 3]]), 8, 8)
  with pytest.raises(ValueError, match='uv must be'):
    raster.rasterize(np.zeros((3, 3)), np.ones(3), np.array([[0, 1, 2]]), 8, 8)


def test_triangles_behind_the_near_plane_are_skipped():
  uv = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
  _, face, _ = raster.rasterize(uv, np.array([1.0, -1.0, 1.0]), np.array([[0, 1, 2]]), 16, 16)
  assert np.all(face < 0)
