"""A small painter's-algorithm mesh renderer (PIL), for pictures of hands.

Not a rasterizer for training data: triangles are flat-shaded and drawn back
to front, which is right for the few closed meshes of a hand picture.
"""

import numpy as np
from PIL import Image, ImageDraw


def look_at_rotation(azimuth_deg: float, elevation_deg: float):
  """World -> camera rotation for a camera orbiting the origin (y up)."""
  az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
  ry = np.array([[np.cos(az), 0, np.sin(az)], [0, 1, 0], [-np.sin(az), 0, np.cos(az)]])
  rx = np.array([[1, 0, 0], [0, np.cos(el), -np.sin(el)], [0, np.sin(el), np.cos(el)]])
  return rx @ ry


def render_meshes(meshes, *, size=(640, 480), rotation=None, colors=None,
                  background=(250, 250, 250), light=(0.3, 0.5, 1.0)):
  """Orthographic picture of meshes [(vertices (V, 3), faces (F, 3)), ...].

  The view looks down -z of `rotation @ x` (camera space), with y up; the
  meshes are fitted to the image. Returns a PIL image.
  """
  rotation = np.eye(3) if rotation is None else np.asarray(rotation)
  colors = colors or [(222, 170, 140), (140, 170, 222), (160, 210, 150)]
  light = np.asarray(light, float)
  light /= np.linalg.norm(light)
  tris, shades = [], []
  for k, (v, f) in enumerate(meshes):
    v = np.asarray(v, np.float64) @ rotation.T
    f = np.asarray(f)
    t = v[f]
    n = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    lam = 0.35 + 0.65 * np.abs(n @ light)
    base = np.asarray(colors[k % len(colors)], float)
    tris.append(t)
    shades.append(np.clip(lam[:, None] * base, 0, 255).astype(np.uint8))
  tris = np.concatenate(tris)
  shades = np.concatenate(shades)
  lo = tris[..., :2].reshape(-1, 2).min(0)
  hi = tris[..., :2].reshape(-1, 2).max(0)
  w, h = size
  scale = 0.9 * min(w / max(hi[0] - lo[0], 1e-9), h / max(hi[1] - lo[1], 1e-9))
  center = (lo + hi) / 2
  xy = (tris[..., :2] - center) * scale
  xy[..., 0] += w / 2
  xy[..., 1] = h / 2 - xy[..., 1]
  order = np.argsort(tris[..., 2].mean(1))  # far (most negative z) first
  img = Image.new('RGB', size, background)
  draw = ImageDraw.Draw(img)
  for i in order:
    draw.polygon([tuple(p) for p in xy[i]], fill=tuple(int(c) for c in shades[i]))
  return img
