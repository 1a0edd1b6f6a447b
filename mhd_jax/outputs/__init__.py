"""What a run leaves behind and how to read it back: the workdir.

Owns: the workdir schema, metadata and the lock (`workdir`), the final results
`Summary` and `PerClass` (`summary`), the checkpoint format (`checkpoint`), metric
writers (`writers`), the end-of-run report (`report`) and `mhd_jax.load` for
notebooks (`explore`).

May import: models, population, network, algorithm, placement, data.
"""
