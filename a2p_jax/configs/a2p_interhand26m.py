"""A2P stage 1 with the paper's settings on InterHand2.6M.

    python train.py --config a2p_jax/configs/a2p_interhand26m.py --workdir /ckpt/a2p \
        --config.data.root=/data/InterHand2.6M --config.data.mano_dir=/data/mano \
        --config.data.priors=/data/priors/sapiens_features_train \
        --config.model.encoder_init=/ckpt/resnet50-0676ba61.pth \
        --config.model.fae_init=/ckpt/resnet50-0676ba61.pth

The prior store comes from `python -m a2p_jax.teacher.precompute --teacher
sapiens_features ... --pca 64` (README: "Stage 1 on a pod"). `get_config('cpu')`:
the same model at batch 2 for trying it on a laptop; `get_config('outputs')`:
the comparison with Sapiens' task outputs (heatmaps, segmentation, depth)
as the prior instead of its features.

Which values are the paper's and which are ours. The paper (a summary is
all we have, ../shared/design.md) gives: ResNet-50 image encoder and FAE,
a Transformer fusing <F_i, F_p>, Sapiens as the frozen teacher of keypoint,
segmentation and depth priors distilled as features, AdamW with lr 1e-4
divided by 10 at epoch 4, batch 48 (on 4 A100s), and 52.6 M parameters at
inference. Everything else below is OUR CHOICE and says what it rests on;
InterWild (facebookresearch/InterWild main/config.py, the code A2P's
protocols and data follow) is the usual basis.
"""

from a2p_jax.configs import common


def get_config(arg=None):
  c = common.base()
  # --- The paper's settings.
  c.batch_size = 48                 # paper: batch 48
  c.optim.lr = 1e-4                 # paper: AdamW, lr 1e-4
  c.optim.decay_epochs = (4,)       # paper: / 10 at epoch 4
  c.optim.decay_factor = 10.0
  c.model.encoder_depth = 50        # paper: ResNet-50 image encoder
  c.model.fae_depth = 50            # paper: ResNet-50 FAE
  c.teacher.signal = 'features'     # paper: implicit (feature) distillation of Sapiens
  c.data.prior_groups = 'keypoint,segmentation,depth'   # paper: F_k, F_s, F_d
  # --- Our choices (the paper does not give them).
  c.num_epochs = 7.0                # InterWild: end_epoch 7 with its lr drop at epoch 4, as A2P's
  c.keep_period = 10_000            # ours: weaker checkpoints kept for stage 2's pairs (ii)
  c.optim.weight_decay = 1e-4       # ours: AdamW's decay is not given (InterWild: Adam, none)
  c.optim.warmup_steps = 0          # ours: none (InterWild has none)
  c.optim.grad_clip = 0.0           # ours: none (InterWild has none)
  c.model.encoder_width = 64        # ResNet-50's own width (ImageNet weights need it)
  c.model.fae_width = 64
  c.model.encoder_init = ''         # ours: point both at an ImageNet ResNet-50 (every method
  c.model.fae_init = ''             #   A2P compares with starts from ImageNet; see the README)
  c.model.input_hw = (256, 256)     # InterWild's hand input 256 x 256; prior grid = input / 32
  c.model.prior_dim = 256           # ours, with the next four: 53.6 M parameters at inference
  c.model.dim = 512                 #   against the paper's 52.6 M
  c.model.num_layers = 2
  c.model.num_heads = 8
  c.model.mlp_dim = 1024
  c.model.dropout = 0.1             # ours
  c.model.mano_joints = 'regressed'  # InterWild: joint_cam = sh_joint_regressor @ mesh_cam
  # Projection (models/stage1.py): 3x3 conv, GELU, 1x1 conv to prior_dim (ours).
  for term in c.loss:                # ours, every term 1: InterWild sums its L1 terms unweighted
    c.loss[term] = 1.0
  c.data.aug_scale = 0.25           # InterWild's get_aug_config: scale 0.25, rotation 30 deg,
  c.data.aug_rotation_deg = 30.0    #   colour 0.2, flip 0.5 (feature stores hold both views
  c.data.aug_color = 0.2            #   of the teacher crop, so flips stay exact)
  c.data.aug_flip_prob = 0.5
  # Prior store (set when it is made, recorded in its meta.json): Sapiens
  # features on a 16 x 12 grid over the teacher crop (two-hand box x 2),
  # PCA to 64 dims per task (ours: 73,728 bytes per example, ~100 GB for
  # InterHand2.6M train; teacher/features.py).
  if arg == 'cpu':
    c.batch_size = 2
    c.data.num_workers = 0
    c.log_every = 1
  elif arg == 'outputs':
    c.teacher.signal = 'outputs'
  elif arg:
    raise ValueError(f'unknown config arg {arg!r} (expected none, "cpu" or "outputs")')
  return c.lock()  # setting a field that does not exist (a typo) raises
