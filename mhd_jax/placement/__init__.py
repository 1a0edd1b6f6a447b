"""Placement: where the stacked clients run, apart from what they compute.

Owns: the client-parallel strategies and `for_each_client` (`clients`), the mesh,
padding and shardings (`layout`), measuring `auto` (`autotune`).

May import: models, population, algorithm.
"""
