"""The run: config checks, the compiled programs and the training loop behind `launch.py`.

Owns: the config table and checks (`fields`, `config_check`), the jitted programs
(`programs`), `train_and_evaluate` (`train`), and what the loop needs beside them
(`safety`, `progress`, `timing`).

May import: models, population, network, wire, algorithm, placement, data, outputs.
"""
