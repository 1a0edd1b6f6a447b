"""The studies that ask the paper's claims: `python -m mhd_jax.studies NAME --workdir DIR`.

Owns: the study CLI and registry (`cli`), one module per study family, their
runner (`runs`) and their metrics (`metrics`).

May import: models, population, network, wire, algorithm, placement, data, outputs, run.
"""
