"""A2P stage 2 (paper-like settings): the MDM-style conditional diffusion
model that repairs penetrating two-hand MANO parameters.

    python train.py --config a2p_jax/configs/a2p_diffusion.py --workdir DIR \
        --config.data.root=/data/InterHand2.6M --config.data.mano_dir=/data/mano \
        --config.data.pairs_file=pairs_train.npz

        --config.data.stage1_pairs_file=pairs_stage1.npz

Two kinds of pairs, half of each batch from each (data.stage1_fraction):
(i) perturbed ground truth, `python -m a2p_jax.build_pairs --root DIR
--split train --out pairs_train.npz --num N --mano_dir DIR` (with no
pairs_file they are built into WORKDIR/data on first use); (ii) the
penetrating predictions of the stage-1 run's checkpoints, weaker to final,
`python -m a2p_jax.build_pairs --root DIR --split train --out
pairs_stage1.npz --stage1_workdir STAGE1_WORKDIR --stage1_step all
--mano_dir DIR`. Pairs (ii) are required: trained on (i) alone, stage 2
barely repairs real stage-1 outputs (benchmarks/results.md); training
without them takes --config.data.stage1_fraction=0.
`get_config('test')`: a few steps of a tiny model, for tests.
"""

import ml_collections


def base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.stage = 'stage2'
  c.seed = 0
  c.batch_size = 64               # global, over all devices and processes
  c.num_train_steps = 200_000
  c.log_every = 100
  c.checkpoint_every = 5000
  c.keep_checkpoints = 3
  c.async_checkpoints = True
  c.progress = True

  c.data = ml_collections.ConfigDict()
  c.data.dataset = 'interhand26m'   # synthetic | interhand26m
  c.data.root = ''                  # data folder (synthetic: generated if '')
  c.data.mano_dir = ''              # '' = procedural hand (NOT MANO)
  c.data.subset = ''
  c.data.tfds_dir = ''
  c.data.train_split = 'train'
  c.data.synthetic_frames = 2000
  c.data.synthetic_seed = 0
  c.data.synthetic_image_size = (64, 64)   # images are not used by stage 2
  c.data.pairs_file = ''            # perturbed-ground-truth pairs (.npz); '' = build
  c.data.num_pairs = 50_000         # pairs to build when pairs_file is ''
  c.data.max_examples = 0           # ground truths read for building (0: all)
  c.data.pairs_min_depth_mm = 1.0
  c.data.stage1_pairs_file = ''     # stage-1 prediction pairs (.npz): required when
                                    #   stage1_fraction > 0 (build_pairs --stage1_workdir)
  # Share of each batch drawn from them. On synthetic stage-1 outputs
  # (results.md, 2026-12-02): 0 -> PenVol 1.6-1.8x lower; 0.5 -> 5-17x,
  # MRRPE +3 / +12 mm (without the pull-back); 1.0 -> 13-60x.
  c.data.stage1_fraction = 0.5

  c.model = ml_collections.ConfigDict()
  c.model.latent_dim = 512
  c.model.num_layers = 8
  c.model.num_heads = 4
  c.model.ff_dim = 1024
  c.model.dropout = 0.1
  c.model.residual = True           # predict X_c + correction (starts as the identity)

  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.num_steps = 1000      # cosine schedule

  c.loss = ml_collections.ConfigDict()
  c.loss.x0 = 1.0                   # ||X_0 - D(X_t, t, X_c)||^2, normalized space
  c.loss.joints = 0.0               # MANO joints L2 (cm^2, both hands, right-root frame)
  c.loss.vertices = 0.0             # MANO vertices L2 (cm^2)

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 1e-4
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.weight_decay = 0.0
  c.optim.warmup_steps = 1000
  c.optim.grad_clip = 1.0

  c.sampling = ml_collections.ConfigDict()
  c.sampling.num_steps = 10         # DDIM steps over the 1000
  c.sampling.eta = 0.0
  c.sampling.start_frac = 1.0       # < 1: start from X_c noised to t = start_frac T (SDEdit-style)
  c.sampling.guidance_scale = 0.002  # lambda_t = scale (1 - t/T)^power, normalized units
  c.sampling.guidance_power = 1.0
  c.sampling.guidance_start = 0.5   # no guidance while t/T > this
  c.sampling.guidance_max_step = 0.5   # L2 cap of one guidance step (normalized units)
  c.sampling.final_steps = 0        # extra guidance-only steps on the final sample
  c.sampling.final_scale = 0.0
  c.sampling.pullback_steps = 8     # > 0: move X_c only as far along the repair as needed to
                                    # stop penetrating (bisection with this many exact tests):
                                    # keeps contact and MRRPE (results.md, issue 19); 0: off
  c.sampling.pullback_max = 1.0     # pull-back range a in [0, this] (> 1: past the repair)
  c.sampling.direction = 'sample'   # 'sample': the guided DDIM sample; 'mean': the denoiser's
                                    # posterior mean E[X_0 | X_c] (no guidance; with the
                                    # pull-back; measured in results.md, issue 19 part 4)
                                    # 'least': the least translation of the left hand that
                                    # ends the penetration (no denoiser; issue 19 part 5)
  c.sampling.num_samples = 1        # direction 'mean': noise draws averaged
  c.sampling.exit_directions = 64   # direction 'least': directions searched (sphere spiral)
  c.sampling.exit_scan = 12         # direction 'least': distances tried per direction, then
  c.sampling.exit_steps = 8         # this many bisection steps below the first clear one
  c.sampling.exit_max_mm = 150.0    # direction 'least': the farthest move searched
  c.sampling.keep = ''              # parts of X taken from X_c at every step (guidance still
                                    # moves them): '', 'betas', 'betas,fingers', ... (state.PARTS)

  c.collision = ml_collections.ConfigDict()
  c.collision.dist_threshold = 0.02   # m
  c.collision.cos_threshold = 0.0
  c.collision.rho = 0.01              # m (GMoF)

  c.gate = ml_collections.ConfigDict()
  c.gate.detector = 'collision'     # 'collision' (the loss's pairs) | 'depth' (exact inside test)
  c.gate.min_depth_mm = 1.0         # penetration deeper than this (contact is not repaired)
  c.gate.box_overlap = True         # also require IoU(box_right, box_left) > 0
  c.gate.verify = True              # keep a repair only where the exact test finds penetration
                                    # and the repair lowers the interpenetration:
  c.gate.verify_by = 'volume'       #   'volume' (PenVol's) | 'depth' (deepest vertex, cheaper)
  c.gate.chunk = 8                  # gated pairs sampled this many at a time (0: whole batch)

  c.mesh = ml_collections.ConfigDict()
  c.mesh.fsdp = 1
  return c


def get_config(arg=None):
  c = base()
  if arg:
    raise ValueError(f'unknown config arg {arg!r} (expected none)')
  return c.lock()  # setting a field that does not exist (a typo) raises
