"""Stage-1 networks (ResNet, FAE, projection, fusion transformer, MANO
regressor), the crop camera and the stage-1 losses."""

from a2p_jax.models import tracing as _tracing

_tracing.install()  # NNX models trace in linear time (see tracing.py)
