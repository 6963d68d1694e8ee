"""``dualpt train``: the config and recipes, the training set, the objective, the loop, the methods, torchrun,
checkpoints, the prompt file it exports and the run history."""
