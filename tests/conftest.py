"""Test-session settings."""

import jax

# The partitionable threefry PRNG (JAX's default) compiles random initialisers
# several times more slowly on CPU (ResNet-18 init: 12 s vs 3.5 s). The tests
# never depend on particular random values, only on their agreement between
# code paths, so they use the cheaper-to-compile form.
jax.config.update('jax_threefry_partitionable', False)
