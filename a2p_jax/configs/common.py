"""Defaults shared by every stage-1 config (the paper's settings); each
config file overrides what differs."""

import ml_collections


def base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.batch_size = 48             # global, over all devices and processes
  c.num_epochs = 6.0
  c.num_train_steps = 0         # > 0 overrides num_epochs
  c.log_every = 100
  c.checkpoint_every = 2000
  c.keep_checkpoints = 3
  c.keep_period = 0             # > 0: checkpoints at multiples of this step are never deleted
                                #   (weaker checkpoints for stage-2 pairs (ii))
  c.async_checkpoints = True
  c.image_every = 2000          # TensorBoard pictures of predictions; 0: off
  c.progress = True

  c.data = ml_collections.ConfigDict()
  c.data.dataset = 'interhand26m'   # synthetic | interhand26m | hic
  c.data.root = ''                  # the data set's folder (synthetic: generated if '')
  c.data.tfds_dir = ''              # read a built TFDS array_record set instead
  c.data.mano_dir = ''              # MANO_{RIGHT,LEFT}.pkl ('' = procedural hand, NOT MANO)
  c.data.subset = ''                # e.g. InterWild's aid_human_annot_train.txt
  c.data.train_split = 'train'
  # A training mix instead of one data set: name -> {dataset, root, split,
  # group, weight, priors, subset} (see a2p_jax/configs/a2p_paper_mix.py and
  # a2p_jax.data.pipeline.mixture_probabilities); empty: train on c.data.dataset.
  c.data.mix = ml_collections.ConfigDict()
  c.data.priors = ''                # prior store folder, 'oracle' (synthetic) or '' (none)
  c.data.prior_groups = 'keypoint,segmentation,depth'  # teacher channel groups fed to Proj
  c.data.num_workers = 0            # grain worker processes
  c.data.synthetic_frames = 256
  c.data.synthetic_seed = 0
  c.data.synthetic_image_size = (512, 334)   # (H, W)
  c.data.synthetic_orientation_deg = 180.0   # hand orientation / camera azimuth spread
  c.data.synthetic_rig = 'dome'     # cameras: one dome for all captures (as InterHand2.6M) or
  #                                   'capture' (each capture its own: test views unseen)
  c.data.aug_scale = 0.25
  c.data.aug_rotation_deg = 30.0
  c.data.aug_flip_prob = 0.5
  c.data.aug_color = 0.2

  # What the prior store holds: 'outputs' (task maps: heatmaps, segmentation,
  # depth; the oracle and the TorchScript Sapiens teacher) or 'features'
  # (Sapiens backbone features, PCA-reduced: teacher/features.py). Checked
  # against the store's meta when training starts.
  c.teacher = ml_collections.ConfigDict()
  c.teacher.signal = 'outputs'

  c.model = ml_collections.ConfigDict()
  c.model.input_hw = (256, 256)
  c.model.encoder_depth = 50
  c.model.encoder_width = 64
  c.model.fae_depth = 50
  c.model.fae_width = 64
  c.model.prior_dim = 256
  c.model.dim = 512
  c.model.num_layers = 2          # fusion transformer depth; 2 gives 53.6M at inference (paper: 52.6M)
  c.model.num_heads = 8
  c.model.mlp_dim = 1024
  c.model.dropout = 0.1
  # A torchvision/timm ResNet state dict (.pth / .safetensors) for each ResNet, '' = random
  # init; read when a run starts, never on resume (docs/manual.md, stage 1).
  c.model.encoder_init = ''
  c.model.fae_init = ''
  # The predicted joints the losses and outputs use: 'regressed' = MANO's J_regressor on the
  # posed mesh + fingertip vertices (InterWild trains and every protocol scores these);
  # 'kinematic' = the 16 forward-kinematics joints + tips. The meshes are the same either way.
  c.model.mano_joints = 'regressed'

  c.loss = ml_collections.ConfigDict()
  c.loss.mano_pose = 1.0
  c.loss.mano_shape = 1.0
  c.loss.joints_3d = 1.0
  c.loss.joints_2d = 1.0
  c.loss.depth_rel = 1.0
  c.loss.rel_root = 1.0
  c.loss.prior = 1.0

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 1e-4
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.weight_decay = 1e-4
  c.optim.decay_epochs = (4,)       # lr / decay_factor at these epochs
  c.optim.decay_factor = 10.0
  c.optim.warmup_steps = 0
  c.optim.grad_clip = 0.0

  # Feed F_fae instead of F_p in training with this probability (ramped in
  # over ramp_steps): the train/test-gap ablation; the paper uses F_p.
  c.fae_mix = ml_collections.ConfigDict()
  c.fae_mix.prob = 0.0
  c.fae_mix.ramp_steps = 0

  c.mesh = ml_collections.ConfigDict()
  c.mesh.fsdp = 1                   # > 1: parameters split over this many devices
  return c
