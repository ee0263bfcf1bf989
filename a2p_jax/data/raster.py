"""A z-buffered triangle rasterizer on the CPU (numba), for the synthetic data.

Conventions (OpenCV / InterHand2.6M): camera x right, y down, z forward (m);
a point projects to u = fx x / z + px, v = fy y / z + py (pixels,
`a2p_jax.geometry.camera.project`), and pixel (row i, column j) is sampled
at its centre (u, v) = (j, i), so a keypoint at (u, v) lies in pixel
(round(v), round(u)). A pixel is covered by a triangle when its centre is
inside or on an edge (no culling: both windings draw). Depth is interpolated
perspective-correctly (1/z linear in the image), so the depth of a pixel is
exactly the camera z of the triangle's plane along that pixel's ray; the
nearest triangle wins, ties go to the lower face index. Triangles with a
vertex closer than `near` are skipped (no clipping: the hands are always far
in front of the cameras).
"""

import numba
import numpy as np

NEAR_M = 1e-3


@numba.njit(cache=True, nogil=True)
def _raster(uv, z, faces, depth, face_id, bary, near):
  height, width = depth.shape
  for f in range(faces.shape[0]):
    a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
    za, zb, zc = z[a], z[b], z[c]
    if za < near or zb < near or zc < near:
      continue
    xa, ya = uv[a, 0], uv[a, 1]
    xb, yb = uv[b, 0], uv[b, 1]
    xc, yc = uv[c, 0], uv[c, 1]
    area = (xb - xa) * (yc - ya) - (yb - ya) * (xc - xa)
    if area == 0.0 or not np.isfinite(area):
      continue
    j0 = max(int(np.ceil(min(xa, min(xb, xc)))), 0)
    j1 = min(int(np.floor(max(xa, max(xb, xc)))), width - 1)
    i0 = max(int(np.ceil(min(ya, min(yb, yc)))), 0)
    i1 = min(int(np.floor(max(ya, max(yb, yc)))), height - 1)
    inv_area = 1.0 / area
    iza, izb, izc = 1.0 / za, 1.0 / zb, 1.0 / zc
    for i in range(i0, i1 + 1):
      y = float(i)
      for j in range(j0, j1 + 1):
        x = float(j)
        # Screen-space barycentrics, each from its own edge function so a
        # centre exactly on an edge gets exactly 0 (not 1 - wb - wc rounding);
        # the sign of area makes both windings work.
        wa = ((xc - xb) * (y - yb) - (yc - yb) * (x - xb)) * inv_area
        wb = ((x - xa) * (yc - ya) - (y - ya) * (xc - xa)) * inv_area
        wc = ((xb - xa) * (y - ya) - (yb - ya) * (x - xa)) * inv_area
        if wa < 0.0 or wb < 0.0 or wc < 0.0:
          continue
        inv_z = wa * iza + wb * izb + wc * izc
        zz = 1.0 / inv_z
        # float32 buffers: compare in float32 so ties resolve like the store.
        if np.float32(zz) < depth[i, j]:
          depth[i, j] = zz
          face_id[i, j] = f
          # Perspective-correct weights of vertices b and c.
          bary[i, j, 0] = wb * izb * zz
          bary[i, j, 1] = wc * izc * zz


def rasterize(uv_Nx2, z_N, faces_Fx3, height, width, *, near=NEAR_M):
  """Z-buffer rasterization of one triangle mesh.

  uv_Nx2: vertex pixel coordinates; z_N: vertex camera depth (m); faces_Fx3
  int. Returns depth (H, W) float32 m (inf where empty), face (H, W) int32
  (-1 where empty) and bary (H, W, 2) float32, the perspective-correct
  weights of each face's 2nd and 3rd vertex (the 1st gets 1 - sum).
  """
  uv = np.ascontiguousarray(uv_Nx2, np.float64)
  z = np.ascontiguousarray(z_N, np.float64)
  faces = np.ascontiguousarray(faces_Fx3, np.int64)
  if uv.ndim != 2 or uv.shape[1] != 2 or z.shape != uv.shape[:1]:
    raise ValueError(f'rasterize: uv must be (N, 2) and z (N,), got {uv.shape} {z.shape}')
  if faces.ndim != 2 or faces.shape[1] != 3:
    raise ValueError(f'rasterize: faces must be (F, 3), got {faces.shape}')
  if faces.size and (faces.min() < 0 or faces.max() >= len(z)):
    raise ValueError(f'rasterize: face index out of range [0, {len(z)})')
  depth = np.full((height, width), np.inf, np.float32)
  face = np.full((height, width), -1, np.int32)
  bary = np.zeros((height, width, 2), np.float32)
  _raster(uv, z, faces, depth, face, bary, float(near))
  return depth, face, bary


def interpolate(values_NxC, faces_Fx3, face_P, bary_Px2):
  """Interpolates vertex values (N, C) at P covered pixels -> (P, C).

  face_P / bary_Px2: the rasterizer's face id and weights at those pixels,
  e.g. face[mask], bary[mask].
  """
  values = np.asarray(values_NxC)
  f = np.asarray(faces_Fx3)[face_P]
  b = np.asarray(bary_Px2)
  w0 = 1.0 - b[:, 0] - b[:, 1]
  return (w0[:, None] * values[f[:, 0]] + b[:, 0:1] * values[f[:, 1]]
          + b[:, 1:2] * values[f[:, 2]])
