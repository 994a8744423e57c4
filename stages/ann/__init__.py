"""FAISS indices for vtpipe: choose a type by trialling candidates on the data, build, tune, save, load.

The library behind the index stage (stages/index.py), `vtpipe search` and the evaluate stage's candidate
mode. It works on any *vector source* (an object with ``n``, ``d`` and ``blocks(batch)``), so a feature store
never has to be loaded whole. Other modules import names from the submodules below.

    budget.py      memory sizes ('4G'), list counts, per-type memory estimates
    vectors.py     vector sources, validation (finite) and normalisation
    candidates.py  the index types worth trying for n, d and a memory budget
    choose.py      trial them on a sample, predict full-size speed and build time, pick one
    tune.py        smallest nprobe / efSearch reaching the target recall on held-out queries
    measure.py     exact neighbours, recall@k, timed searches
    params.py      an index's search knob and build settings
    gpu.py         FAISS GPUs: count, clone
    build.py       the build: sample, choose, train and fill (GPU when there is one), tune, measure
    io.py          the index folder: atomic write, checked load, search
"""
