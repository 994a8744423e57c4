"""vtpipe stages: the work itself (compress, extract, concat, index, evaluate) and the libraries they use.

The five stage modules are the only modules here (plan + run_task each); the libraries are packages named for
what they hold: contract, features, video, backbones, datasets, ann, retrieval, recognition
(docs/architecture.md).

Nothing in this package imports click or dask: every stage can be called from a notebook, a test, a dask
worker or a SLURM array task alike.
"""

# The one place the version is written: setup.cfg reads it (attr:), `vtpipe --version` prints it, stores and
# manifests record it (also importlib.metadata.version("vtpipe") once installed; pipeline.__version__).
__version__ = "0.1.0"
