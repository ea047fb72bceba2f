"""Floor 3: analysis. Pure functions of trained models and data (gradient transfer,
geometry, compromise gap, masking laws, anchor contraction, KL decomposition); they
never train and never import ``radius.training``."""
