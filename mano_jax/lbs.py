"""MANO forward pass: shape blend, pose correctives, kinematics, skinning.

Staged like the math: `shape_stage` (betas -> rest vertices and joints),
`pose_rotations` (any pose representation -> per-joint rotation matrices),
`kinematics` (rotations + rest joints -> global joint transforms), `skin`.
All take any leading batch shape and are pure jnp, so jit/vmap/grad/jvp
compose freely. `forward` computes the same thing faster: blend shapes and
skinning in one chunked pass with a hand-written VJP (mano_jax/skinning.py),
so it supports reverse-mode differentiation (grad, vjp, jacrev) and vmap but
not forward mode (jvp, jacfwd): chain the staged functions for that.
"""

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mano_jax import joints as joints_lib
from mano_jax import rotations, skinning
from mano_jax.model import ManoModel

POSE_REPRS = ('axis_angle', 'pca', 'rotmat', 'rot6d')


def _like(x, ref):
  # Explicit broadcasting: the code runs under jax_numpy_rank_promotion='raise'.
  return jnp.broadcast_to(x, ref.shape)


class ManoOutput(NamedTuple):
  """vertices (..., V, 3) m; joints (..., 21, 3) m in the requested order;
  transforms (..., 16, 4, 4): joint k's global frame (rotation of its local
  frame, which at rest is aligned with the model frame, and its posed
  position, translation included)."""
  vertices: jax.Array
  joints: jax.Array
  transforms: jax.Array


def _float_dtype(*xs):
  dt = jnp.result_type(*[x for x in xs if x is not None])
  return dt if jnp.issubdtype(dt, jnp.floating) else jnp.result_type(float)


def _check_finite_if_concrete(name, x):
  # Under jit the values are unknown; outside it a NaN input is a user error
  # worth a clear message rather than NaN vertices.
  if x is not None and not isinstance(x, jax.core.Tracer):
    if not np.all(np.isfinite(np.asarray(x))):
      raise ValueError(f'mano_jax.forward: {name} contains NaN or Inf')


def shape_stage(model: ManoModel, betas):
  """betas (..., b<=B) -> rest vertices (..., V, 3), rest joints (..., J, 3)."""
  dtype = betas.dtype
  nb = betas.shape[-1]
  shapedirs = jnp.asarray(model.shapedirs, dtype)[..., :nb]
  v_template = jnp.asarray(model.v_template, dtype)
  v_offsets = jnp.einsum('...b,vcb->...vc', betas, shapedirs)
  return _like(v_template, v_offsets) + v_offsets, _rest_joints(model, betas)


def _rest_joints(model: ManoModel, betas):
  """betas (..., b) -> rest joints (..., J, 3)."""
  dtype = betas.dtype
  nb = betas.shape[-1]
  if model.J_shapedirs is not None:
    j_template = jnp.asarray(model.J_template, dtype)
    j_dirs = jnp.asarray(model.J_shapedirs, dtype)[..., :nb]
  else:
    # The joint regressor is linear: apply it to the template and the blend
    # shapes (J x V work) rather than to every shaped mesh (batch x J x V).
    shapedirs = jnp.asarray(model.shapedirs, dtype)[..., :nb]
    j_reg = jnp.asarray(model.J_regressor, dtype)
    j_template = j_reg @ jnp.asarray(model.v_template, dtype)
    j_dirs = jnp.einsum('jv,vcb->jcb', j_reg, shapedirs)
  j_offsets = jnp.einsum('...b,jcb->...jc', betas, j_dirs)
  return _like(j_template, j_offsets) + j_offsets


def pose_rotations(model: ManoModel, pose, *, pose_repr='axis_angle',
                   flat_hand_mean=False):
  """Any pose representation -> (..., J, 3, 3) per-joint rotations.

  axis_angle (..., 3J); pca (..., 3 + n), hand pose = coeffs @
  hands_components[:n]; rotmat (..., J, 3, 3); rot6d (..., J, 6).
  With flat_hand_mean=False, hands_mean is added to the 3 (J-1) hand pose in
  axis-angle, as smplx.MANO does; for rotmat/rot6d that means the matrices
  are converted to axis-angle first (use flat_hand_mean=True to feed final
  rotations directly).
  """
  nj = model.num_joints
  nh = 3 * (nj - 1)
  dtype = pose.dtype
  if pose_repr == 'axis_angle':
    _expect(pose, (3 * nj,), 'pose', pose_repr)
    aa = pose
  elif pose_repr == 'pca':
    ncomp = pose.shape[-1] - 3 if pose.ndim else -1
    max_comp = model.hands_components.shape[0]
    if pose.ndim == 0 or not 1 <= ncomp <= max_comp:
      raise ValueError(
          f'mano_jax.forward: pose_repr="pca" expects pose of shape '
          f'(..., 3 + n) with 1 <= n <= {max_comp}, got {pose.shape}')
    comps = jnp.asarray(model.hands_components, dtype)[:ncomp]
    aa = jnp.concatenate([pose[..., :3], pose[..., 3:] @ comps], -1)
  elif pose_repr in ('rotmat', 'rot6d'):
    if pose_repr == 'rotmat':
      _expect(pose, (nj, 3, 3), 'pose', pose_repr)
      rot = pose
    else:
      _expect(pose, (nj, 6), 'pose', pose_repr)
      rot = rotations.rot6d_to_matrix(pose)
    if flat_hand_mean:
      return rot
    hand_aa = rotations.matrix_to_axis_angle(rot[..., 1:, :, :])
    aa = jnp.concatenate(
        [jnp.zeros(rot.shape[:-3] + (3,), dtype),
         hand_aa.reshape(hand_aa.shape[:-2] + (nh,))], -1)
    rot_root = rot[..., :1, :, :]
    hand = aa[..., 3:] + _like(jnp.asarray(model.hands_mean, dtype), aa[..., 3:])
    hand_rot = _axis_angle_to_matrix(
        hand.reshape(hand.shape[:-1] + (nj - 1, 3)))
    return jnp.concatenate([rot_root, hand_rot], -3)
  else:
    raise ValueError(f'mano_jax.forward: pose_repr must be one of {POSE_REPRS}, '
                     f'got {pose_repr!r}')
  if not flat_hand_mean:
    mean = jnp.concatenate([jnp.zeros((3,), dtype),
                            jnp.asarray(model.hands_mean, dtype)])
    aa = aa + _like(mean, aa)
  return _axis_angle_to_matrix(aa.reshape(aa.shape[:-1] + (nj, 3)))


def _axis_angle_to_matrix(aa):
  """rotations.axis_angle_to_matrix with K K written out (K K = a a^T - |a|^2 I
  for K = skew(a)): all elementwise, where the batched 3x3 dot and its
  gradient cost ~1 ms of a batch-1024 forward+backward on CPU. Same series
  below rotations._SMALL_ANGLE_SQ and the same double-where, so gradients
  stay finite and exact at zero."""
  theta_sq = jnp.sum(aa * aa, axis=-1)
  small = theta_sq < rotations._SMALL_ANGLE_SQ
  safe_sq = jnp.where(small, 1.0, theta_sq)
  theta = jnp.sqrt(safe_sq)
  a = jnp.where(small, 1.0 - theta_sq / 6.0 + theta_sq * theta_sq / 120.0,
                jnp.sin(theta) / theta)
  b = jnp.where(small, 0.5 - theta_sq / 24.0 + theta_sq * theta_sq / 720.0,
                (1.0 - jnp.cos(theta)) / safe_sq)
  x, y, z = aa[..., 0], aa[..., 1], aa[..., 2]
  ax, ay, az = a * x, a * y, a * z
  bx, by, bz = b * x, b * y, b * z
  c = 1.0 - b * theta_sq
  return jnp.stack([
      jnp.stack([c + bx * x, bx * y - az, bx * z + ay], -1),
      jnp.stack([by * x + az, c + by * y, by * z - ax], -1),
      jnp.stack([bz * x - ay, bz * y + ax, c + bz * z], -1)], -2)


@functools.lru_cache(maxsize=None)
def _levels(parents: tuple):
  """Groups joints by depth so each level is one batched matmul.

  Returns (order, inverse of order, root joints, [(joints of level l, their
  parents' positions in `order`), ...]) where `order` concatenates the levels.
  """
  depth = [0] * len(parents)
  for j, p in enumerate(parents):
    depth[j] = 0 if p < 0 else depth[p] + 1
  levels = [[j for j in range(len(parents)) if depth[j] == d]
            for d in range(max(depth) + 1)]
  order = [j for lv in levels for j in lv]
  pos = {j: i for i, j in enumerate(order)}
  # Static int32 indices: int64 numpy indices trip jax 0.10's index
  # normalisation inside jit when jax_enable_x64 is switched at run time.
  i32 = lambda x: np.asarray(x, np.int32)
  spec = [(i32(lv), i32([pos[parents[j]] for j in lv])) for lv in levels[1:]]
  return i32(order), i32(np.argsort(order)), i32(levels[0]), spec


@functools.lru_cache(maxsize=None)
def _chains(parents: tuple):
  """(chains, length) if joints 1.. are equal-length chains hanging off joint
  0, numbered chain by chain (MANO: 5 fingers x 3 joints), else None."""
  rest = len(parents) - 1
  for length in range(1, rest + 1):
    if rest % length == 0 and all(
        parents[1 + i] == (0 if i % length == 0 else i) for i in range(rest)):
      return rest // length, length
  return None


def _kinematics_chains(rot, j_rest, nc, nl):
  """`kinematics` for joints 1.. in nc chains of nl off the root: static
  slices and a loop over the chain depth, no gathers (whose gradients are
  scatters); ~1.5x faster than `_kinematics_levels` at batch 1024.
  (Writing the 3x3 products as broadcast multiply-sums is 3x slower.)"""
  batch = rot.shape[:-3]
  r_root, p_root = rot[..., 0, :, :], j_rest[..., 0, :]
  r = rot[..., 1:, :, :].reshape(batch + (nc, nl, 3, 3))
  j = j_rest[..., 1:, :].reshape(batch + (nc, nl, 3))
  parent_j = jnp.concatenate(
      [jnp.broadcast_to(p_root[..., None, None, :], batch + (nc, 1, 3)), j[..., :-1, :]], -2)
  rel = j - parent_j
  g_r = jnp.broadcast_to(r_root[..., None, :, :], batch + (nc, 3, 3))
  g_p = jnp.broadcast_to(p_root[..., None, :], batch + (nc, 3))
  out_r, out_p = [], []
  for i in range(nl):
    g_p = jnp.einsum('...ab,...b->...a', g_r, rel[..., i, :]) + g_p
    g_r = g_r @ r[..., i, :, :]
    out_r.append(g_r)
    out_p.append(g_p)
  g_rot = jnp.concatenate(
      [r_root[..., None, :, :], jnp.stack(out_r, -3).reshape(batch + (nc * nl, 3, 3))], -3)
  g_pos = jnp.concatenate(
      [p_root[..., None, :], jnp.stack(out_p, -2).reshape(batch + (nc * nl, 3))], -2)
  return g_rot, g_pos


def kinematics(parents: tuple, rot, j_rest):
  """Forward kinematics.

  rot (..., J, 3, 3) local rotations, j_rest (..., J, 3) rest joints ->
  global rotations (..., J, 3, 3) and posed joint positions (..., J, 3).
  """
  chains = _chains(tuple(parents))
  if chains is not None:
    return _kinematics_chains(rot, j_rest, *chains)
  return _kinematics_levels(tuple(parents), rot, j_rest)


def _kinematics_levels(parents: tuple, rot, j_rest):
  """`kinematics` for any tree: one batched matmul per depth level."""
  order, inv_order, roots, spec = _levels(parents)
  parents_arr = np.array([max(p, 0) for p in parents], np.int32)
  # Bone vectors in the rest pose; the root keeps its absolute position.
  is_root = _like(jnp.asarray((np.array(parents) < 0)[:, None]), j_rest)
  rel = j_rest - jnp.where(is_root, 0.0, j_rest[..., parents_arr, :])
  g_rot = [rot[..., roots, :, :]]
  g_pos = [rel[..., roots, :]]
  for joints_l, parent_pos in spec:
    prev_rot = jnp.concatenate(g_rot, -3)
    prev_pos = jnp.concatenate(g_pos, -2)
    p_rot = prev_rot[..., parent_pos, :, :]
    g_rot.append(p_rot @ rot[..., joints_l, :, :])
    g_pos.append(jnp.einsum('...ab,...b->...a', p_rot, rel[..., joints_l, :])
                 + prev_pos[..., parent_pos, :])
  g_rot = jnp.concatenate(g_rot, -3)[..., inv_order, :, :]
  g_pos = jnp.concatenate(g_pos, -2)[..., inv_order, :]
  return g_rot, g_pos


def skin(model: ManoModel, v_rest, rot, g_rot, g_pos, j_rest):
  """Pose correctives + linear blend skinning -> posed vertices (..., V, 3).

  v_rest (..., V, 3), rot / g_rot (..., J, 3, 3), g_pos / j_rest (..., J, 3).
  """
  batch = rot.shape[:-3]
  flat = lambda x, k: x.reshape((-1,) + x.shape[x.ndim - k:])
  rot_f = flat(rot, 3)
  v_cf = jnp.swapaxes(flat(v_rest, 2), -1, -2)
  pd_cf = _cf(model.posedirs_cf, model.posedirs, v_cf.dtype)
  v_posed = v_cf + (_pose_features(rot_f) @ pd_cf).reshape(v_cf.shape)
  out = _blend_cf(model, v_posed, flat(g_rot, 3), flat(g_pos, 2), flat(j_rest, 2))
  return jnp.swapaxes(out, -1, -2).reshape(batch + out.shape[-1:] + (3,))


def _cf(cached, dirs, dtype):
  """(V, 3, K) blend shapes as a (K, 3 V) matrix, columns ordered (xyz, vertex)."""
  if cached is not None:
    return jnp.asarray(cached, dtype)
  d = jnp.asarray(dirs, dtype)
  return jnp.transpose(d, (2, 1, 0)).reshape(d.shape[-1], -1)


def _pose_features(rot):
  """(N, J, 3, 3) -> (N, 9 (J - 1)): R_k - I of the non-root joints, flattened."""
  eye = jnp.broadcast_to(jnp.eye(3, dtype=rot.dtype), rot[:, 1:].shape)
  return (rot[:, 1:] - eye).reshape(rot.shape[0], -1)


def _blend_cf(model: ManoModel, v_posed, g_rot, g_pos, j_rest):
  """Linear blend skinning of per-sample rest vertices (N, 3, V) -> (N, 3, V),
  unchunked (`skin`'s staged path; `forward` uses skinning.blend_and_skin)."""
  n, nv, nj = v_posed.shape[0], model.num_vertices, model.num_joints
  weights = jnp.asarray(model.weights, v_posed.dtype)
  a_rows = _skinning_rows(g_rot, g_pos, j_rest).reshape(n * 12, nj)
  blended = (a_rows @ weights.T).reshape(n, 3, 4, nv)
  return (blended[:, :, 0] * v_posed[:, None, 0] + blended[:, :, 1] * v_posed[:, None, 1]
          + blended[:, :, 2] * v_posed[:, None, 2] + blended[:, :, 3])


def _skinning_rows(g_rot, g_pos, j_rest):
  """(N, J, 3, 3), (N, J, 3), (N, J, 3) -> (N, 12, J): joint k's skinning
  transform x -> G_k (x - J_k) + P_k as row-major 3x4 entries."""
  t = g_pos - jnp.einsum('njab,njb->nja', g_rot, j_rest)
  a = jnp.concatenate([g_rot, t[..., None]], -1)
  return jnp.swapaxes(a.reshape(a.shape[0], a.shape[1], 12), 1, 2)


def _skin_flat(model: ManoModel, betas, rot, g_rot, g_pos, j_rest, transl):
  """Blend shapes + skinning on one flat batch axis -> vertices (N, V, 3)."""
  dtype = betas.dtype
  # Shape and pose blend shapes in one matmul: [betas, R - I] @ [S; P]^T.
  dirs_t = jnp.concatenate(
      [_cf(model.shapedirs_cf, model.shapedirs, dtype)[:betas.shape[-1]],
       _cf(model.posedirs_cf, model.posedirs, dtype)], 0)
  coeffs = jnp.concatenate([betas, _pose_features(rot)], 1)
  return skinning.blend_and_skin(
      coeffs, _skinning_rows(g_rot, g_pos, j_rest), transl, dirs_t,
      jnp.asarray(model.v_template, dtype).T, jnp.asarray(model.weights, dtype))


def _pose_batch_shape(model, pose, pose_repr):
  nj = model.num_joints
  if pose_repr == 'axis_angle':
    tail = (3 * nj,)
  elif pose_repr == 'pca':
    max_comp = model.hands_components.shape[0]
    if pose.ndim == 0 or not 1 <= pose.shape[-1] - 3 <= max_comp:
      raise ValueError(
          f'mano_jax.forward: pose_repr="pca" expects pose of shape '
          f'(..., 3 + n) with 1 <= n <= {max_comp}, got {pose.shape}')
    tail = pose.shape[-1:]
  elif pose_repr == 'rotmat':
    tail = (nj, 3, 3)
  elif pose_repr == 'rot6d':
    tail = (nj, 6)
  else:
    raise ValueError(f'mano_jax.forward: pose_repr must be one of {POSE_REPRS}, '
                     f'got {pose_repr!r}')
  _expect(pose, tail, 'pose', pose_repr)
  return pose.shape[:pose.ndim - len(tail)]


def _expect(x, tail, name, pose_repr):
  if x.shape[x.ndim - len(tail):] != tail or x.ndim < len(tail):
    raise ValueError(
        f'mano_jax.forward: {name} for pose_repr={pose_repr!r} must have shape '
        f'(..., {", ".join(map(str, tail))}), got {x.shape}')


def forward(model: ManoModel, pose, betas=None, transl=None, *,
            pose_repr: str = 'axis_angle', flat_hand_mean: bool = False,
            joint_order: str = 'mano', joints: str = 'kinematic') -> ManoOutput:
  """MANO hand: pose (+ betas, transl) -> vertices, 21 joints, joint frames.

  Args:
    model: a ManoModel (`mano_jax.load` / `load_procedural`).
    pose: see `pose_rotations` for the shapes of each `pose_repr`; the first
      joint is the global orientation (about the wrist joint).
    betas: (..., b) shape coefficients, b <= model.num_betas (default zeros).
    transl: (..., 3) translation in metres (default zeros).
    flat_hand_mean: False (default, as smplx and InterHand2.6M's fits) adds
      model.hands_mean to the hand pose.
    joint_order: 'mano' (16 kinematic joints + tips thumb..pinky),
      'openpose' or 'interhand'.
    joints: 'kinematic' (default): the 16 forward-kinematics joint positions;
      'regressed': J_regressor applied to the posed mesh (InterWild's and
      IntagHand's joints, what their evaluations score). Both take the five
      fingertips from the mesh (model.tip_ids) and use `joint_order`.
  Leading batch dims of pose, betas and transl broadcast against each other.
  Float32 unless the inputs are float64 (with jax_enable_x64).
  Differentiable in reverse mode (grad, vjp, jacrev); for forward mode (jvp,
  jacfwd) chain shape_stage, pose_rotations, kinematics and skin.
  """
  pose = jnp.asarray(pose)
  dtype = _float_dtype(pose, betas, transl)
  pose = pose.astype(dtype)
  for name, x in (('pose', pose), ('betas', betas), ('transl', transl)):
    _check_finite_if_concrete(name, x)
  if joint_order not in joints_lib.JOINT_ORDERS:
    raise ValueError(f'mano_jax.forward: joint_order must be one of '
                     f'{sorted(joints_lib.JOINT_ORDERS)}, got {joint_order!r}')
  if joints not in ('kinematic', 'regressed'):
    raise ValueError(f"mano_jax.forward: joints must be 'kinematic' or 'regressed', "
                     f'got {joints!r}')
  pose_batch = _pose_batch_shape(model, pose, pose_repr)
  if betas is None:
    betas = jnp.zeros((model.num_betas,), dtype)
  betas = jnp.asarray(betas, dtype)
  if betas.ndim == 0 or betas.shape[-1] > model.num_betas:
    raise ValueError(f'mano_jax.forward: betas must have shape (..., b) with '
                     f'b <= {model.num_betas}, got {betas.shape}')
  if transl is not None:
    transl = jnp.asarray(transl, dtype)
    if transl.ndim == 0 or transl.shape[-1] != 3:
      raise ValueError(f'mano_jax.forward: transl must have shape (..., 3), '
                       f'got {transl.shape}')
  try:
    jnp.broadcast_shapes(pose_batch, betas.shape[:-1],
                         () if transl is None else transl.shape[:-1])
  except ValueError:
    raise ValueError(
        f'mano_jax.forward: batch shapes do not broadcast: pose {pose_batch}, '
        f'betas {betas.shape[:-1]}, transl '
        f'{None if transl is None else transl.shape[:-1]}') from None
  return _forward(model, pose, betas, transl, pose_repr=pose_repr,
                  flat_hand_mean=flat_hand_mean, joint_order=joint_order, joints=joints)


@functools.partial(jax.jit, static_argnames=('pose_repr', 'flat_hand_mean',
                                             'joint_order', 'joints'))
def _forward(model, pose, betas, transl, *, pose_repr, flat_hand_mean,
             joint_order, joints='kinematic'):
  # Jitted so that eager callers run one compiled program instead of ~100
  # op-by-op dispatches; inside a caller's jit it is simply inlined.
  dtype = pose.dtype
  rot = pose_rotations(model, pose, pose_repr=pose_repr,
                       flat_hand_mean=flat_hand_mean)
  batch = jnp.broadcast_shapes(rot.shape[:-3], betas.shape[:-1],
                               () if transl is None else transl.shape[:-1])
  # One flat batch axis inside (also: XLA:CPU in jax 0.10 mis-compiles the
  # gathered batched matmuls of `kinematics` with two or more batch axes).
  n = math.prod(batch)
  betas_f = jnp.broadcast_to(betas, batch + betas.shape[-1:]).reshape(n, -1)
  rot_f = jnp.broadcast_to(rot, batch + rot.shape[-3:]).reshape((n,) + rot.shape[-3:])
  transl_f = (jnp.zeros((n, 3), dtype) if transl is None
              else jnp.broadcast_to(transl, batch + (3,)).reshape(n, 3))
  j_rest = _rest_joints(model, betas_f)
  g_rot, g_pos = kinematics(model.parents, rot_f, j_rest)
  verts = _skin_flat(model, betas_f, rot_f, g_rot, g_pos, j_rest, transl_f)
  verts = verts.reshape(batch + (model.num_vertices, 3))
  g_rot = g_rot.reshape(batch + g_rot.shape[1:])
  g_pos = (g_pos + transl_f[:, None, :]).reshape(batch + g_pos.shape[1:])
  tips = verts[..., np.asarray(model.tip_ids, np.int32), :]
  if joints == 'regressed':
    body = jnp.einsum('jv,...vc->...jc', jnp.asarray(model.J_regressor, dtype), verts)
  else:
    body = g_pos
  joints21 = joints_lib.reorder(jnp.concatenate([body, tips], -2), joint_order)
  bottom = jnp.broadcast_to(jnp.asarray([0, 0, 0, 1], dtype),
                            batch + (model.num_joints, 1, 4))
  transforms = jnp.concatenate(
      [jnp.concatenate([g_rot, g_pos[..., None]], -1), bottom], -2)
  return ManoOutput(vertices=verts, joints=joints21, transforms=transforms)
