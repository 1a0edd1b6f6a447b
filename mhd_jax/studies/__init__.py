"""The studies that ask the paper's claims: `python -m mhd_jax.studies NAME --workdir DIR`.

Owns: the study CLI and registry (`cli`), one module per study family (the
paper's grids `claims`; `heads` and `recipes` of when auxiliary heads help;
`network`; `wire`), the methods they compare (`methods`), their runner (`runs`),
their metrics (`metrics`) and how they show them (`tables`).

May import: models, population, network, wire, algorithm, placement, data, outputs, run.
"""
