"""FAISS indices for vtpipe: choose a type by trialling candidates on the data, build, tune, save, load.

The library behind the index stage (stages/index.py), `vtpipe search` and the evaluate stage's candidate
mode. It works on any *vector source* (an object with ``n``, ``d`` and ``blocks(batch)``), so a feature store
never has to be loaded whole.

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

from stages.ann.budget import nlist_for, parse_memory
from stages.ann.build import DEFAULT_TARGET_RECALL, add_vectors, build
from stages.ann.candidates import FLAT_MAX, Candidate, candidates
from stages.ann.choose import TRIAL_SIZE, choose
from stages.ann.gpu import num_gpus, to_gpu
from stages.ann.io import (IDS_FILE, INDEX_FILE, INFOS_FILE, OpenIndex, load_index, open_index, read_infos, search,
                           write_index_dir)
from stages.ann.measure import ExactTopK, HeldOut, recall_at, recall_per_query
from stages.ann.params import knob, set_search_params
from stages.ann.tune import tune
from stages.ann.vectors import ArrayVectors, VectorSource, prepare

__all__ = [
    "ArrayVectors", "Candidate", "DEFAULT_TARGET_RECALL", "ExactTopK", "FLAT_MAX", "HeldOut", "IDS_FILE",
    "INDEX_FILE", "INFOS_FILE", "OpenIndex", "TRIAL_SIZE", "VectorSource", "add_vectors", "build", "candidates",
    "choose", "knob", "load_index", "nlist_for", "num_gpus", "open_index", "parse_memory", "prepare", "read_infos",
    "recall_at", "recall_per_query", "search", "set_search_params", "to_gpu", "tune", "write_index_dir",
]
