"""A procedural hand model in MANO's format. NOT MANO.

MANO is licensed and never shipped. This module builds, from code alone, a
stand-in with the same keys, kinematic tree (16 joints in MANO order), and
kinds of parameters: a closed mesh open only at the wrist, 10 PCA shape blend
shapes, pose correctives, skinning weights, a joint regressor, and a 45-D pose
PCA basis with finger synergies. Its numbers are not MANO's; do not report
results on it as MANO results.

Frame of the right hand: x along the fingers, y to the back of the hand, z
toward the little finger (the thumb is at -z); wrist joint at the origin;
metres. The left hand is its mirror image across the YZ plane (x -> -x), the
relation `mano_jax.mirror_pose` assumes.

Construction: a fixed mesh topology (a palm tube, four finger tubes split
from its top ring, a thumb tube grafted on a patch of its side, rounded
fingertips) is placed around a skeleton and snapped onto a smooth implicit
surface (tapered capsules and ellipsoids blended with smooth-min). Because
the topology is fixed, meshes of different hand proportions correspond vertex
to vertex, and their principal components are the shape blend shapes.

    python -m mano_jax.procedural --out mano_jax/assets   # or `make asset`
"""

import argparse
import dataclasses
import os
import time

import numpy as np
import scipy.sparse as sp
import trimesh
from scipy.optimize import nnls
from scipy.spatial.transform import Rotation

from mano_jax.io import ASSET_DIR
from mano_jax.mesh import vertex_normals
DEFAULT_SEED = 0
NAME = 'procedural hand (NOT MANO), mano_jax.procedural'

K = 5                 # points per half finger ring: finger rings have 2K
M = 8 * K             # palm ring: 4 fingers x 2K
NUM_PALM_RINGS = 10   # palm rings below the split ring
THUMB_PATCH = (3, 3, M - 1, 2)  # first ring, rings spanned, first column, columns
FINGERS = ('index', 'middle', 'ring', 'pinky')  # palm-ring order, -z to +z
# MANO joint ids: index 1-3, middle 4-6, pinky 7-9, ring 10-12, thumb 13-15.
FINGER_JOINTS = {'index': (1, 2, 3), 'middle': (4, 5, 6), 'pinky': (7, 8, 9),
                 'ring': (10, 11, 12), 'thumb': (13, 14, 15)}
PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)
TIP_ORDER = ('thumb', 'index', 'middle', 'ring', 'pinky')


# ----------------------------------------------------------------------------
# Hand proportions and skeleton.

@dataclasses.dataclass(frozen=True)
class HandParams:
  """Proportions; each factor scales a group of base lengths (1 = base hand)."""
  scale: float = 1.0
  palm_length: float = 1.0
  palm_width: float = 1.0
  palm_thickness: float = 1.0
  finger_length: tuple = (1.0, 1.0, 1.0, 1.0)   # index, middle, ring, pinky
  finger_radius: float = 1.0
  thumb_length: float = 1.0
  thumb_radius: float = 1.0
  spread: float = 0.0    # radians added to the finger fan


# Base values (metres).
_MCP_X = np.array([0.086, 0.090, 0.086, 0.078])
_MCP_Z = np.array([-0.0285, -0.0095, 0.0095, 0.0270])
_FAN = np.radians([-4.0, 0.0, 4.5, 10.0])
_PHALANX = np.array([[0.039, 0.023, 0.020],
                     [0.044, 0.027, 0.021],
                     [0.041, 0.026, 0.021],
                     [0.032, 0.019, 0.019]])
# Radii at MCP, PIP, DIP and of the fingertip sphere.
_FINGER_R = np.array([[0.0088, 0.0080, 0.0071, 0.0064],
                      [0.0090, 0.0082, 0.0073, 0.0066],
                      [0.0085, 0.0078, 0.0069, 0.0062],
                      [0.0076, 0.0069, 0.0061, 0.0055]])
_THUMB_CMC = np.array([0.018, -0.006, -0.020])
_THUMB_DIR = np.array([0.76, -0.24, -0.60])
_THUMB_PHALANX = np.array([0.042, 0.032, 0.027])
_THUMB_R = np.array([0.0120, 0.0105, 0.0094, 0.0084])


def _unit(v):
  return v / np.linalg.norm(v, axis=-1, keepdims=True)


@dataclasses.dataclass
class Chain:
  """One digit: joint positions, lengths, radii and its frame."""
  joints: np.ndarray   # (3, 3) base, middle, distal joint
  tip: np.ndarray      # (3,) end of the surface
  lengths: np.ndarray  # (3,)
  radii: np.ndarray    # (4,) at the three joints and the tip sphere
  d: np.ndarray        # along the digit
  e1: np.ndarray       # ring angle 0 (toward the little finger / lateral)
  e2: np.ndarray       # ring angle pi/2 (dorsal)
  flex_axis: np.ndarray
  palmar: np.ndarray

  def point(self, s):
    """Point on the digit axis at arc length s (straight digit at rest)."""
    return self.joints[0] + np.asarray(s)[..., None] * self.d

  @property
  def total(self):
    return float(self.lengths.sum())

  def radius(self, s):
    knots = np.concatenate([[0.0], np.cumsum(self.lengths)])
    return np.interp(s, knots, self.radii)


def skeleton(p: HandParams):
  """Joint positions (16, 3) in MANO order and the five digit chains."""
  sc = p.scale
  chains = {}
  palmar = np.array([0.0, -1.0, 0.0])
  for i, name in enumerate(FINGERS):
    ang = _FAN[i] + p.spread * (i - 1.0)
    d = np.array([np.cos(ang), 0.0, np.sin(ang)])
    mcp = np.array([_MCP_X[i] * p.palm_length, 0.0,
                    _MCP_Z[i] * p.palm_width]) * sc
    lengths = _PHALANX[i] * p.finger_length[i] * sc
    knots = np.cumsum(np.concatenate([[0.0], lengths]))
    joints = mcp + knots[:3, None] * d
    radii = _FINGER_R[i] * p.finger_radius * sc
    e1 = _unit(np.cross(palmar, d))  # toward +z for d = +x
    chains[name] = Chain(joints, mcp + knots[3] * d, lengths, radii, d, e1,
                         np.array([0.0, 1.0, 0.0]) - d * d[1],
                         _unit(np.cross(d, palmar)), palmar)
  d = _unit(_THUMB_DIR)
  pal_t = _unit(np.array([0.30, -0.80, 0.60]))
  pal_t = _unit(pal_t - d * (pal_t @ d))
  lengths = _THUMB_PHALANX * p.thumb_length * sc
  knots = np.cumsum(np.concatenate([[0.0], lengths]))
  cmc = _THUMB_CMC * np.array([p.palm_length, p.palm_thickness, p.palm_width]) * sc
  e2 = -pal_t                          # dorsal side of the thumb
  e1 = _unit(np.cross(pal_t, d))
  chains['thumb'] = Chain(cmc + knots[:3, None] * d, cmc + knots[3] * d, lengths,
                          _THUMB_R * p.thumb_radius * sc, d, e1, e2,
                          _unit(np.cross(d, pal_t)), pal_t)
  joints = np.zeros((16, 3))
  for name, ids in FINGER_JOINTS.items():
    joints[list(ids)] = chains[name].joints
  return joints, chains


# ----------------------------------------------------------------------------
# Implicit surface.

def _smin(a, b, k):
  h = np.maximum(k - np.abs(a - b), 0.0) / k
  return np.minimum(a, b) - h * h * k * 0.25


def _round_cone(p, a, b, r1, r2):
  """Exact distance to a tapered capsule from (a, r1) to (b, r2)."""
  ba = b - a
  l2 = ba @ ba
  rr = r1 - r2
  a2 = l2 - rr * rr
  il2 = 1.0 / l2
  pa = p - a
  y = pa @ ba
  z = y - l2
  x = pa * l2 - y[:, None] * ba
  x2 = np.sum(x * x, -1)
  y2 = y * y * l2
  z2 = z * z * l2
  k = np.sign(rr) * rr * rr * x2
  d_end = np.sqrt(x2 + z2) * il2 - r2
  d_start = np.sqrt(x2 + y2) * il2 - r1
  d_side = (np.sqrt(x2 * a2 * il2) + y * rr) * il2 - r1
  return np.where(np.sign(z) * a2 * z2 > k, d_end,
                  np.where(np.sign(y) * a2 * y2 < k, d_start, d_side))


def _ellipsoid(p, c, r):
  # Cheap approximation (exact on the axes); good enough for snapping.
  q = (p - c) / r
  k0 = np.linalg.norm(q, axis=-1)
  k1 = np.linalg.norm(q / r, axis=-1)
  return k0 * (k0 - 1.0) / np.maximum(k1, 1e-12)


def _rounded_box(p, c, half, radius):
  q = np.abs(p - c) - (half - radius)
  return (np.linalg.norm(np.maximum(q, 0.0), axis=-1)
          + np.minimum(np.max(q, -1), 0.0) - radius)


def _digit_sdf(p, ch):
  pts = list(ch.joints) + [ch.tip - ch.d * ch.radii[3]]
  d = np.full(p.shape[0], np.inf)
  for k in range(3):
    d = np.minimum(d, _round_cone(p, pts[k], pts[k + 1], ch.radii[k], ch.radii[k + 1]))
  return d


def make_sdfs(p: HandParams, chains):
  """Signed distance functions: the body alone, and body + each digit."""
  sc = p.scale
  L, W, T = p.palm_length * sc, p.palm_width * sc, p.palm_thickness * sc

  def body(q):
    # Palm slab tapering toward the wrist (z squeezed near x = 0).
    taper = 1.0 + 0.22 * np.clip(1.0 - q[:, 0] / (0.06 * L), 0.0, 1.0)
    qs = q * np.stack([np.ones_like(taper), np.ones_like(taper), taper], -1)
    palm = _rounded_box(qs, np.array([0.043 * L, -0.0005 * T, -0.001 * W]),
                        np.array([0.045 * L, 0.0125 * T, 0.036 * W]), 0.0115 * T)
    wrist = _round_cone(q * np.array([1.0, 1.5, 1.0]) / 1.0,
                        np.array([-0.05, 0.0, 0.0]) * sc,
                        np.array([0.012 * L, 0.0, 0.0]),
                        0.027 * W, 0.028 * W)
    thenar = _ellipsoid(q, np.array([0.030 * L, -0.009 * T, -0.021 * W]),
                        np.array([0.030 * L, 0.0115 * T, 0.0165 * W]))
    hypo = _ellipsoid(q, np.array([0.036 * L, -0.007 * T, 0.024 * W]),
                      np.array([0.032 * L, 0.0095 * T, 0.012 * W]))
    d = _smin(palm, wrist, 0.02 * sc)
    d = _smin(d, thenar, 0.012 * sc)
    return _smin(d, hypo, 0.010 * sc)

  blend = {'thumb': 0.012, **{n: 0.0055 for n in FINGERS}}

  def with_digit(name):
    def f(q):
      return _smin(body(q), _digit_sdf(q, chains[name]), blend[name] * sc)
    return f

  def full(q):
    b = body(q)
    return np.min(np.stack([_smin(b, _digit_sdf(q, chains[n]), blend[n] * sc)
                            for n in blend]), 0)

  sdfs = {n: with_digit(n) for n in blend}
  sdfs['palm'] = full
  return sdfs


# ----------------------------------------------------------------------------
# Topology.

@dataclasses.dataclass
class Topology:
  faces: np.ndarray       # (F, 3)
  part: np.ndarray        # (V,) 0 palm, 1-4 fingers (FINGERS order), 5 thumb
  ring: np.ndarray        # (V,) ring index within the part (-1 for apex)
  col: np.ndarray         # (V,) column within the ring
  section: np.ndarray     # (V,) palm columns: finger section 0-3
  s_coord: dict           # part -> list of ring arc lengths (digits)
  palm_grid: np.ndarray   # (NUM_PALM_RINGS + 1, M) vertex ids (-1 removed)
  digit_rings: dict       # name -> list of index arrays (ring 0 shared)
  apex: dict              # name -> apex vertex id
  boundary: np.ndarray    # wrist loop vertex ids


PART_IDS = {'palm': 0, 'index': 1, 'middle': 2, 'ring': 3, 'pinky': 4, 'thumb': 5}


def _ring_angle_bottom_top():
  """Angle of each of the 2K points of a finger ring (palm-ring order)."""
  bottom = np.pi + np.pi * (np.arange(K) + 0.5) / K       # palm side, +z order
  top = np.pi * (np.arange(K) + 0.5) / K                   # dorsal, -z order
  return bottom, top


def _palm_col_to_section(col):
  """Palm ring column -> finger section and position within its finger ring."""
  if col < 4 * K:  # bottom: z increasing
    return col // K, col % K
  m = M - 1 - col  # top stored z decreasing; m is the z order
  return m // K, 2 * K - 1 - (m % K)


def _digit_s_knots(ch: Chain, name: str):
  """Arc lengths of the digit's rings (ring 0 is the shared base ring)."""
  L1, L2, L3 = ch.lengths
  if name == 'thumb':
    base = 0.024 / 0.101 * ch.total
    inner = np.linspace(base, L1 + L2, 5)[1:]
  else:
    base = 0.008 / 0.084 * ch.total
    inner = np.concatenate([np.linspace(base, L1, 4)[1:], [L1 + 0.5 * L2, L1 + L2]])
  end = ch.total
  tip = [L1 + L2 + 0.45 * L3, end - 0.55 * ch.radii[3], end - 0.2 * ch.radii[3]]
  return np.concatenate([[base], inner, tip])


def build_topology(chains) -> Topology:
  """Vertex ids and faces. Depends on ring counts only, not on proportions."""
  nid = [0]
  meta = []  # (part, ring, col, section)

  def new(part, ring, col, section=-1):
    meta.append((part, ring, col, section))
    nid[0] += 1
    return nid[0] - 1

  quads, tris = [], []
  # Palm grid: rings 0..NUM_PALM_RINGS (the last is the split ring).
  r0, dr, c0, dc = THUMB_PATCH
  patch_cols = [(c0 + k) % M for k in range(dc + 1)]
  removed = {(r, c) for r in range(r0 + 1, r0 + dr) for c in patch_cols[1:-1]}
  grid = -np.ones((NUM_PALM_RINGS + 1, M), np.int64)
  for r in range(NUM_PALM_RINGS + 1):
    for c in range(M):
      if (r, c) in removed:
        continue
      sec = _palm_col_to_section(c)[0]
      part = 0 if r < NUM_PALM_RINGS else 1 + sec
      grid[r, c] = new(part, r, c, sec)
  patch_quads = {(r, patch_cols[k]) for r in range(r0, r0 + dr)
                 for k in range(dc)}
  for r in range(NUM_PALM_RINGS):
    for c in range(M):
      if (r, c) in patch_quads:
        continue
      c1 = (c + 1) % M
      quads.append((grid[r, c], grid[r, c1], grid[r + 1, c1], grid[r + 1, c]))
  # Finger rings: split-ring points of each section, in ring-angle order.
  digit_rings, apex, s_coord = {}, {}, {}
  split = grid[NUM_PALM_RINGS]
  for i, name in enumerate(FINGERS):
    ring0 = np.zeros(2 * K, np.int64)
    for c in range(M):
      sec, pos = _palm_col_to_section(c)
      if sec == i:
        ring0[pos] = split[c]
    digit_rings[name] = [ring0]
  # Crotch quads between neighbouring fingers (web): right side of finger i
  # (bottom last, top last) to the left side of finger i + 1.
  for i in range(3):
    a, b = digit_rings[FINGERS[i]][0], digit_rings[FINGERS[i + 1]][0]
    quads.append((a[K - 1], b[0], b[2 * K - 1], a[K]))
  # Thumb ring 0: the patch boundary loop.
  loop = ([grid[r0, c] for c in patch_cols]
          + [grid[r, patch_cols[-1]] for r in range(r0 + 1, r0 + dr + 1)]
          + [grid[r0 + dr, c] for c in reversed(patch_cols[:-1])]
          + [grid[r, patch_cols[0]] for r in range(r0 + dr - 1, r0, -1)])
  assert len(loop) == 2 * K, len(loop)
  digit_rings['thumb'] = [np.array(loop)]
  # Digit tubes.
  for name in FINGERS + ('thumb',):
    part = PART_IDS[name]
    knots = _digit_s_knots(chains[name], name)
    s_coord[name] = knots
    rings = digit_rings[name]
    for r in range(1, len(knots)):
      rings.append(np.array([new(part, r, c) for c in range(2 * K)]))
      prev, cur = rings[-2], rings[-1]
      for c in range(2 * K):
        c1 = (c + 1) % (2 * K)
        quads.append((prev[c], prev[c1], cur[c1], cur[c]))
    apex[name] = new(part, -1, -1)
    last = rings[-1]
    for c in range(2 * K):
      tris.append((last[c], last[(c + 1) % (2 * K)], apex[name]))
  meta = np.array(meta)
  faces = [(q[0], q[1], q[2]) for q in quads] + [(q[0], q[2], q[3]) for q in quads]
  faces = np.array(faces + tris, np.int64)
  return Topology(faces=faces, part=meta[:, 0], ring=meta[:, 1], col=meta[:, 2],
                  section=meta[:, 3], s_coord=s_coord, palm_grid=grid,
                  digit_rings=digit_rings, apex=apex, boundary=grid[0].copy())


# ----------------------------------------------------------------------------
# Geometry: initial placement, then snapping onto the implicit surface.

def _palm_ring_points(x, p: HandParams):
  sc = p.scale
  xs = x / (p.palm_length * sc)
  hw = np.interp(xs, [-0.02, 0.0, 0.03, 0.07, 0.09],
                 [0.026, 0.029, 0.036, 0.038, 0.038]) * p.palm_width * sc
  ht = np.interp(xs, [-0.02, 0.0, 0.03, 0.09],
                 [0.018, 0.017, 0.0145, 0.0125]) * p.palm_thickness * sc
  bottom, top = _ring_angle_bottom_top()
  ang = np.concatenate([np.pi + np.pi * (np.arange(4 * K) + 0.5) / (4 * K),
                        np.pi * (np.arange(4 * K) + 0.5) / (4 * K)])
  c, s = np.cos(ang), np.sin(ang)
  e = 2.0 / 3.0  # superellipse: boxy cross-section
  z = hw * np.sign(c) * np.abs(c) ** e
  y = ht * np.sign(s) * np.abs(s) ** e
  return np.stack([np.full_like(z, x), y, z], -1)


def _digit_ring(ch: Chain, s, angles, radius):
  c = ch.point(s)
  return c + radius * (np.cos(angles)[:, None] * ch.e1 + np.sin(angles)[:, None] * ch.e2)


def initial_vertices(topo: Topology, chains, p: HandParams):
  nv = len(topo.part)
  v = np.zeros((nv, 3))
  sc = p.scale
  xs = np.linspace(-0.012 * sc * p.palm_length,
                   0.072 * sc * p.palm_length, NUM_PALM_RINGS)
  grid = topo.palm_grid
  for r in range(NUM_PALM_RINGS):
    pts = _palm_ring_points(xs[r], p)
    ok = grid[r] >= 0
    v[grid[r][ok]] = pts[ok]
  # Finger ring position k < K is on the palm side (z increasing), k >= K on
  # the back (z decreasing): the angles of `_ring_angle_bottom_top` in order.
  angles = np.concatenate(_ring_angle_bottom_top())
  for name in FINGERS + ('thumb',):
    ch = chains[name]
    knots = _digit_s_knots(ch, name)
    rings = topo.digit_rings[name]
    if name == 'thumb':
      loop = v[rings[0]]
      rel = loop - ch.point(knots[0])
      ang0 = np.unwrap(np.arctan2(rel @ ch.e2, rel @ ch.e1))
      uniform = ang0[0] + np.linspace(0, 2 * np.pi, 2 * K, endpoint=False) * np.sign(ang0[1] - ang0[0])
      start = 1
    else:
      start = 0
    for r in range(start, len(rings)):
      rad = ch.radius(knots[r])
      if r >= len(rings) - 2:   # rounded tip
        rad = ch.radii[3] * (0.85 if r == len(rings) - 2 else 0.5)
      if name == 'thumb':
        t = min(1.0, r / 2.0)
        ang = (1 - t) * ang0 + t * uniform
      else:
        ang = angles
      v[rings[r]] = _digit_ring(ch, knots[r], ang, rad)
    v[topo.apex[name]] = ch.tip
  return v


def _neighbors(faces, nv):
  i = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2],
                      faces[:, 1], faces[:, 2], faces[:, 0]])
  j = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0],
                      faces[:, 0], faces[:, 1], faces[:, 2]])
  a = sp.coo_matrix((np.ones_like(i, float), (i, j)), shape=(nv, nv)).tocsr()
  a.data[:] = 1.0
  deg = np.asarray(a.sum(1)).ravel()
  return a, deg


def _value_and_grad(f, v, h=1e-5):
  # One call on the point and its three offsets: the SDFs are vectorized.
  n = len(v)
  vals = f(np.concatenate([v] + [v + h * e for e in np.eye(3)]))
  d = vals[:n]
  g = np.stack([(vals[(k + 1) * n:(k + 2) * n] - d) / h for k in range(3)], -1)
  return d, g


def _project(v, f, iters=10, fixed_x=None):
  for _ in range(iters):
    d, g = _value_and_grad(f, v)
    if fixed_x is not None:
      g[fixed_x, 0] = 0.0
    g2 = np.maximum(np.sum(g * g, -1), 1e-12)
    v = v - (d / g2)[:, None] * g
  return v


def snap_to_surface(v, topo: Topology, sdfs, rounds=12):
  """Alternates projection onto the implicit surface and tangential smoothing."""
  nv = len(v)
  adj, deg = _neighbors(topo.faces, nv)
  names = ('palm',) + FINGERS + ('thumb',)
  groups = [np.where(topo.part == PART_IDS[n])[0] for n in names]
  wrist = np.zeros(nv, bool)
  wrist[topo.boundary] = True
  fixed_x = wrist.copy()

  def project(v, iters):
    out = v.copy()
    for n, idx in zip(names, groups):
      out[idx] = _project(v[idx], sdfs[n], iters, fixed_x=fixed_x[idx])
    return out

  v = project(v, 10)
  for r in range(rounds):
    lap = adj @ v / deg[:, None] - v
    _, g = _value_and_grad(sdfs['palm'], v)
    n = _unit(g + 1e-12)
    lap -= np.sum(lap * n, -1, keepdims=True) * n
    lap[wrist] = 0.0
    v = project(v + 0.5 * lap, 10 if r == rounds - 1 else 4)
  return v


def shaped_mesh(p: HandParams, topo: Topology = None):
  """Vertices (V, 3), joints (16, 3), chains for proportions `p`."""
  joints, chains = skeleton(p)
  if topo is None:
    topo = build_topology(chains)
  v = snap_to_surface(initial_vertices(topo, chains, p), topo, make_sdfs(p, chains))
  return v, joints, chains, topo


# ----------------------------------------------------------------------------
# Rigging: joint regressor, skinning weights, pose correctives.

def _smoothstep(t):
  t = np.clip(t, 0.0, 1.0)
  return t * t * (3.0 - 2.0 * t)


def joint_regressor(v, joints, topo: Topology, k=60):
  """Non-negative weights over nearby vertices reproducing each joint."""
  nv = len(v)
  reg = np.zeros((16, nv))
  part_of_joint = {0: 'palm'}
  for name, ids in FINGER_JOINTS.items():
    for j in ids:
      part_of_joint[j] = name
  for j in range(16):
    name = part_of_joint[j]
    allowed = np.isin(topo.part, [0, PART_IDS[name]])
    cand = np.where(allowed)[0]
    cand = cand[np.argsort(np.linalg.norm(v[cand] - joints[j], axis=-1))[:k]]
    # Rows: x, y, z and a heavily weighted sum-to-one; small ridge for spread.
    a = np.concatenate([v[cand].T, 10.0 * np.ones((1, len(cand))),
                        1e-3 * np.eye(len(cand))])
    b = np.concatenate([joints[j], [10.0], np.zeros(len(cand))])
    w, _ = nnls(a, b)
    reg[j, cand] = w / w.sum()
  return reg


def _digit_s(v, ch: Chain):
  return (v - ch.joints[0]) @ ch.d


def skinning_weights(v, topo: Topology, chains):
  nv = len(v)
  w = np.zeros((nv, 16))
  w[:, 0] = 1.0
  for name in FINGERS + ('thumb',):
    ch = chains[name]
    j1, j2, j3 = FINGER_JOINTS[name]
    s = _digit_s(v, ch)
    L1, L2, _ = ch.lengths
    b = 0.35 * ch.radii[1]
    if name == 'thumb':
      # Vertices of the thumb tube plus the thenar region near the metacarpal.
      axis_pt = ch.joints[0] + np.clip(s, 0, L1)[:, None] * ch.d
      dist = np.linalg.norm(v - axis_pt, axis=-1)
      near = (1.0 - _smoothstep((dist - 0.013 * (ch.radii[0] / 0.012)) / 0.012))
      base = np.where(topo.part == PART_IDS['thumb'], 1.0,
                      np.where(topo.part == 0, 0.8 * near, 0.0))
      base = base * _smoothstep((s + 0.004) / 0.016)
    else:
      mine = topo.part == PART_IDS[name]
      palm_sec = (topo.part == 0) & (topo.section == FINGERS.index(name))
      base = np.where(mine, 1.0, 0.0)
      b0 = 1.1 * ch.radii[0]
      base = np.maximum(base * _smoothstep((s + b0) / (2 * b0)),
                        np.where(palm_sec, _smoothstep((s + b0) / (2 * b0)), 0.0))
    t2 = _smoothstep((s - L1 + b) / (2 * b))
    t3 = _smoothstep((s - L1 - L2 + b) / (2 * b))
    seg = np.stack([1.0 - t2, t2 - t3, t3], -1) * base[:, None]
    w[:, 0] -= base
    w[:, [j1, j2, j3]] += seg
  w = np.clip(w, 0.0, None)
  return w / w.sum(1, keepdims=True)


def pose_correctives(v, faces, topo: Topology, chains):
  """posedirs (V, 3, 135): knuckle bulge and palmar crease under flexion.

  For joint j with flexion axis a, phi = -<R - I, I - 2 a a^T>/2 equals
  (1 - cos theta) (a . axis)^2: it grows with flexion about a and ignores
  twists and spreads. Dorsal skin near the joint moves out, palmar skin in,
  in proportion to phi (a few mm at 90 degrees), which is linear in R - I.
  """
  normals = np.asarray(vertex_normals(v, faces))
  nv = len(v)
  posedirs = np.zeros((nv, 3, 135))
  for name in FINGERS + ('thumb',):
    ch = chains[name]
    s = _digit_s(v, ch)
    knots = np.concatenate([[0.0], np.cumsum(ch.lengths)])
    mine = (topo.part == PART_IDS[name]) | (topo.part == 0)
    axis_dist = np.linalg.norm(v - ch.joints[0] - s[:, None] * ch.d, axis=-1)
    for k, j in enumerate(FINGER_JOINTS[name]):
      r = ch.radii[k]
      g = np.exp(-((s - knots[k]) / (0.9 * r)) ** 2) * mine
      g *= np.exp(-np.maximum(axis_dist - 1.4 * r, 0.0) ** 2 / (0.5 * r) ** 2)
      dors = np.maximum(-(normals @ ch.palmar), 0.0)
      palm = np.maximum(normals @ ch.palmar, 0.0)
      disp = (g * r * (0.16 * dors - 0.22 * palm))[:, None] * normals
      a = ch.flex_axis
      coef = -0.5 * (np.eye(3) - 2.0 * np.outer(a, a))  # (3, 3) over R - I
      posedirs[:, :, 9 * (j - 1):9 * j] += disp[:, :, None] * coef.reshape(1, 1, 9)
  return posedirs


# ----------------------------------------------------------------------------
# Pose space: synthetic natural poses -> PCA basis and mean.

def _aa(axis, angle):
  return np.asarray(axis)[None] * np.asarray(angle)[:, None]


def _compose_aa(aa1, aa2):
  """Rotation vectors of R(aa1) @ R(aa2) (numpy, via scipy)."""
  return (Rotation.from_rotvec(aa1) * Rotation.from_rotvec(aa2)).as_rotvec()


def sample_natural_poses(chains, n, rng):
  """(n, 45) relative axis-angle hand poses with coupled finger synergies."""
  grasp = rng.beta(1.3, 1.6, n)
  corr = 0.6 ** np.abs(np.subtract.outer(np.arange(4), np.arange(4)))
  noise = rng.multivariate_normal(np.zeros(4), 0.03 * corr, n)
  spread = rng.normal(0.04, 0.10, n) * (1.0 - 0.7 * grasp)
  pose = np.zeros((n, 15, 3))
  for i, name in enumerate(FINGERS):
    ch = chains[name]
    c = np.clip(grasp + noise[:, i] + 0.05 * i * grasp, 0.0, 1.0)
    mcp = np.clip(-0.2 + 1.55 * c + rng.normal(0, 0.08, n), -0.35, 1.55)
    pip = np.clip(1.7 * c * (1 + rng.normal(0, 0.1, n)), 0.0, 1.8)
    dip = np.clip(0.67 * pip + rng.normal(0, 0.08, n), -0.1, 1.3)
    abd = spread * (i - 1.2) + rng.normal(0, 0.03, n)
    spread_axis = np.array([0.0, -1.0, 0.0])
    j1, j2, j3 = FINGER_JOINTS[name]
    pose[:, j1 - 1] = _compose_aa(_aa(spread_axis, abd), _aa(ch.flex_axis, mcp))
    pose[:, j2 - 1] = _aa(ch.flex_axis, pip)
    pose[:, j3 - 1] = _aa(ch.flex_axis, dip)
  ch = chains['thumb']
  opp = rng.uniform(0, 1, n)
  cmc_flex = np.clip(0.15 + 0.55 * opp + 0.2 * grasp + rng.normal(0, 0.1, n), -0.3, 1.0)
  cmc_twist = np.clip(0.7 * opp + rng.normal(0, 0.1, n), -0.2, 1.0)
  cmc_abd = rng.normal(0.0, 0.15, n)
  abd_axis = _unit(np.cross(ch.d, ch.flex_axis))
  pose[:, 12] = _compose_aa(_compose_aa(_aa(abd_axis, cmc_abd), _aa(ch.d, cmc_twist)),
                            _aa(ch.flex_axis, cmc_flex))
  pose[:, 13] = _aa(ch.flex_axis, np.clip(0.1 + 0.6 * grasp + rng.normal(0, .1, n), -0.2, 1.0))
  pose[:, 14] = _aa(ch.flex_axis, np.clip(0.1 + 0.9 * grasp + rng.normal(0, .12, n), -0.3, 1.4))
  return pose.reshape(n, 45)


# ----------------------------------------------------------------------------
# Assembly.

def _sample_params(rng):
  fl = 1.0 + rng.normal(0, 0.05) + rng.normal(0, 0.025, 4)
  return HandParams(
      scale=float(np.exp(rng.normal(0, 0.07))),
      palm_length=float(1 + rng.normal(0, 0.04)),
      palm_width=float(1 + rng.normal(0, 0.05)),
      palm_thickness=float(1 + rng.normal(0, 0.08)),
      finger_length=tuple(float(x) for x in fl),
      finger_radius=float(1 + rng.normal(0, 0.07)),
      thumb_length=float(1 + rng.normal(0, 0.05)),
      thumb_radius=float(1 + rng.normal(0, 0.06)),
      spread=float(rng.normal(0, 0.03)))


def _signed_volume(v, faces):
  return np.einsum('ij,ij->', v[faces[:, 0]],
                   np.cross(v[faces[:, 1]], v[faces[:, 2]])) / 6.0


def _orient_outward(v, faces, boundary):
  """Consistent winding with outward normals (signed volume of the sealed mesh)."""
  mesh = trimesh.Trimesh(v, faces, process=False)
  trimesh.repair.fix_winding(mesh)
  faces = np.asarray(mesh.faces)
  # Close the wrist with a fan whose winding follows the boundary edges.
  directed = {(a, b) for f in faces for a, b in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0]))}
  open_edges = [(a, b) for a, b in directed if (b, a) not in directed]
  c = len(v)
  vc = np.concatenate([v, v[boundary].mean(0, keepdims=True)])
  fan = np.array([(b, a, c) for a, b in open_edges])
  vol = _signed_volume(vc, np.concatenate([faces, fan]))
  return faces if vol > 0 else faces[:, ::-1].copy()


def generate(seed: int = DEFAULT_SEED, num_shape_samples: int = 200,
             num_pose_samples: int = 20000, verbose: bool = False):
  """The right-hand model arrays (numpy, MANO key names, plus side/tip_ids/name)."""
  if num_shape_samples <= 10:
    raise ValueError(f'num_shape_samples must exceed the 10 shape components, '
                     f'got {num_shape_samples}')
  t0 = time.time()
  rng = np.random.default_rng(seed)
  base = HandParams()
  v0, j0, chains0, topo = shaped_mesh(base)
  samples_v, samples_j = [], []
  for _ in range(num_shape_samples):
    v, j, _, _ = shaped_mesh(_sample_params(rng), topo)
    samples_v.append(v)
    samples_j.append(j)
  sv, sj = np.stack(samples_v), np.stack(samples_j)
  v_template = sv.mean(0)
  joints = sj.mean(0)
  dev = (sv - v_template).reshape(len(sv), -1)
  _, svals, vt = np.linalg.svd(dev, full_matrices=False)
  std = svals / np.sqrt(max(len(sv) - 1, 1))
  nb = 10
  shapedirs = (vt[:nb] * std[:nb, None]).reshape(nb, -1, 3).transpose(1, 2, 0)
  # Fix each component's sign: +beta makes the hand bigger on average.
  signs = np.sign(np.einsum('vcb,vc->b', shapedirs, v_template - v_template.mean(0)))
  shapedirs *= np.where(signs == 0, 1.0, signs)
  if verbose:
    print(f'  shapes: {num_shape_samples} meshes, explained variance of 10 '
          f'components {np.sum(svals[:nb]**2) / np.sum(svals**2):.3f} '
          f'({time.time() - t0:.1f} s)')
  faces = _orient_outward(v_template, topo.faces, topo.boundary)
  # Rig on the mean shape, with the skeleton of the mean proportions.
  _, chains = skeleton(base)
  j_reg = joint_regressor(v_template, joints, topo)
  weights = skinning_weights(v_template, topo, chains)
  posedirs = pose_correctives(v_template, faces, topo, chains)
  poses = sample_natural_poses(chains, num_pose_samples, rng)
  hands_mean = poses.mean(0)
  _, psv, pvt = np.linalg.svd(poses - hands_mean, full_matrices=False)
  if verbose:
    resid = np.abs(j_reg @ v_template - joints).max()
    print(f'  vertices {len(v_template)}, faces {len(faces)}, joint regressor '
          f'residual {resid * 1e3:.3f} mm, pose PCA: first 6 components explain '
          f'{np.sum(psv[:6]**2) / np.sum(psv**2):.3f} ({time.time() - t0:.1f} s)')
  tips = np.array([topo.apex[n] for n in TIP_ORDER])
  return dict(
      v_template=v_template, shapedirs=shapedirs, posedirs=posedirs,
      J_regressor=j_reg, weights=weights, f=faces.astype(np.int32),
      kintree_table=np.stack([np.array(PARENTS), np.arange(16)]).astype(np.int64),
      hands_components=pvt, hands_mean=hands_mean,
      hands_coeffs_std=psv / np.sqrt(len(poses) - 1),
      side=np.asarray('right'), tip_ids=tips.astype(np.int64),
      name=np.asarray(NAME))


_MIRROR = np.array([-1.0, 1.0, 1.0])


def mirror_arrays(arrays):
  """Right-hand arrays -> left-hand arrays, the mirror image across x = 0."""
  out = dict(arrays)
  out['v_template'] = arrays['v_template'] * _MIRROR
  out['shapedirs'] = arrays['shapedirs'] * _MIRROR[None, :, None]
  # Mirrored rotations are M R M, so element (r, c) of R - I flips sign with
  # m_r m_c, and displacements flip with M.
  sign_rc = np.outer(_MIRROR, _MIRROR).reshape(9)
  out['posedirs'] = (arrays['posedirs'] * _MIRROR[None, :, None]
                     * np.tile(sign_rc, 15)[None, None, :])
  out['f'] = arrays['f'][:, ::-1].copy()
  aa_sign = np.tile(np.array([1.0, -1.0, -1.0]), 15)
  out['hands_components'] = arrays['hands_components'] * aa_sign
  out['hands_mean'] = arrays['hands_mean'] * aa_sign
  out['side'] = np.asarray('left')
  return out


def write_assets(out_dir, seed=DEFAULT_SEED, verbose=True, **kwargs):
  os.makedirs(out_dir, exist_ok=True)
  right = generate(seed, verbose=verbose, **kwargs)
  paths = []
  for side, arrays in (('right', right), ('left', mirror_arrays(right))):
    path = os.path.join(out_dir, f'procedural_hand_{side}.npz')
    np.savez_compressed(path, **arrays)
    paths.append(path)
  return paths


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  ap.add_argument('--out', default=ASSET_DIR)
  ap.add_argument('--seed', type=int, default=DEFAULT_SEED)
  args = ap.parse_args(argv)
  t0 = time.time()
  for path in write_assets(args.out, args.seed):
    print(f'wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB)')
  print(f'done in {time.time() - t0:.1f} s')


if __name__ == '__main__':
  main()
