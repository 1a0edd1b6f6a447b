"""The run: config checks, the compiled programs and the training loop behind `launch.py`.

Owns: the config table and checks (`fields`, `config_check`), the jitted programs
(`programs`), start-up: the state restored or initialised and the step compiled
(`startup`), `train_and_evaluate` (`train`), and what the loop needs beside them
(`safety`, `progress`, `timing`).

May import: models, population, network, wire, algorithm, placement, data, outputs.
"""
