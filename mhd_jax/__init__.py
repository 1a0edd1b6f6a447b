"""mhd_jax: a JAX/Flax simulator of decentralized learning with multi-headed distillation."""
