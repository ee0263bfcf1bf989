"""A2P stage 1 on the paper's training mix: InterHand2.6M + Re:InterHand +
COCO-WholeBody + FreiHAND + HO-3D.

    python train.py --config a2p_jax/configs/a2p_paper_mix.py --workdir /ckpt/a2p_mix \
        --config.data.mano_dir=/data/mano \
        --config.data.mix.interhand26m.root=/data/InterHand2.6M \
        --config.data.mix.interhand26m.subset=/data/aid_human_annot_train.txt \
        --config.data.mix.reinterhand.root=/data/ReInterHand \
        --config.data.mix.coco_wholebody.root=/data/COCO \
        --config.data.mix.freihand.root=/data/FreiHAND \
        --config.data.mix.ho3d.root=/data/HO3D_v3 \
        --config.data.mix.interhand26m.priors=/data/priors/ih26m_train \
        ... (one prior store per source: python -m a2p_jax.teacher.precompute
        --dataset <name> --root <its root> --split <its split> --out <store>)

Everything else is a2p_interhand26m.py's (the paper's model and optimiser;
see its docstring for which values are the paper's and which are ours).

The mix. The paper lists the data sets and says it follows InterWild; it
gives no weights. InterWild (facebookresearch/InterWild main/config.py:
trainset_3d = ['InterHand26M', 'ReInterHand'], trainset_2d = ['MSCOCO'];
common/base.py and data/dataset.py MultipleDatasets) concatenates its 3D
sets (each drawn in proportion to its size) and its 2D set into two groups
of equal share. We keep that rule: group '3d' = InterHand2.6M, Re:InterHand
and (OUR CHOICE: InterWild does not train on them) FreiHAND and HO-3D, by
size; group '2d' = COCO-WholeBody, half of all draws. An epoch is
InterWild's: the largest group's size x 2. `--config.data.mix.<name>.weight=0`
leaves a source out (its root is then not needed).
"""

import ml_collections

from a2p_jax.configs import a2p_interhand26m

# name -> (split, group); every root is a flag (empty here).
SOURCES = {
    'interhand26m': ('train', '3d'),
    'reinterhand': ('train', '3d'),
    'coco_wholebody': ('train', '2d'),
    'freihand': ('training', '3d'),
    'ho3d': ('train', '3d'),
}


def get_config(arg=None):
  c = a2p_interhand26m.get_config(arg)
  c.unlock()
  c.data.mix = ml_collections.ConfigDict({
      name: {'dataset': name, 'root': '', 'split': split, 'group': group, 'weight': 1.0,
             'priors': '', 'subset': ''}
      for name, (split, group) in SOURCES.items()})
  return c.lock()
