"""The network over time: the base graph, graphs that change with the step, who takes part,
and teachers that lag.

Owns: `topology` (the base graph), `neighbours` (the graph as a padded neighbour table),
`graph_schedule`, `participation`, `lag` (the ring buffer of lagged teacher outputs). Pure
functions of (seed, step); nothing of the models.

May import: nothing of mhd_jax.
"""
