"""What crosses between clients and what protects the private data: the wire and privacy.

Owns: `compression` (top-k, quantisation, heads sent, cadence), `communication`
(bytes each client sends), `privacy` (DP-SGD on the private term, the ε accountant).

May import: models.
"""
