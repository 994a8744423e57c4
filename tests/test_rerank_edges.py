"""stages.retrieval.rerank at its edges, against hand-worked values and dense numpy references (never the
module's own output): DSL and QB-Norm where a global instead of a per-column shift would under- or
overflow, float32 input, refusals with their messages, apply_rerank passing every option on, and the
blockwise QB-Norm pieces (bank top-k set for k > 1, bank log-partition) with a score_fn and several blocks.
Written for the mutants of rerank.py that tests/test_rerank.py leaves alive (bench/mutation.sh)."""

from __future__ import annotations

import numpy as np
import pytest

from stages.retrieval import rerank as R
from stages.retrieval.sk_norm import sk_norm_bias_dense


def neg_l1(q, g):
    return -np.abs(q[:, None, :].astype(np.float64) - g[None, :, :]).sum(-1)


def test_dsl_per_column_softmax_on_columns_of_very_different_size():
    # column 0 around 400 (exp overflows without a shift), column 1 around -1000 (underflows after a global one)
    S = np.array([[400.0, -1000.0], [399.0, -1001.0]])
    p0 = 1.0 / (1.0 + np.exp(-1.0))  # softmax of (0, -1) over the two rows
    want = S * np.array([[p0, p0], [1 - p0, 1 - p0]])
    np.testing.assert_allclose(R.dsl(S), want, rtol=1e-12)
    got = R.dsl(S.astype(np.float32))
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, R.dsl(S))  # the float32 values are exact: same float64 result
    np.testing.assert_allclose(R.dsl(S / 2, temperature=0.5), want / 2, rtol=1e-12)
    for t in (0.0, -1.0):
        with pytest.raises(ValueError, match=rf"^temperature must be > 0, got {t}$"):
            R.dsl(S, temperature=t)


def test_qb_norm_by_hand_with_columns_of_very_different_size():
    # one bank row: R = {column 0}; the query's best column is 0, so its row becomes exp(beta * (S - B))
    B = np.array([[1.0, -50.0]])
    S = np.array([[0.9, -50.5], [-3.0, 0.0]])  # row 1's best column (1) is not in R: kept as is
    got = R.qb_norm(S, B)
    np.testing.assert_allclose(got[0], [np.exp(-2.0), np.exp(-10.0)], rtol=1e-12)
    np.testing.assert_array_equal(got[1], S[1])
    with pytest.raises(ValueError, match=r"^S \(2, 3\) and B \(2, 4\) must be 2-D with the same gallery size$"):
        R.qb_norm(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"^S \(3,\) and B \(2, 3\) must be 2-D with the same gallery size$"):
        R.qb_norm(np.ones(3), np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"^k must be >= 1, got 0$"):
        R.qb_norm(S, B, k=0)


def test_apply_rerank_passes_every_option_on():
    rng = np.random.default_rng(201)
    S, B = rng.standard_normal((5, 4)), rng.standard_normal((7, 4))
    # dsl with temperature 2: S * softmax(S / 2) over the rows, by hand
    E = np.exp(S / 2)
    np.testing.assert_allclose(R.apply_rerank("dsl", S, temperature=2.0), S * E / E.sum(0), rtol=1e-12)
    assert np.allclose(R.apply_rerank("sk-norm", S, B, n_iters=1), S + sk_norm_bias_dense(B, n_iters=1)[None, :])
    assert not np.allclose(sk_norm_bias_dense(B, n_iters=1), sk_norm_bias_dense(B, n_iters=4))
    # qb-norm: hand-picked bank whose top-1 and top-2 sets differ, beta 1 vs the default 20
    B = np.array([[3.0, 2.0, 0.0, -1.0]])
    S = np.array([[0.1, 0.5, 0.2, 0.0], [0.9, 0.1, 0.0, 0.0]])  # best columns 1 (in top-2 only), 0 (in top-1)
    got = R.apply_rerank("qb-norm", S, B, beta=1.0)  # default k = 1: only row 1 is replaced
    np.testing.assert_array_equal(got[0], S[0])
    np.testing.assert_allclose(got[1], np.exp(S[1] - B[0]), rtol=1e-12)
    got = R.apply_rerank("qb-norm", S, B, beta=1.0, k=2)
    np.testing.assert_allclose(got, np.exp(S - B), rtol=1e-12)


def dense_topk_set(B, k):
    """Gallery items in the top-k of any bank row, ties to the lower index (a lexsort per row)."""
    in_r = np.zeros(B.shape[1], bool)
    for row in B:
        order = np.lexsort((np.arange(row.size), -row))
        in_r[order[:k]] = True
    return in_r


@pytest.mark.parametrize("k", [1, 3])
def test_bank_pieces_blockwise_with_score_fn(k):
    rng = np.random.default_rng(202)
    bank = rng.integers(-1, 2, size=(9, 2)).astype(np.float32)  # tied scores: the index tie rule matters
    gallery = rng.integers(-1, 2, size=(30, 2)).astype(np.float32)
    B = neg_l1(bank, gallery)
    assert not np.array_equal(dense_topk_set(B, k), dense_topk_set(bank @ gallery.T, k))
    for block in (2, 9):
        got = R._bank_topk_set(bank, gallery, k, block, neg_l1, None)
        np.testing.assert_array_equal(got, dense_topk_set(B, k))
        got = R._bank_log_z(bank, gallery, 3.0, block, neg_l1, None)
        np.testing.assert_allclose(got, np.logaddexp.reduce(3.0 * B, axis=0), rtol=1e-12)
    # the byte cap lowers the bank rows per block (one row = 30 float32 scores)
    rows = []

    def recorded(q, g):
        rows.append(q.shape[0])
        return neg_l1(q, g)

    R._bank_topk_set(bank, gallery, k, 100, recorded, 2 * 30 * 4 + 1)
    R._bank_log_z(bank, gallery, 3.0, 100, recorded, 2 * 30 * 4 + 1)
    assert rows == [2, 2, 2, 2, 1] * 2
    with pytest.raises(ValueError, match=r"^bank must be a 2-D array"):
        R._bank_topk_set(np.ones(3), gallery, k, 4, None, None)
    with pytest.raises(ValueError, match=r"^bank must be a 2-D array"):
        R._bank_log_z(np.ones(3), gallery, 3.0, 4, None, None)


def test_qb_norm_bank_ties_go_to_the_lower_index():
    B = np.zeros((1, 40))  # every item tied: top-1 is item 0
    S = np.zeros((2, 40))
    S[0, 0] = 1.0  # best item 0: in R
    S[1, 5] = 1.0  # best item 5: not in R
    got = R.qb_norm(S, B, beta=1.0)
    np.testing.assert_allclose(got[0], np.exp(S[0]), rtol=1e-12)  # log Z = 0 per column
    np.testing.assert_array_equal(got[1], S[1])
    assert R._bank_topk_set(B[:, :1] * 0 + 1, np.ones((40, 1)), 1, 4, None, None).tolist() == [True] + [False] * 39
    assert R._bank_topk_set(np.ones((1, 1)), np.ones((40, 1)), 3, 4, None, None).tolist() == [True] * 3 + [False] * 37


def test_qb_norm_top_k_ties_go_to_the_lower_index():
    rng = np.random.default_rng(0)
    B = -rng.integers(0, 3, size=(1, 17)).astype(np.float64)  # many ties among the best values
    S = np.eye(17)  # query j's best item is j: the rows replaced are the items in R
    want = dense_topk_set(B, 3)
    replaced = ~np.all(R.qb_norm(S, B, k=3) == S, axis=1)
    np.testing.assert_array_equal(replaced, want)
    np.testing.assert_array_equal(R._bank_topk_set(np.ones((1, 1)), B.T, 3, 4, None, None), want)
