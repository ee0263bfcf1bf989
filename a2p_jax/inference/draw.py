"""Predicted hands drawn over images: right hand red, left hand blue.

Figures people can read: both meshes rasterized (a2p_jax.data.raster, the
synthetic renderer's z-buffer), Lambert-shaded with a light at the camera
and alpha-blended over the full-resolution image, beside a side view of the
same meshes from a virtual camera turned 90 degrees about the vertical axis
through the hands' centre, so depth errors and interpenetration show.
`overlay_points` (projected vertex dots) stays for the training summaries.
"""

from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from a2p_jax.data import augment, raster
from a2p_jax.geometry.camera import project

COLORS = np.array([[255, 40, 40], [40, 90, 255]], np.uint8)  # right, left
ALPHA = 0.65
AMBIENT = 0.3  # shade = AMBIENT + (1 - AMBIENT) * max(n . light, 0)
SIDE_BACKGROUND = (235, 235, 235)
_SIDE_FILL = 0.85  # fraction of the side panel the hands' extent fills


def overlay_points(image: np.ndarray, verts_2xVx3: np.ndarray, focal, princpt, *,
                   affine=None) -> np.ndarray:
  """Both hands' camera-space points (2, V, 3) projected and drawn over a
  copy of the uint8 image (H, W, 3); `affine` (2, 3): the crop the image is
  of (source px -> image px), None for the source image. Points behind the
  camera or outside the image are skipped."""
  img = np.array(image, np.uint8)
  h, w = img.shape[:2]
  for k in range(2):
    v = np.asarray(verts_2xVx3[k], np.float64)
    ok = np.all(np.isfinite(v), -1) & (v[:, 2] > 0)
    uv = project(v[ok], focal, princpt)
    if affine is not None:
      uv = augment.apply_affine(np.asarray(affine, np.float64), uv)
    uv = np.round(uv).astype(np.int64)
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    img[uv[inside, 1], uv[inside, 0]] = COLORS[k]
  return img


def save_overlay(image: np.ndarray, verts_2xVx3: np.ndarray, focal, princpt, path: str,
                 title: str) -> None:
  """`overlay_points` on the source image, with a title, written as PNG."""
  pil = Image.fromarray(overlay_points(image, verts_2xVx3, focal, princpt))
  ImageDraw.Draw(pil).text((4, 4), title, fill=(255, 255, 0))
  pil.save(path)


# ----------------------------------------------------------------------------
# Shaded meshes.

def vertex_normals(verts_Vx3: np.ndarray, faces_Fx3: np.ndarray) -> np.ndarray:
  """Unit vertex normals (V, 3), each face's normal weighted by its angle at
  the vertex (independent of how a flat region is triangulated); zero for
  unused vertices."""
  v = np.asarray(verts_Vx3, np.float64)
  f = np.asarray(faces_Fx3, np.int64)
  t = v[f]
  fn = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])
  fn /= np.maximum(np.linalg.norm(fn, axis=-1, keepdims=True), 1e-300)
  e1 = np.roll(t, -1, 1) - t  # at corner c: towards the next and the previous corner
  e2 = np.roll(t, 1, 1) - t
  cos = np.sum(e1 * e2, -1) / np.maximum(
      np.linalg.norm(e1, axis=-1) * np.linalg.norm(e2, axis=-1), 1e-300)
  angle = np.arccos(np.clip(cos, -1.0, 1.0))  # (F, 3)
  w = (angle[..., None] * fn[:, None]).reshape(-1, 3)
  n = np.stack([np.bincount(f.ravel(), w[:, c], len(v)) for c in range(3)], -1)
  return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)


def _present(verts_2xVx3, faces_pair):
  """[(k, verts (V, 3), faces (F, 3))] of the hands whose rows are all finite."""
  out = []
  for k in range(len(faces_pair)):
    v = np.asarray(verts_2xVx3[k], np.float64)
    if v.size and np.all(np.isfinite(v)):
      out.append((k, v, np.asarray(faces_pair[k], np.int64)))
  return out


def _shade(hands, focal, princpt, height, width):
  """Rasterizes camera-space hands [(k, verts, faces)] together (the nearer
  surface wins across hands) and Lambert-shades them with a directional
  light along the optical axis, towards the camera (a surface facing the
  camera gets shade 1). Returns mask (H, W) bool and colour (P, 3) float of
  the P covered pixels (row-major, as image[mask])."""
  mask = np.zeros((height, width), bool)
  if not hands:
    return mask, np.zeros((0, 3))
  focal = np.asarray(focal, np.float64)
  princpt = np.asarray(princpt, np.float64)
  uv, z, faces, normals, hand = [], [], [], [], []
  offset = 0
  for k, v, f in hands:
    uv.append(project(v, focal, princpt))
    z.append(v[:, 2])
    faces.append(f + offset)
    normals.append(vertex_normals(v, f))
    hand.append(np.full(len(f), k))
    offset += len(v)
  faces = np.concatenate(faces)
  _, face, bary = raster.rasterize(np.concatenate(uv), np.concatenate(z), faces, height, width)
  mask = face >= 0
  fid = face[mask]
  n = raster.interpolate(np.concatenate(normals), faces, fid, bary[mask])
  n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
  # Normals turned towards the viewer (the open wrist shows the inside).
  rows, cols = np.nonzero(mask)
  ray = np.stack([(cols - princpt[0]) / focal[0], (rows - princpt[1]) / focal[1],
                  np.ones(len(cols))], -1)
  n *= np.where(np.sum(n * ray, -1) > 0, -1.0, 1.0)[:, None]
  shade = AMBIENT + (1 - AMBIENT) * np.clip(-n[:, 2], 0.0, 1.0)
  colour = COLORS[np.concatenate(hand)[fid]].astype(np.float64) * shade[:, None]
  return mask, colour


def render_hands(image: np.ndarray, verts_2xVx3: np.ndarray, faces_pair: Sequence[np.ndarray],
                 focal, princpt, *, alpha: float = ALPHA) -> np.ndarray:
  """Both hands' camera-space meshes (2, V, 3) m (faces_pair: each hand's
  (F, 3) faces) shaded and blended at `alpha` over a copy of the uint8
  image (H, W, 3) the camera (focal, princpt px) took. A hand row with a
  non-finite value is skipped; pixels no mesh covers are unchanged."""
  img = np.array(image, np.uint8)
  if img.ndim == 2:
    img = np.repeat(img[..., None], 3, -1)
  h, w = img.shape[:2]
  mask, colour = _shade(_present(verts_2xVx3, faces_pair), focal, princpt, h, w)
  blend = (1 - alpha) * img[mask].astype(np.float64) + alpha * colour
  img[mask] = np.clip(np.round(blend), 0, 255).astype(np.uint8)
  return img


def side_camera(verts_Nx3: np.ndarray):
  """(rotation (3, 3), centre (3,)) of the side view: the camera turned 90
  degrees about the vertical (y) axis through the points' centre, looking
  along -x from the +x side. In its image y stays down and the original
  camera's depth (z) runs left to right: the original camera is on the left."""
  rot = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # rows: x, y, z axes
  lo, hi = verts_Nx3.min(0), verts_Nx3.max(0)
  return rot, (lo + hi) / 2


def side_view(verts_2xVx3: np.ndarray, faces_pair: Sequence[np.ndarray], size, *,
              background=SIDE_BACKGROUND) -> np.ndarray:
  """The two meshes seen from the side (`side_camera`), fitted to a uint8
  panel of size (height, width) with a plain background; the same scale on
  both axes, so depths compare with heights. Skips non-finite hands."""
  height, width = int(size[0]), int(size[1])
  img = np.empty((height, width, 3), np.uint8)
  img[:] = np.asarray(background, np.uint8)
  hands = _present(verts_2xVx3, faces_pair)
  if not hands:
    return img
  rot, centre = side_camera(np.concatenate([v for _, v, _ in hands]))
  local = [(v - centre) @ rot.T for _, v, _ in hands]
  pts = np.concatenate(local)
  extent = max(float(np.max(pts.max(0) - pts.min(0))), 1e-6)
  # Far away with a long lens: nearly orthographic, so the scale is uniform.
  dist = 20.0 * extent
  lo, hi = pts[:, :2].min(0), pts[:, :2].max(0)
  span = np.maximum(hi - lo, 1e-6)
  f = _SIDE_FILL * dist * min(width / span[0], height / span[1])
  mid = (lo + hi) / 2
  princpt = np.array([(width - 1) / 2, (height - 1) / 2]) - f * mid / dist
  shifted = [(k, v + np.array([0.0, 0.0, dist]), fc)
             for (k, _, fc), v in zip(hands, local)]
  mask, colour = _shade(shifted, (f, f), princpt, height, width)
  img[mask] = np.clip(np.round(colour), 0, 255).astype(np.uint8)
  return img


def _font(size):
  try:
    return ImageFont.load_default(size=size)
  except (TypeError, OSError):  # Pillow < 10.1 or no FreeType: the bitmap font
    return ImageFont.load_default()


def _label(img: np.ndarray, text: str, *, fill=(255, 255, 0)) -> np.ndarray:
  pil = Image.fromarray(img)
  size = max(11, min(img.shape[:2]) // 30)
  ImageDraw.Draw(pil).text((4, img.shape[0] - size - 6), text, fill=fill, font=_font(size))
  return np.asarray(pil)


def figure(image: np.ndarray, verts_2xVx3: np.ndarray, faces_pair: Sequence[np.ndarray],
           focal, princpt, *, alpha: float = ALPHA, label: Optional[str] = None) -> np.ndarray:
  """[image with the shaded meshes | side view], (H, W + H, 3) uint8: the
  side panel is square, as tall as the image. `label`: a caption written
  at the bottom left of the image panel."""
  over = render_hands(image, verts_2xVx3, faces_pair, focal, princpt, alpha=alpha)
  if label:
    over = _label(over, label)
  side = _label(side_view(verts_2xVx3, faces_pair, (over.shape[0], over.shape[0])),
                'side view (camera on the left)', fill=(60, 60, 60))
  return np.concatenate([over, side], 1)


def title_height(width: int) -> int:
  """Height (px) of the title strip `titled` puts above panels `width` wide."""
  return max(11, width // 80) + 8


def titled(panels: Sequence[np.ndarray], title: str) -> np.ndarray:
  """Panels (uint8, H_i x W_i x 3) side by side on a white sheet, top
  aligned, under a one-line title strip of `title_height` px."""
  width = sum(p.shape[1] for p in panels)
  height = max(p.shape[0] for p in panels)
  th = title_height(width)
  sheet = np.full((th + height, width, 3), 255, np.uint8)
  x = 0
  for p in panels:
    sheet[th:th + p.shape[0], x:x + p.shape[1]] = p
    x += p.shape[1]
  pil = Image.fromarray(sheet)
  ImageDraw.Draw(pil).text((4, 3), title, fill=(0, 0, 0), font=_font(th - 8))
  return np.asarray(pil)


def save_figure(image: np.ndarray, verts_2xVx3: np.ndarray, faces_pair: Sequence[np.ndarray],
                focal, princpt, path: str, title: str, *, alpha: float = ALPHA) -> None:
  """`figure` under a title line, written as PNG:
  (title_height(W + H) + H, W + H, 3) for an (H, W) image."""
  Image.fromarray(titled([figure(image, verts_2xVx3, faces_pair, focal, princpt,
                                 alpha=alpha)], title)).save(path)
