"""Random stage-1 training batches: the input pipeline's keys, shapes and
dtypes without a data set (train_speed.py, tpu_compile.py)."""

import numpy as np


def random_batch(rng, b, hw, prior_channels):
  h, w = hw
  pose = rng.normal(0, 0.2, (b, 2, 48)).astype(np.float32)
  return {
      'image': rng.integers(0, 255, (b, h, w, 3), dtype=np.uint8),
      'joints_2d': rng.uniform(0, h, (b, 42, 2)).astype(np.float32),
      'joints_2d_valid': np.ones((b, 42), np.float32),
      'joints_rel': rng.normal(0, 0.05, (b, 42, 3)).astype(np.float32),
      'depth_rel': rng.normal(0, 0.05, (b, 42)).astype(np.float32),
      'joint_valid': np.ones((b, 42), np.float32),
      'hand_valid': np.ones((b, 2), np.float32),
      'mano_pose': pose, 'mano_shape': rng.normal(0, 1, (b, 2, 10)).astype(np.float32),
      'mano_trans': np.tile(np.array([0.0, 0.0, 0.6], np.float32), (b, 2, 1)),
      'mano_valid': np.ones((b, 2), np.float32),
      'rel_root': rng.normal(0, 0.05, (b, 3)).astype(np.float32),
      'rel_root_valid': np.ones((b,), np.float32),
      'affine': np.tile(np.array([[0.5, 0, 0], [0, 0.5, 0]], np.float32), (b, 1, 1)),
      'focal': np.full((b, 2), 1000.0, np.float32),
      'princpt': np.full((b, 2), 128.0, np.float32),
      'priors': rng.normal(0, 1, (b, h // 32, w // 32, prior_channels)).astype(np.float32),
  }
