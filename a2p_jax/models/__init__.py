"""Stage-1 networks (ResNet, FAE, projection, fusion transformer, MANO
regressor), the crop camera and the stage-1 losses."""
