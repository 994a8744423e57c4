"""Exact, blockwise retrieval ranks and metrics, the reference codes' conventions, and re-rankers (the core
of the evaluate stage).

- :mod:`.metrics`: ranks (optimistic / pessimistic / average / clip4clip ties) from dense scores or
  blockwise from features, and R@K / MdR / MnR / StdR / Geom; :mod:`.pair_ranks`: multi-caption v2t and
  the fused t2v+v2t pass; :mod:`.rank_kernels`: their numba kernels; :mod:`.blocks`: argument checks and
  block sizing.
- :mod:`.sk_norm`: SK-norm (blockwise from features, and dense); :mod:`.rerank`: DSL, QB-Norm, apply_rerank.
- :mod:`.conventions`: the named tie / median conventions of the reference codes (optimistic,
  pessimistic, average, clip4clip, collaborative-experts).
- :mod:`.diagnostics`: tie diagnostics and the missing-videos warning.
- :mod:`.evaluation`: :func:`~.evaluation.evaluate_retrieval`, the one call the evaluate stage makes.
- :mod:`.similarity`: DRL token-wise (TI / WTI) similarities usable as ``score_fn``
  (:class:`~.similarity.TokenScorer` is the scalable one the evaluate stage uses);
  :mod:`.ucofia_similarity`: UCoFiA's three-level similarity.
- Reading stores for the evaluate stage: :mod:`.inputs` (vectors, banks), :mod:`.token_scorer` (DRL),
  :mod:`.ucofia_scorer`, :mod:`.faiss_candidates` (t2v from an index); writing results:
  :mod:`.report_table`, :mod:`.plots`.
"""

from .metrics import MEDIANS, TIES, ranks_from_features, ranks_from_scores, retrieval_metrics
from .pair_ranks import t2v_v2t_ranks, v2t_ranks_multi, v2t_ranks_multi_from_scores
from .conventions import CONVENTIONS
from .evaluation import evaluate_retrieval
from .rerank import RERANKERS, apply_rerank, dsl, qb_norm
from .sk_norm import SK_KERNELS, sk_norm_bias, sk_norm_bias_dense, sk_norm_text_bias_v2t

__all__ = [
    "CONVENTIONS",
    "MEDIANS",
    "TIES",
    "RERANKERS",
    "SK_KERNELS",
    "ranks_from_features",
    "ranks_from_scores",
    "retrieval_metrics",
    "t2v_v2t_ranks",
    "v2t_ranks_multi",
    "v2t_ranks_multi_from_scores",
    "apply_rerank",
    "dsl",
    "evaluate_retrieval",
    "qb_norm",
    "sk_norm_bias",
    "sk_norm_bias_dense",
    "sk_norm_text_bias_v2t",
]
