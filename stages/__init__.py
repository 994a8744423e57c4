"""vtpipe stages: the work itself (compress, extract, concat, index, evaluate) and the libraries they use.

Nothing in this package imports click or dask: every stage can be called from a notebook, a test, a dask
worker or a SLURM array task alike.
"""

__version__ = "0.1.0"  # the one place: setup.cfg reads it (attr:), stores and manifests record it
