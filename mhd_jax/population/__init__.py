"""The population: every client's stacked state and the groups of architectures it holds.

Owns: `TrainState`/`Group`/`GroupSpec` and initialisation (`state`), the groups a
config describes and their checks (`groups`), the optimizer factory (`optim`).

May import: models.
"""
