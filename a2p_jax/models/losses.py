"""Stage-1 losses: L_hand (MANO parameters, 3D joints, 2.5D joints, relative
root) + L_prior, and the predicted meshes.

Conventions (see stage1.py): hands (right, left); the predicted rot6d are
MANO's pose before hands_mean (flat_hand_mean=False), the same convention
as the data's axis-angle `mano_pose`, so the pose loss compares rotation
matrices of the two directly. Joints in InterHand2.6M order (tip first,
wrist last; right 0-20, left 21-41). Every masked term is a mean over the
valid entries only, sum(mask * err) / max(sum(mask), 1); invalid targets
are replaced before use, so NaN or garbage there changes neither the loss
nor its gradient.
"""

import jax
import jax.numpy as jnp

import mano_jax
from a2p_jax.models import camera

WRIST = 20                 # wrist row within each hand's 21 InterHand joints
LOSS_TERMS = ('mano_pose', 'mano_shape', 'joints_3d', 'joints_2d', 'depth_rel', 'rel_root',
              'prior')


def masked_mean(err, mask):
  """sum(mask * err) / max(sum(mask), 1); err and mask of the same shape."""
  mask = mask.astype(err.dtype)
  return jnp.sum(jnp.where(mask > 0, err, 0.0) * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def _clean(target, mask, fill=0.0):
  """Targets where mask > 0, `fill` elsewhere (mask broadcast over trailing dims)."""
  m = mask.reshape(mask.shape + (1,) * (target.ndim - mask.ndim)) > 0
  return jnp.where(m, target, jnp.asarray(fill, target.dtype))


MANO_JOINTS = ('kinematic', 'regressed')


def mano_outputs(out, mano_models, joints: str = 'kinematic'):
  """Predicted MANO meshes in camera space.

  out: Stage1 outputs ('pose_6d' (B, 2, 16, 6), 'betas' (B, 2, 10),
  'root_cam' (B, 2, 3)); mano_models: (right, left) ManoModel. `joints`:
  'kinematic' (the 16 forward-kinematics joints + tips) or 'regressed'
  (J_regressor on the posed mesh + tips: InterWild's joints, what the
  evaluation scores). Either way each mesh is placed with its kinematic
  wrist at root_cam, so the meshes do not depend on `joints`.
  Returns {'joints_rel' (B, 42, 3) m relative to each hand's wrist joint,
  'joints_cam' (B, 42, 3), 'vertices' (B, 2, V, 3) camera space}.
  """
  if joints not in MANO_JOINTS:
    raise ValueError(f'mano joints must be one of {MANO_JOINTS}, got {joints!r}')
  joints_cam, verts = [], []
  for k, model in enumerate(mano_models):
    fw = mano_jax.forward(model, out['pose_6d'][:, k], out['betas'][:, k],
                          pose_repr='rot6d', joint_order='interhand', joints=joints)
    shift = out['root_cam'][:, k, None] - fw.transforms[:, None, 0, :3, 3]
    joints_cam.append(fw.joints + shift)
    verts.append(fw.vertices + shift)
  joints_cam = jnp.concatenate(joints_cam, 1)
  wrists = jnp.repeat(joints_cam[:, WRIST::21], 21, axis=1)
  return {'joints_rel': joints_cam - wrists, 'joints_cam': joints_cam,
          'vertices': jnp.stack(verts, 1)}


def place_by_rel_root(mesh, root_cam, rel_root):
  """The one two-hand placement of inference: the left hand moved so that
  its wrist joint is the right wrist plus the relative-root head's
  `rel_root` (B, 3), the estimator MRRPE scores. mesh: `mano_outputs`'s
  dict; root_cam (B, 2, 3). Returns (mesh with the left joints and
  vertices moved, root_cam with the left root moved by the same amount),
  so meshes, joints, root_cam and rel_root all describe the same hands
  (MRRPE from the joints == MRRPE from rel_root; PenVol and stage 2 see
  those hands)."""
  jc = mesh['joints_cam']
  delta = jc[:, WRIST] + rel_root - jc[:, 21 + WRIST]  # (B, 3)
  hand = jnp.stack([jnp.zeros_like(delta), delta], 1)  # (B, 2, 3)
  joints_cam = jc + jnp.repeat(hand, 21, axis=1)
  placed = {'joints_rel': mesh['joints_rel'], 'joints_cam': joints_cam,
            'vertices': mesh['vertices'] + hand[:, :, None]}
  return placed, root_cam + hand


def stage1_loss(out, batch, mano_models, weights, joints: str = 'kinematic'):
  """(total, metrics). `batch`: a2p_jax.data.pipeline.process's fields,
  batched; `weights`: mapping with the keys of LOSS_TERMS; `joints`: the
  predicted joints the losses compare (`mano_outputs`)."""
  b = out['pose_6d'].shape[0]
  input_hw = batch['image'].shape[1:3]
  pred = mano_outputs(out, mano_models, joints)
  mano_valid = batch['mano_valid']
  joint_valid = batch['joint_valid']

  # MANO parameters: rotation matrices (no 6D ambiguity) and betas.
  rot_pred = mano_jax.rot6d_to_matrix(out['pose_6d'])
  gt_pose = _clean(batch['mano_pose'], mano_valid).reshape(b, 2, 16, 3)
  rot_gt = mano_jax.axis_angle_to_matrix(gt_pose)
  pose_err = jnp.mean(jnp.abs(rot_pred - rot_gt), axis=(-3, -2, -1))
  shape_err = jnp.mean(jnp.abs(out['betas'] - _clean(batch['mano_shape'], mano_valid)), -1)

  # 3D root-relative joints and the 2.5D terms (crop pixels + relative depth).
  gt_rel = _clean(batch['joints_rel'], joint_valid)
  j3d_err = jnp.mean(jnp.abs(pred['joints_rel'] - gt_rel), -1)
  uv = camera.project(pred['joints_cam'], batch['affine'], batch['focal'], batch['princpt'])
  valid_2d = batch.get('joints_2d_valid', joint_valid)
  gt_uv = _clean(batch['joints_2d'], valid_2d)
  j2d_err = jnp.mean(jnp.abs(uv - gt_uv), -1) / float(min(input_hw))
  depth_err = jnp.abs(pred['joints_rel'][..., 2] - _clean(batch['depth_rel'], joint_valid))

  rel_valid = batch['rel_root_valid']
  rel_gt = _clean(batch['rel_root'], rel_valid)
  rel_err = jnp.mean(jnp.abs(out['rel_root'] - rel_gt), -1)

  terms = {
      'mano_pose': masked_mean(pose_err, mano_valid),
      'mano_shape': masked_mean(shape_err, mano_valid),
      'joints_3d': masked_mean(j3d_err, joint_valid),
      'joints_2d': masked_mean(j2d_err, valid_2d),
      'depth_rel': masked_mean(depth_err, joint_valid),
      'rel_root': masked_mean(rel_err, rel_valid),
  }
  if out.get('f_p') is not None:
    terms['prior'] = jnp.mean(jnp.square(out['f_fae'] - jax.lax.stop_gradient(out['f_p'])))
  else:
    terms['prior'] = jnp.zeros((), out['f_fae'].dtype)
  total = sum(float(weights[k]) * terms[k] for k in LOSS_TERMS)

  sg = jax.lax.stop_gradient
  dist = jnp.sqrt(jnp.sum(jnp.square(sg(pred['joints_rel']) - gt_rel), -1))
  dist_2d = jnp.sqrt(jnp.sum(jnp.square(sg(uv) - gt_uv), -1))
  rel_dist = jnp.sqrt(jnp.sum(jnp.square(sg(out['rel_root']) - rel_gt), -1))
  metrics = {f'loss_{k}': v for k, v in terms.items()}
  metrics.update({
      'mpjpe_mm': 1000.0 * masked_mean(dist, joint_valid),
      'mrrpe_mm': 1000.0 * masked_mean(rel_dist, rel_valid),
      'joints_2d_px': masked_mean(dist_2d, valid_2d),
      # Tripwire: affines with a reflection are not cameras of the (mirrored)
      # 3D targets (camera.py); should be 0.
      'camera_reflected': jnp.mean((camera.crop_det(batch['affine']) < 0).astype(jnp.float32)),
  })
  return total, metrics
