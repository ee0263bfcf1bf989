"""Rendering one view of a synthetic frame: the image a camera sees and its
oracle 2D priors (keypoints and their visibility, part segmentation, depth).

Hands are rasterized (`raster.py`) over a cluttered background with
Lambert + Blinn-Phong shading, a per-subject skin tone, exposure, white
balance, sensor noise and sometimes defocus.

Part labels (PART_LABELS): 0 background; right hand 1 palm, thumb 2-4,
index 5-7, middle 8-10, ring 11-13, pinky 14-16 (each finger proximal,
middle, distal segment); left hand the same plus 16 (17 palm ... 32 left
pinky distal). A vertex belongs to the segment of its largest skinning
weight, a face to the segment with the largest summed weight.
"""

import numba
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from a2p_jax.data import raster
from a2p_jax.data.camera import world_to_camera
from a2p_jax.data.synthetic_frames import NOISE_STREAM, SKIN_RAMP, present_sides
from a2p_jax.geometry.camera import project

FINGERS = ('thumb', 'index', 'middle', 'ring', 'pinky')
# MANO joint (0..15) -> part label of the right hand; left = right + 16.
_MANO_JOINT_FINGER = {1: 'index', 2: 'index', 3: 'index', 4: 'middle', 5: 'middle',
                      6: 'middle', 7: 'pinky', 8: 'pinky', 9: 'pinky', 10: 'ring',
                      11: 'ring', 12: 'ring', 13: 'thumb', 14: 'thumb', 15: 'thumb'}
PART_LABELS = {0: 'background'}
for _s, _off in (('right', 0), ('left', 16)):
  PART_LABELS[_off + 1] = f'{_s}_palm'
  for _k, _f in enumerate(FINGERS):
    for _seg, _name in enumerate(('proximal', 'middle', 'distal')):
      PART_LABELS[_off + 2 + 3 * _k + _seg] = f'{_s}_{_f}_{_name}'
NUM_PART_LABELS = len(PART_LABELS)
VISIBLE_DEPTH_M = 0.02


def part_labels(model, side):
  """Part label (F,) uint8 of each face (PART_LABELS)."""
  w = np.asarray(model.weights)
  joint = np.argmax(w[np.asarray(model.faces)].sum(1), -1)
  right = np.ones(16, np.uint8)  # palm
  for j, finger in _MANO_JOINT_FINGER.items():
    right[j] = 2 + 3 * FINGERS.index(finger) + (j - 1) % 3
  return right[joint] + (16 if side == 'left' else 0)


# ----------------------------------------------------------------------------
# Rendering one view.

def background(rng, height, width):
  """A cluttered, textured background (H, W, 3) uint8.

  Drawn at half resolution (cheaper, and slightly soft like an out-of-focus
  studio): a smooth colour field of muted colours, 6-24 random shapes (some
  skin-coloured distractors), a mid-frequency texture.
  """
  h, w = max(height // 2, 8), max(width // 2, 8)
  gh, gw = rng.integers(2, 6, 2)
  grey = rng.uniform(0.1, 0.7)
  colors = grey + rng.uniform(0.2, 0.8) * (rng.random((gh, gw, 3)) - grey)
  img = Image.fromarray((np.clip(colors, 0, 1) * 255).astype(np.uint8)).resize(
      (w, h), Image.BICUBIC)
  draw = ImageDraw.Draw(img)
  for _ in range(rng.integers(6, 25)):
    color = tuple(int(c) for c in rng.integers(0, 256, 3))
    if rng.random() < 0.15:
      color = tuple(int(c) for c in (SKIN_RAMP[rng.integers(len(SKIN_RAMP))] * 255))
    x0, y0 = rng.uniform(-0.2, 1.0) * w, rng.uniform(-0.2, 1.0) * h
    x1, y1 = x0 + rng.uniform(0.05, 0.6) * w, y0 + rng.uniform(0.05, 0.6) * h
    kind = rng.integers(4)
    if kind == 0:
      draw.rectangle([x0, y0, x1, y1], fill=color)
    elif kind == 1:
      draw.ellipse([x0, y0, x1, y1], fill=color)
    elif kind == 2:
      pts = rng.uniform([x0, y0], [x1, y1], (rng.integers(3, 7), 2))
      draw.polygon([tuple(p) for p in pts], fill=color)
    else:
      draw.line([x0, y0, x1, y1], fill=color, width=int(rng.integers(1, 6)))
  tex = Image.fromarray(rng.integers(150, 256, (max(h // 6, 2), max(w // 6, 2)), np.uint8))
  img = Image.composite(img, Image.new('RGB', (w, h)), tex.resize((w, h), Image.BILINEAR))
  return np.asarray(img.resize((width, height), Image.BILINEAR))


def noise_field(seed, height, width):
  """A fixed (2H, 2W, 3) float32 N(0, 1) field; images take random windows
  of it (sensor noise without drawing H*W*3 normals per image)."""
  rng = np.random.default_rng([seed, NOISE_STREAM])
  return rng.standard_normal((2 * height, 2 * width, 3), dtype=np.float32)


def skin_albedo(subject, model, jitter):
  """Per-vertex albedo (V, 3): the subject's tone with a smooth mottling fixed
  on the rest-pose surface (the same skin in every frame and view)."""
  rest = np.asarray(model.v_template)
  wave = np.sin(rest @ subject['freqs'].T + subject['phases']).mean(-1)
  return subject['tone'][None] * jitter[None] * (1.0 + 0.07 * wave[:, None])


@numba.njit(cache=True, nogil=True)
def _shade(face, bary, faces, attrs, labels, focal, princpt, light, light_color, ambient,
           bg, gain, noise, sigma, rgb, seg):
  """Shades the covered pixels over the background, applies the camera
  response and writes rgb (H, W, 3) uint8 and seg (H, W) uint8 in one pass.

  attrs (N, 6): camera-space vertex normal and albedo. Lambert + Blinn-Phong;
  normals are flipped toward the viewer (the open wrist shows the inside).
  """
  height, width = face.shape
  color = np.empty(3, np.float32)
  for i in range(height):
    for j in range(width):
      f = face[i, j]
      if f < 0:
        for ch in range(3):
          color[ch] = bg[i, j, ch] * np.float32(1.0 / 255.0)
      else:
        b1, b2 = bary[i, j, 0], bary[i, j, 1]
        b0 = 1.0 - b1 - b2
        va, vb, vc = faces[f, 0], faces[f, 1], faces[f, 2]
        nx = b0 * attrs[va, 0] + b1 * attrs[vb, 0] + b2 * attrs[vc, 0]
        ny = b0 * attrs[va, 1] + b1 * attrs[vb, 1] + b2 * attrs[vc, 1]
        nz = b0 * attrs[va, 2] + b1 * attrs[vb, 2] + b2 * attrs[vc, 2]
        inv = 1.0 / max(np.sqrt(nx * nx + ny * ny + nz * nz), 1e-9)
        nx, ny, nz = nx * inv, ny * inv, nz * inv
        rx, ry = (j - princpt[0]) / focal[0], (i - princpt[1]) / focal[1]
        inv = 1.0 / np.sqrt(rx * rx + ry * ry + 1.0)
        wx, wy, wz = -rx * inv, -ry * inv, -inv
        if nx * wx + ny * wy + nz * wz < 0:
          nx, ny, nz = -nx, -ny, -nz
        diffuse = max(nx * light[0] + ny * light[1] + nz * light[2], 0.0)
        hx, hy, hz = wx + light[0], wy + light[1], wz + light[2]
        inv = 1.0 / max(np.sqrt(hx * hx + hy * hy + hz * hz), 1e-9)
        spec = 0.12 * max((nx * hx + ny * hy + nz * hz) * inv, 0.0) ** 24
        for ch in range(3):
          alb = b0 * attrs[va, 3 + ch] + b1 * attrs[vb, 3 + ch] + b2 * attrs[vc, 3 + ch]
          color[ch] = (alb * (ambient + 0.8 * diffuse * light_color[ch])
                       + spec * light_color[ch])
        seg[i, j] = labels[f]
      for ch in range(3):
        x = color[ch] * gain[ch] + sigma * noise[i, j, ch]
        rgb[i, j, ch] = np.uint8(min(max(x, 0.0), 1.0) * 255.0 + 0.5)


def render_view(frame, albedo, cam, height, width, rng, part_faces, noise):
  """Image (H, W, 3) uint8 and priors of one frame seen by one camera.

  frame: a solve_chunk result plus 'hand_type', 'joints_mm' {side: (21, 3)}
  and the lighting draws; albedo {side: (V, 3)}; noise: `noise_field`.
  Returns (rgb, priors dict, bbox [x, y, w, h] px).
  """
  sides = present_sides(frame['hand_type'])
  rot = cam['camrot']
  uv, z, faces, attrs, labels = [], [], [], [], []
  offset = 0
  for side in sides:
    v_mm = frame['verts'][side].astype(np.float64) * 1000.0
    v_cam = world_to_camera(v_mm, cam['campos'], rot) / 1000.0
    uv.append(project(v_cam, cam['focal'], cam['princpt']))
    z.append(v_cam[:, 2])
    f, lab = part_faces[side]
    faces.append(f + offset)
    labels.append(lab)
    attrs.append(np.concatenate([frame['normals'][side] @ rot.T, albedo[side]], 1))
    offset += len(v_cam)
  uv, z = np.concatenate(uv), np.concatenate(z)
  faces, labels = np.concatenate(faces), np.concatenate(labels)
  depth, face, bary = raster.rasterize(uv, z, faces, height, width)
  attrs = np.ascontiguousarray(np.concatenate(attrs), np.float32)
  bg = background(rng, height, width)
  # Camera response: exposure and white balance, sensor noise (a window of
  # the fixed noise field), sometimes defocus.
  gain = (rng.uniform(0.8, 1.2) * rng.uniform(0.92, 1.08, 3)).astype(np.float32)
  dy, dx = rng.integers(0, height), rng.integers(0, width)
  sigma = np.float32(rng.uniform(0.0, 0.02))
  rgb = np.empty((height, width, 3), np.uint8)
  seg = np.zeros((height, width), np.uint8)
  light = np.asarray(rot @ frame['light_dir'], np.float32)
  _shade(face, bary, faces, attrs, labels, np.asarray(cam['focal'], np.float32),
         np.asarray(cam['princpt'], np.float32), light,
         np.asarray(frame['light_color'], np.float32), np.float32(frame['ambient']),
         bg, gain, noise[dy:dy + height, dx:dx + width], sigma, rgb, seg)
  if rng.random() < 0.3:
    rgb = np.asarray(Image.fromarray(rgb).filter(ImageFilter.BoxBlur(rng.uniform(0.5, 1.2))))
  kp, vis = keypoints_and_visibility(frame['joints_mm'], sides, cam, depth, seg)
  bbox = hands_bbox(uv, height, width)
  priors = dict(keypoints=kp, keypoint_visible=vis, segmentation=seg,
                depth=np.where(face >= 0, depth, np.float32(0)).astype(np.float16))
  return rgb, priors, bbox


def keypoints_and_visibility(joints_mm, sides, cam, depth, seg):
  """(42, 2) float32 px and (42,) uint8 visibility of the joints of `sides`.

  A joint is visible when it projects inside the image and the surface seen
  at its pixel is the same hand, no more than VISIBLE_DEPTH_M in front of it.
  """
  h, w = depth.shape
  kp = np.zeros((42, 2), np.float32)
  vis = np.zeros(42, np.uint8)
  for side in sides:
    sl = slice(0, 21) if side == 'right' else slice(21, 42)
    j_cam = world_to_camera(joints_mm[side], cam['campos'], cam['camrot']) / 1000.0
    uv = project(j_cam, cam['focal'], cam['princpt'])
    kp[sl] = uv
    col, row = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    r, c = np.clip(row, 0, h - 1), np.clip(col, 0, w - 1)
    lab = seg[r, c]
    same = (lab >= 1) & (lab <= 16) if side == 'right' else (lab >= 17)
    vis[sl] = inside & same & (depth[r, c] > j_cam[:, 2] - VISIBLE_DEPTH_M)
  return kp, vis


def hands_bbox(uv_Nx2, height, width):
  """[x, y, w, h] px of the projected hand vertices, clipped to the image."""
  lo = np.clip(uv_Nx2.min(0), 0, [width - 1, height - 1])
  hi = np.clip(uv_Nx2.max(0), 0, [width - 1, height - 1])
  return [float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])]

