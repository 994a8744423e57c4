"""The FAISS index library's public names (other modules import these); the code lives in stages/ann/."""

from stages.ann.budget import nlist_for, parse_memory
from stages.ann.build import DEFAULT_TARGET_RECALL, add_vectors, build, index_order
from stages.ann.candidates import FLAT_MAX, Candidate, candidates
from stages.ann.choose import TRIAL_SIZE, choose
from stages.ann.gpu import num_gpus, to_gpu
from stages.ann.io import (
                           IDS_FILE,
                           INDEX_FILE,
                           INFOS_FILE,
                           OpenIndex,
                           load_index,
                           open_index,
                           read_infos,
                           search,
                           write_index_dir,
)
from stages.ann.measure import ExactTopK, HeldOut, recall_at, recall_per_query
from stages.ann.params import knob, set_search_params
from stages.ann.tune import tune
from stages.ann.vectors import ArrayVectors, VectorSource, prepare

__all__ = [
                           "DEFAULT_TARGET_RECALL",
                           "FLAT_MAX",
                           "IDS_FILE",
                           "INDEX_FILE",
                           "INFOS_FILE",
                           "TRIAL_SIZE",
                           "ArrayVectors",
                           "Candidate",
                           "ExactTopK",
                           "HeldOut",
                           "OpenIndex",
                           "VectorSource",
                           "add_vectors",
                           "build",
                           "candidates",
                           "choose",
                           "index_order",
                           "knob",
                           "load_index",
                           "nlist_for",
                           "num_gpus",
                           "open_index",
                           "parse_memory",
                           "prepare",
                           "read_infos",
                           "recall_at",
                           "recall_per_query",
                           "search",
                           "set_search_params",
                           "to_gpu",
                           "tune",
                           "write_index_dir",
]
