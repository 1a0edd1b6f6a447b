"""`python -m mhd_jax.studies NAME --workdir DIR` (`cli.main`)."""

from absl import app

from mhd_jax.studies import cli

if __name__ == '__main__':
  app.run(cli.main)
