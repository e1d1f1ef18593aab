"""Pair-block accumulation and its store against naive dense lifted sums."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

import arn_sklearn._kernels._pair_gram as pg
from arn_sklearn import ARNRegressor
from arn_sklearn._kernels._lifting import iter_chunks
from arn_sklearn._kernels._pair_gram import PairBlockStore, accumulate_chunk
from arn_sklearn._kernels._topk import top_k_assignments
from arn_sklearn._model._blocksparse import BlockSparseStatistics

# Both pair paths: numpy (batched matmuls) and the compiled kernel where it is built.
PATHS = [
    "numpy",
    pytest.param(
        "compiled",
        marks=pytest.mark.skipif(pg._pair_gram_c is None, reason="compiled kernel not built"),
    ),
]


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    monkeypatch.setattr(pg, "COMPILED", request.param == "compiled")
    return request.param


def naive(X, Y, w, idx, vals, m):
    """Dense lifted Gram blocks, ``Z^T [Y, 1]``, from the densified assignments."""
    b, d = X.shape
    d1 = d + 1
    A = np.zeros((b, m))
    np.put_along_axis(A, idx, vals, axis=1)
    X1 = np.hstack([X, np.ones((b, 1))])
    Z = (A[:, :, None] * X1[:, None, :]).reshape(b, m * d1)
    G = (Z.T @ (w[:, None] * Z)).reshape(m, d1, m, d1)
    Y1 = np.hstack([Y, np.ones((b, 1))])
    return G, (Z.T @ (w[:, None] * Y1)).reshape(m, d1, Y1.shape[1])


def chunk_data(b=600, m=7, k=3, d=4, t=2, seed=0):
    rng = np.random.RandomState(seed)
    idx = np.stack([rng.choice(m, k, replace=False) for _ in range(b)])
    idx[:200] = [4, 1, 6]  # a frequent set: pairs of many rows
    vals = rng.dirichlet(np.ones(k), size=b)
    vals[0, 0] = 0.0  # an assignment that underflowed
    w = rng.uniform(0, 2, b)
    w[1] = 0.0
    return rng.normal(size=(b, d)), rng.normal(size=(b, t)), w, idx, vals


def threads(tasks):
    with ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(task) for task in tasks]:
            future.result()


# Every pair its own batch (pieces of 8 rows, or 4096) / mixed / every pair in shared stacks.
@pytest.mark.parametrize("own_rows, batch_rows", [(1, 8), (1, 4096), (16, 64), (10**6, 4096)])
@pytest.mark.parametrize("n_tasks", [1, 2])
@pytest.mark.parametrize("table", [True, False])
@pytest.mark.parametrize("set_share", [0.25, 2.0])  # frequent sets by set GEMMs / never
def test_accumulate_chunk_equals_naive_sums(
    own_rows, batch_rows, n_tasks, table, set_share, path, monkeypatch
):
    monkeypatch.setattr(pg, "_OWN_BATCH_ROWS", own_rows)
    monkeypatch.setattr(pg, "_BATCH_ROWS", batch_rows)
    monkeypatch.setattr(pg._FrequentSets, "MIN_SHARE", set_share)
    compiled_calls = []
    if path == "compiled":
        add_to = pg._CompiledRun.add_to
        monkeypatch.setattr(
            pg._CompiledRun, "add_to", lambda *a: compiled_calls.append(1) or add_to(*a)
        )
    m = 7
    X, Y, w, idx, vals = chunk_data(m=m)
    store = PairBlockStore(m, X.shape[1] + 1, page_blocks=3, table=table)
    zty1 = np.zeros((m, X.shape[1] + 1, Y.shape[1] + 1))
    # Two chunks into one store: the second adds into existing blocks.
    for rows in (slice(0, 350), slice(350, None)):
        accumulate_chunk(
            X[rows], Y[rows], w[rows], idx[rows], vals[rows], store, zty1,
            run=threads if n_tasks > 1 else pg._sequential, n_tasks=n_tasks,
        )  # fmt: skip
    keys, blocks = store.finish()
    G, zty_ref = naive(X, Y, w, idx, vals, m)
    assert keys.dtype == np.int64 and np.all(np.diff(keys) > 0)
    # Exactly the co-occurring pairs a <= b, each once, equal to the dense blocks.
    occurs = {(min(a, c), max(a, c)) for row in idx for a in row for c in row}
    assert {divmod(int(key), m) for key in keys} == occurs
    for key, block in zip(keys, blocks, strict=True):
        a, c = divmod(int(key), m)
        np.testing.assert_allclose(block, G[a, :, c, :], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(zty1, zty_ref, rtol=1e-12, atol=1e-12)
    # The compiled kernel ran where chosen, on a packed store.
    assert store.packed == (path == "compiled")
    assert bool(compiled_calls) == (path == "compiled")


def test_accumulate_chunk_k1_has_only_diagonal_blocks(path):
    X, Y, w, idx, vals = chunk_data(k=3)
    idx, vals = idx[:, :1], np.ones((len(X), 1))
    store = PairBlockStore(7, 5)
    zty1 = np.zeros((7, 5, 3))
    accumulate_chunk(X, Y, w, idx, vals, store, zty1)
    keys, blocks = store.finish()
    G, zty_ref = naive(X, Y, w, idx, vals, 7)
    np.testing.assert_array_equal(keys, np.unique(idx) * 8)
    for key, block in zip(keys, blocks, strict=True):
        np.testing.assert_allclose(block, G[key // 7, :, key // 7, :], atol=1e-12)
    np.testing.assert_allclose(zty1, zty_ref, atol=1e-12)


@pytest.mark.parametrize("table", [True, False])
@pytest.mark.parametrize("packed", [True, False])
def test_store_slots_pages_and_finish(table, packed):
    rng = np.random.RandomState(1)
    store = PairBlockStore(50, 2, page_blocks=4, table=table, packed=packed)
    first = store.slots(np.array([7, 3, 120]))
    np.testing.assert_array_equal(first, [0, 1, 2])
    again = store.slots(np.array([3, 999, 7]))
    np.testing.assert_array_equal(again, [1, 3, 0])
    assert store.n_pairs == 4 and len(store.pages) == 1
    new = store.slots(np.arange(200, 210))
    np.testing.assert_array_equal(new, np.arange(4, 14))
    assert len(store.pages) == 4  # 14 slots in pages of 4
    values = rng.normal(size=(14, 2, 2))
    values += values.transpose(0, 2, 1)  # blocks are symmetric
    store.add(np.arange(14)[::-1], values[::-1])
    store.add_block(1, np.ones((2, 2)))
    keys, blocks = store.finish()
    expected_keys = np.array([7, 3, 120, 999, *range(200, 210)])
    order = np.argsort(expected_keys)
    np.testing.assert_array_equal(keys, expected_keys[order])
    values[1] += 1.0
    np.testing.assert_array_equal(blocks, values[order])
    assert store.pages == []


@pytest.mark.parametrize("add_blocks", [1, 3, 64])  # blocks per buffered run of add()
@pytest.mark.parametrize("packed", [True, False])
def test_store_add_in_runs_across_pages(add_blocks, packed, monkeypatch):
    monkeypatch.setattr(pg, "_ADD_BLOCKS", add_blocks)
    rng = np.random.RandomState(4)
    store = PairBlockStore(30, 3, page_blocks=5, packed=packed)
    slots = store.slots(np.arange(23))
    expected = np.zeros((23, 3, 3))
    for _ in range(3):  # unsorted, sorted, and a subset spanning pages
        for sel in (rng.permutation(23), np.arange(23), np.array([2, 4, 5, 9, 10, 22])):
            values = rng.normal(size=(sel.size, 3, 3))
            values += values.transpose(0, 2, 1)
            store.add(slots[sel], values)
            expected[sel] += values
    keys, blocks = store.finish()
    np.testing.assert_array_equal(keys, np.arange(23))
    np.testing.assert_allclose(blocks, expected, rtol=1e-14, atol=1e-14)


def test_accumulate_chunk_of_no_rows_adds_nothing(path):
    X, Y, w, idx, vals = chunk_data()
    store, zty1 = PairBlockStore(7, 5), np.zeros((7, 5, 3))
    accumulate_chunk(X[:0], Y[:0], w[:0], idx[:0], vals[:0], store, zty1, n_tasks=2)
    assert store.n_pairs == 0 and not zty1.any()


def test_accumulate_chunk_rejects_negative_weights_or_assignments(path):
    X, Y, w, idx, vals = chunk_data()
    store, zty1 = PairBlockStore(7, 5), np.zeros((7, 5, 3))
    w[3] = -1.0
    with pytest.raises(ValueError, match="non-negative weights and assignments"):
        accumulate_chunk(X, Y, w, idx, vals, store, zty1)
    w[3], vals[5, 1] = 1.0, -0.25
    with pytest.raises(ValueError, match="non-negative weights and assignments"):
        accumulate_chunk(X, Y, w, idx, vals, store, zty1)


@pytest.mark.parametrize("packed", [True, False])
def test_store_starts_from_sorted_blocks_without_touching_them(packed):
    keys = np.array([2, 5, 9], dtype=np.int64)
    blocks = np.arange(12.0).reshape(3, 2, 2)
    blocks += blocks.transpose(0, 2, 1)  # symmetric, as Gram blocks are
    given = blocks.copy()
    store = PairBlockStore(4, 2, keys, blocks, page_blocks=2, packed=packed)
    store.add(store.slots(np.array([5, 11])), np.ones((2, 2, 2)))
    out_keys, out_blocks = store.finish()
    np.testing.assert_array_equal(out_keys, [2, 5, 9, 11])
    np.testing.assert_array_equal(out_blocks[1], blocks[1] + 1)
    np.testing.assert_array_equal(out_blocks[3], np.ones((2, 2)))
    np.testing.assert_array_equal(blocks, given)


def test_permute_in_place_equals_fancy_indexing(path):
    rng = np.random.RandomState(2)
    A = rng.normal(size=(50, 2, 3))
    for order in (rng.permutation(50), np.arange(50), np.r_[1:50, 0]):
        B = A.copy()
        pg._permute_in_place(B, order)
        np.testing.assert_array_equal(B, A[order])


def test_frequent_sets_cover_exactly_the_recurring_sets():
    X, Y, w, idx, vals = chunk_data()
    sets = pg._FrequentSets.find(X, Y, w, idx, vals, 7, 2)
    assert sets is not None
    # Every row of a set with MIN_SET_ROWS rows or more, and only those, is taken.
    codes = [tuple(sorted(row)) for row in idx]
    counts = {c: codes.count(c) for c in set(codes)}
    frequent = np.array([counts[c] >= pg._FrequentSets.MIN_SET_ROWS for c in codes])
    np.testing.assert_array_equal(np.sort(sets.rows), np.flatnonzero(frequent))
    np.testing.assert_array_equal(sets.rest, np.flatnonzero(~frequent))
    rng = np.random.RandomState(3)
    idx = np.stack([rng.choice(200, 3, replace=False) for _ in range(300)])
    assert pg._FrequentSets.find(X[:300], Y[:300], w[:300], idx, vals[:300], 200, 2) is None


def test_store_refuses_a_page_when_memory_runs_out(monkeypatch):
    # The pair count is only known as blocks arrive: when the process is about
    # to run out, a new page is a clear MemoryError, not a kill by the system.
    store = PairBlockStore(50, 2, page_blocks=4)
    store.slots(np.arange(4))
    monkeypatch.setattr(pg, "available_memory_bytes", lambda: pg.MIN_FREE_BYTES - 1)
    store.slots(np.arange(4))  # known keys: no new page, no check
    with pytest.raises(MemoryError, match=r"5 anchor pairs .* fewer anchors, a smaller top_k"):
        store.slots(np.array([60]))
    monkeypatch.setattr(pg, "available_memory_bytes", lambda: None)  # nothing known
    store.slots(np.array([61]))


def test_estimator_reports_top_k_memory_exhaustion(monkeypatch):
    rng = np.random.RandomState(0)
    X, y = rng.normal(size=(400, 3)), rng.normal(size=400)
    monkeypatch.setattr(pg, "available_memory_bytes", lambda: 0)
    model = ARNRegressor(8, top_k=2, random_state=0)
    with pytest.raises(MemoryError, match="top-k statistics ran out of memory"):
        model.fit(X, y)
    with pytest.raises(NotFittedError):
        check_is_fitted(model)


@pytest.mark.parametrize("add_blocks", [1, 4, 64])
@pytest.mark.parametrize("packed", [True, False])
def test_store_add_writes_new_slots_and_sums_old_ones(add_blocks, packed, monkeypatch):
    # Slots from first_new on are written, the others summed, in mixed runs too.
    monkeypatch.setattr(pg, "_ADD_BLOCKS", add_blocks)
    rng = np.random.RandomState(5)
    store = PairBlockStore(30, 3, page_blocks=5, packed=packed)
    old = store.slots(np.arange(0, 24, 2))
    first = rng.normal(size=(old.size, 3, 3))
    first += first.transpose(0, 2, 1)  # symmetric blocks
    store.add(old, first)
    new, first_new = store.slots(np.arange(24), return_first_new=True)
    assert first_new == 12 and set(new[1::2].tolist()) == set(range(12, 24))
    values = rng.normal(size=(24, 3, 3))
    values += values.transpose(0, 2, 1)
    order = rng.permutation(24)
    store.add(new[order], values[order], first_new=first_new)
    keys, blocks = store.finish()
    expected = values.copy()
    expected[::2] += first
    np.testing.assert_array_equal(keys, np.arange(24))
    np.testing.assert_allclose(blocks, expected, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("d", [1, 6])
@pytest.mark.parametrize("b", [1, 9, 300])
def test_accumulate_chunk_small_shapes_equal_naive_sums(k, d, b, path):
    # d = 1: blocks of 2 x 2; one row; k up to 5; pages of 2 blocks (many pages).
    rng = np.random.RandomState(k * 100 + d * 10 + b)
    m = 8
    X, Y = rng.normal(size=(b, d)), rng.normal(size=(b, 2))
    w = rng.uniform(0, 2, b)
    idx = np.stack([rng.choice(m, k, replace=False) for _ in range(b)])
    vals = rng.dirichlet(np.ones(k), size=b)
    store = PairBlockStore(m, d + 1, page_blocks=2)
    zty1 = np.zeros((m, d + 1, 3))
    for rows in (slice(0, b // 2), slice(b // 2, None)):  # new slots, then existing ones
        accumulate_chunk(
            X[rows], Y[rows], w[rows], idx[rows], vals[rows], store, zty1, run=threads, n_tasks=2
        )
    keys, blocks = store.finish()
    G, zty_ref = naive(X, Y, w, idx, vals, m)
    occurs = {(min(a, c), max(a, c)) for row in idx for a in row for c in row}
    assert {divmod(int(key), m) for key in keys} == occurs
    for key, block in zip(keys, blocks, strict=True):
        a, c = divmod(int(key), m)
        np.testing.assert_allclose(block, G[a, :, c, :], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(zty1, zty_ref, rtol=1e-12, atol=1e-12)


def test_accumulate_chunk_rejects_a_repeated_anchor_in_a_row(path):
    X, Y, w, idx, vals = chunk_data()
    idx[7, 2] = idx[7, 0]
    store, zty1 = PairBlockStore(7, 5), np.zeros((7, 5, 3))
    with pytest.raises(ValueError, match=f"row 7 has anchor {idx[7, 0]} twice"):
        accumulate_chunk(X, Y, w, idx, vals, store, zty1)


@pytest.mark.skipif(pg._pair_gram_c is None, reason="compiled kernel not built")
@pytest.mark.parametrize("fresh", [True, False])
@pytest.mark.parametrize("d1", [1, 5, 9])
def test_compiled_kernel_adds_packed_scaled_grams(fresh, d1):
    # Runs of 0..140 rows: one piece (tiles straight into the store) or several
    # (summed in the work triangle first); d1 below, at and above one 8-column tile.
    rng = np.random.RandomState(5)
    page_blocks, n_pairs = 3, 12
    X1 = rng.normal(size=(40, d1))
    counts = np.array([0, 1, 2, 3, 4, 5, 8, 63, 64, 65, 129, 140], dtype=np.int64)
    starts = np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64)
    rows = rng.randint(0, 40, counts.sum()).astype(np.int64)
    scale = rng.uniform(0, 2, counts.sum())
    slots = rng.permutation(n_pairs).astype(np.int64)
    iu = np.triu_indices(d1)
    old = rng.normal(size=(n_pairs, iu[0].size))
    pages = [np.zeros((page_blocks, iu[0].size)) for _ in range(4)]
    if not fresh:
        for slot in range(n_pairs):
            pages[slot // page_blocks][slot % page_blocks] = old[slot]
    addresses = np.array([p.__array_interface__["data"][0] for p in pages], dtype=np.int64)
    first_new = 0 if fresh else n_pairs
    pg._pair_gram_c.add_pair_blocks(
        X1, rows, scale, starts, counts, slots, addresses, page_blocks, first_new
    )
    got = np.concatenate(pages)
    for j in range(n_pairs):
        run = slice(starts[j], starts[j] + counts[j])
        Q = X1[rows[run]] * scale[run, None]
        before = 0.0 if fresh else old[slots[j]]
        np.testing.assert_allclose(got[slots[j]], (Q.T @ Q)[iu] + before, rtol=1e-12, atol=1e-12)
    full = np.empty((n_pairs, d1, d1))
    pg._pair_gram_c.unpack_upper(got, full)
    np.testing.assert_array_equal(full[:, iu[0], iu[1]], got)
    np.testing.assert_array_equal(full, full.transpose(0, 2, 1))


def test_block_sparse_statistics_same_on_both_paths(monkeypatch):
    # The estimator-level accumulation (weights, several chunks, pair tasks on two threads).
    rng = np.random.RandomState(2)
    X, Y, w = rng.normal(size=(3000, 5)), rng.normal(size=(3000, 3)), rng.uniform(0, 2, 3000)
    anchors = rng.normal(size=(12, 5))
    stats = {}
    for compiled in [False, True] if pg._pair_gram_c is not None else [False]:
        monkeypatch.setattr(pg, "COMPILED", compiled)
        stats[compiled] = BlockSparseStatistics.zeros(12, 5, 3, np).accumulate(
            iter_chunks(X, Y, w, 700),
            lambda c: top_k_assignments(c, anchors, "euclidean", 0.5, 4, np),
            np,
        )
    G, zty_ref = naive(X, Y, w, *top_k_assignments(X, anchors, "euclidean", 0.5, 4, np), 12)
    for s in stats.values():
        dense = s.to_dense().gram.reshape(12, 6, 12, 6)
        np.testing.assert_allclose(dense, G, rtol=1e-11, atol=1e-11)
