"""kdbench: a reproducible benchmark suite for knowledge distillation.

Every technique of the survey taxonomy sits behind one interface (`kdbench.methods`), runs in one training
loop (`kdbench.engine`) and writes one JSON record per run (`kdbench.results`), from which the survey's
tables and figures are rebuilt.
"""

__version__ = "0.1.0"
