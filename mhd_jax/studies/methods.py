"""The methods the studies compare, as config overrides of the base config.

Every study names its rows with these, so 'MHD (H=3)' is the same run in every table.
"""

# No distillation: each client learns from its own labels only.
ISOLATED = {'nu_main': 0.0, 'nu_aux': 0.0, 'nu_emb': 0.0, 'num_heads': 1, 'topology': 'none'}
NAIVE = {'num_heads': 1}  # naive distillation: head 0 only
MHD = {'num_heads': 3}
# Embedding targets follow head 0's mixing; a confidence-weighted mixture averages the
# embeddings of different networks, which collapsed this variant (83.2 ± 3.9 shared,
# docs/results.md): embeddings are distilled from the single most confident source.
MHD_EMB = {'num_heads': 3, 'nu_emb': 1.0, 'target': 'most_confident'}
# The FedAvg baseline: weights averaged every 10 steps, no distillation.
FEDAVG = {'nu_main': 0.0, 'nu_aux': 0.0, 'nu_emb': 0.0, 'num_heads': 1, 'average_every': 10}
# The upper bound: one model trained with labels on the union of the private data.
SUPERVISED = {'nu_main': 0.0, 'nu_aux': 0.0, 'nu_emb': 0.0, 'num_heads': 1, 'num_clients': 1,
              'topology': 'none'}
