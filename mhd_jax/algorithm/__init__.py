"""The algorithm: what a client computes, over a stack of clients, apart from where they live.

Owns: the loss terms and target rules (`losses`), who teaches whom and the targets
(`distill`), the training step (`step`), weight averaging (`baselines`) and accuracy
(`evaluate`). Runs on clients through a `for_each` argument: it knows no device,
padding, mesh or run.

May import: models, population, network, wire.
"""
