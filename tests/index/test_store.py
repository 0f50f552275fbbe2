"""kvision.index: exact search against NumPy, ANN recall, add / delete, atomic save / load,
failed rebuilds, the Qdrant backend through the same interface, recall@k and the benchmark."""

import json
from pathlib import Path

import numpy as np
import pytest

from kvision.errors import InputValueError
from kvision.index import FaissIndex, load_index, read_meta, rebuild_index, recall_at_k, store
from kvision.index.faiss_index import INDEX_FILE
from kvision.index.store import META_FILE, previous_path
from kvision.models.contract import InputContract

pytest.importorskip("faiss")  # kvision.index imports it only when an index is built

REPO = Path(__file__).resolve().parents[2]
DIM = 16
KIND_PARAMS = {"exact": {}, "hnsw": {"M": 16}, "ivf": {"nlist": 16, "nprobe": 4}}
CONTRACT = InputContract(32, 32, 3, labels=[]).to_dict()


def clustered(n: int, dim: int = DIM, clusters: int = 20, seed: int = 0, spread: float = 0.5):
    """``float32 [n, dim]`` unit vectors around ``clusters`` seeded centres."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234).normal(size=(clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + rng.normal(scale=spread, size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute_force(base, queries, k, metric):
    """Top-``k`` (scores, positions) by NumPy: cosine similarity or squared L2 distance."""
    if metric == "cosine":
        b = base / np.linalg.norm(base, axis=1, keepdims=True)
        q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        scores = q @ b.T
        order = np.argsort(-scores, axis=1)[:, :k]
    else:
        scores = ((queries[:, None, :] - base[None, :, :]) ** 2).sum(-1)
        order = np.argsort(scores, axis=1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


def built(kind, n=600, metric="cosine", **kwargs):
    x = clustered(n)
    index = FaissIndex(DIM, kind=kind, metric=metric, **{**KIND_PARAMS[kind], **kwargs})
    ids = np.arange(n, dtype=np.int64) * 3 + 7  # not positions: stable ids must be used
    index.add(x, ids, payloads=[f"img/{i}.png" for i in ids])
    return index, x, ids


def partial_dirs(parent: Path):
    return [p.name for p in parent.iterdir() if ".partial-" in p.name or ".previous" in p.name]


# ---------------------------------------------------------------- exact search and recall


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_exact_search_matches_numpy_brute_force(metric):
    rng = np.random.default_rng(3)
    base = rng.normal(size=(500, DIM)).astype(np.float32) * 2  # not normalised: cosine must
    queries = rng.normal(size=(25, DIM)).astype(np.float32)
    ids = rng.permutation(10_000)[:500].astype(np.int64)
    index = FaissIndex(DIM, kind="exact", metric=metric)
    index.add(base, ids)
    scores, found = index.search(queries, k=7)
    want_scores, want_pos = brute_force(base.astype(np.float64), queries, 7, metric)
    assert scores.dtype == np.float32 and found.dtype == np.int64 and found.shape == (25, 7)
    np.testing.assert_array_equal(found, ids[want_pos])
    np.testing.assert_allclose(scores, want_scores, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_approximate_recall_against_exact(kind, metric):
    base, queries = clustered(3000, seed=0), clustered(100, seed=1)
    exact = FaissIndex(DIM, kind="exact", metric=metric)
    exact.add(base)
    approx = FaissIndex(DIM, kind=kind, metric=metric, **KIND_PARAMS[kind])
    approx.add(base)
    recall = recall_at_k(approx.search(queries, 10)[1], exact.search(queries, 10)[1], 10)
    assert recall >= 0.9, f"{kind}/{metric} recall@10 = {recall:.3f}"
    # a one-list probe of a 16-list IVF must miss neighbours in other lists: recall is measured
    if kind == "ivf":
        approx.set_params(nprobe=1)
        low = recall_at_k(approx.search(queries, 10)[1], exact.search(queries, 10)[1], 10)
        assert low < recall


def test_search_pads_with_minus_one_and_nan():
    index = FaissIndex(DIM)
    scores, ids = index.search(clustered(2), k=3)  # empty index
    assert (ids == -1).all() and np.isnan(scores).all() and ids.shape == (2, 3)
    index.add(clustered(2))
    scores, ids = index.search(clustered(4, seed=5), k=5)
    assert (ids[:, :2] >= 0).all() and (ids[:, 2:] == -1).all()
    assert np.isfinite(scores[:, :2]).all() and np.isnan(scores[:, 2:]).all()
    assert index.payloads(ids[0]) == [None, None, None, None, None]


# ---------------------------------------------------------------- add / delete


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf"])
def test_add_delete_round_trip(kind):
    index, x, ids = built(kind)
    gone = ids[::7]
    assert index.delete(gone) == len(gone)
    assert len(index) == len(ids) - len(gone)
    np.testing.assert_array_equal(index.ids(), np.sort(np.setdiff1d(ids, gone)))
    # the deleted vectors themselves, searched with k = everything: never returned
    _, found = index.search(x[::7], k=len(ids))
    assert not np.isin(found, gone).any()
    assert np.isin(found[found >= 0], ids).all()
    with pytest.raises(InputValueError, match="not in the index"):
        index.payloads(gone[:1])
    # re-added (new payloads): found again as their own nearest neighbour
    index.add(x[::7], gone, payloads=[f"new/{i}" for i in gone])
    scores, found = index.search(x[::7], k=1)
    np.testing.assert_array_equal(found[:, 0], gone)
    assert index.payloads(found[:3, 0]) == [f"new/{i}" for i in gone[:3]]
    assert len(index) == len(ids)


def test_hnsw_delete_is_a_tombstone_until_compact():
    index, x, ids = built("hnsw", n=300)
    index.delete(ids[:100])
    assert index.tombstones == 100 and len(index) == 200
    before = index.search(x[100:], k=5)
    assert index.compact() == 100
    assert index.tombstones == 0 and len(index) == 200
    after = index.search(x[100:], k=5)
    np.testing.assert_array_equal(after[1][:, 0], ids[100:])  # each finds itself first
    assert recall_at_k(after[1], before[1], 5) >= 0.95


def test_ids_are_stable_and_checked():
    index = FaissIndex(DIM)
    first = index.add(clustered(3))
    np.testing.assert_array_equal(first, [0, 1, 2])
    index.delete([2])
    np.testing.assert_array_equal(index.add(clustered(2, seed=4)), [3, 4])  # 2 is not reused
    with pytest.raises(InputValueError, match=r"already in the index: \[4\]"):
        index.add(clustered(1), ids=[4])
    with pytest.raises(InputValueError, match=r"not in the index: \[2\]"):
        index.delete([2])
    with pytest.raises(InputValueError, match="duplicates"):
        index.add(clustered(2), ids=[9, 9])
    with pytest.raises(InputValueError, match=">= 0"):
        index.add(clustered(1), ids=[-3])
    with pytest.raises(InputValueError, match="one value per vector"):
        index.add(clustered(2), payloads=["a"])
    assert len(index) == 4  # failed adds changed nothing


def test_bad_inputs_name_the_argument():
    index = FaissIndex(DIM)
    with pytest.raises(InputValueError, match=r"`vectors` should have shape \[N, 16\].*\[3, 8\]"):
        index.add(np.zeros((3, 8), np.float32))
    with pytest.raises(InputValueError, match=r"`queries`.*x\[None\]"):
        index.search(np.ones(DIM), k=1)
    with pytest.raises(InputValueError, match="NaN"):
        index.add(np.full((1, DIM), np.nan))
    with pytest.raises(InputValueError, match="all-zero rows"):
        index.add(np.zeros((1, DIM)))
    with pytest.raises(InputValueError, match="k=0"):
        index.search(clustered(1), k=0)
    with pytest.raises(InputValueError, match="kind='annoy'"):
        FaissIndex(DIM, kind="annoy")
    with pytest.raises(InputValueError, match="Did you mean 'nprobe'"):
        FaissIndex(DIM, kind="ivf", nprobes=3)
    with pytest.raises(InputValueError, match="nprobe=20"):
        FaissIndex(DIM, kind="ivf", nlist=10, nprobe=20)
    with pytest.raises(InputValueError, match="metric='dot'"):
        FaissIndex(DIM, metric="dot")
    with pytest.raises(InputValueError, match="`contract` is not JSON-ready"):
        FaissIndex(DIM, contract={"scale": object()})
    FaissIndex(DIM, metric="l2").add(np.zeros((1, DIM)))  # zero vectors are fine under l2
    contract = InputContract(32, 32, 3, labels=["a"])  # an InputContract is stored as its dict
    assert FaissIndex(DIM, contract=contract).contract == contract.to_dict()


def test_ivf_training():
    index = FaissIndex(DIM, kind="ivf", nlist=50)
    with pytest.raises(InputValueError, match=r"nlist=50 needs at least 50.*Received: 20"):
        index.add(clustered(20))
    assert not index.is_trained and len(index) == 0
    index.train(clustered(200))
    assert index.is_trained
    index.add(clustered(20))  # trained: a small add is fine
    assert len(index) == 20
    with pytest.raises(InputValueError, match="already trained"):
        index.train(clustered(200))


# ---------------------------------------------------------------- save / load


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf"])
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_save_load_round_trip(tmp_path, kind, metric):
    index, x, ids = built(kind, metric=metric, contract=CONTRACT)
    index.delete(ids[:10])  # HNSW tombstones must survive the round trip
    queries = clustered(30, seed=9)
    want = index.search(queries, k=8)
    index.save(tmp_path / "idx")
    loaded = load_index(tmp_path / "idx", dim=DIM)
    assert isinstance(loaded, FaissIndex)
    assert loaded.get_config() == index.get_config()
    assert loaded.contract == CONTRACT and InputContract.from_dict(loaded.contract).height == 32
    got = loaded.search(queries, k=8)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    np.testing.assert_array_equal(loaded.ids(), index.ids())
    assert loaded.payloads(ids[10:20]) == [f"img/{i}.png" for i in ids[10:20]]
    meta = read_meta(tmp_path / "idx")
    assert (meta["kind"], meta["metric"], meta["dim"], meta["count"]) == (
        kind,
        metric,
        DIM,
        len(ids) - 10,
    )
    # the next automatic id continues after the largest ever seen, in both copies
    new = clustered(1, seed=11)
    assert loaded.add(new)[0] == index.add(new)[0] == ids.max() + 1
    assert partial_dirs(tmp_path) == []
    np.testing.assert_array_equal(FaissIndex.load(tmp_path / "idx").search(queries, 8)[1], want[1])


def test_save_replaces_and_failed_save_keeps_previous(tmp_path, monkeypatch):
    index, x, ids = built("exact", contract=CONTRACT)
    target = tmp_path / "idx"
    index.save(target)
    saved = index.search(x[:5], k=4)
    index.delete(ids[:300])
    index.add(clustered(5, seed=7), payloads=list("abcde"))

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(store, "atomic_write_json", fail)  # after the data files are written
    with pytest.raises(OSError, match="disk full"):
        index.save(target)
    monkeypatch.undo()
    old = load_index(target)
    assert len(old) == len(ids)
    np.testing.assert_array_equal(old.search(x[:5], k=4)[1], saved[1])
    assert partial_dirs(tmp_path) == []
    index.save(target)  # a successful save replaces it
    assert len(load_index(target)) == len(ids) - 300 + 5
    assert partial_dirs(tmp_path) == []


def test_interrupted_swap_reads_the_previous_folder(tmp_path):
    index, x, _ = built("exact")
    target = tmp_path / "idx"
    index.save(target)
    target.rename(previous_path(target))  # the process died between the two renames
    with pytest.warns(UserWarning, match="interrupted save"):
        recovered = load_index(target)
    np.testing.assert_array_equal(recovered.search(x[:3], 2)[1], index.search(x[:3], 2)[1])
    recovered.save(target)
    assert (target / META_FILE).is_file() and not previous_path(target).exists()


def test_save_refuses_a_folder_that_is_not_an_index(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"not an index")
    with pytest.raises(InputValueError, match="not empty and is not a kvision index"):
        FaissIndex(DIM).save(tmp_path / "photos")
    assert (tmp_path / "photos" / "cat.jpg").read_bytes() == b"not an index"
    FaissIndex(DIM).save(tmp_path / "empty")  # a new folder is fine, an empty one too
    (tmp_path / "empty2").mkdir()
    FaissIndex(DIM).save(tmp_path / "empty2")
    assert len(load_index(tmp_path / "empty2")) == 0


def test_load_errors_name_file_and_field(tmp_path):
    index, _, _ = built("exact", n=50)
    index.save(tmp_path / "idx")
    meta_path = tmp_path / "idx" / META_FILE
    meta = json.loads(meta_path.read_text())
    with pytest.raises(FileNotFoundError, match="missing"):
        load_index(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputValueError, match=r"plain is not a kvision vector index.*meta\.json"):
        load_index(tmp_path / "plain")
    with pytest.raises(InputValueError, match=r"field `dim` is 16.*dim 512"):
        load_index(tmp_path / "idx", dim=512)
    cases = [
        ({**meta, "dim": 32}, r"index\.faiss holds 16-dim vectors but .*meta\.json field `dim`"),
        ({**meta, "count": 49}, r"field `count`"),
        ({**meta, "format_version": 99}, r"meta\.json: field `format_version`.*99"),
        ({**meta, "kind": "annoy"}, r"meta\.json: .*kind='annoy'"),
        ({**meta, "kind": "hnsw"}, r"index\.faiss is a IndexIDMap2 .*`kind`='hnsw'"),
        ({k: v for k, v in meta.items() if k != "metric"}, r"field `metric`"),
        ({**meta, "format": "other"}, r"field `format`"),
    ]
    for bad, pattern in cases:
        meta_path.write_text(json.dumps(bad))
        with pytest.raises(InputValueError, match=pattern):
            load_index(tmp_path / "idx")
    meta_path.write_text("{not json")
    with pytest.raises(InputValueError, match=r"meta\.json is not readable JSON"):
        load_index(tmp_path / "idx")
    meta_path.write_text(json.dumps(meta))
    (tmp_path / "idx" / INDEX_FILE).write_bytes(b"garbage")
    with pytest.raises(InputValueError, match=r"index\.faiss is not a readable FAISS index"):
        load_index(tmp_path / "idx")


# ---------------------------------------------------------------- rebuild


def test_rebuild_swaps_in_a_complete_index(tmp_path):
    target = tmp_path / "idx"
    x = clustered(400)
    rebuild_index(target, x, payloads=[f"a/{i}" for i in range(400)], contract=CONTRACT)
    assert read_meta(target)["kind"] == "exact"
    y = clustered(500, seed=2)
    new = rebuild_index(target, y, ids=np.arange(500) + 1000, kind="hnsw", M=8, batch_size=128)
    loaded = load_index(target)
    meta = read_meta(target)
    # kind changed; metric and contract kept from the old index
    assert (meta["kind"], meta["metric"], meta["count"], meta["params"]["M"]) == (
        "hnsw",
        "cosine",
        500,
        8,
    )
    assert loaded.contract == CONTRACT and new.contract == CONTRACT
    np.testing.assert_array_equal(loaded.search(y[:5], 1)[1][:, 0], np.arange(5) + 1000)


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf"])
def test_failed_rebuild_keeps_the_old_index(tmp_path, monkeypatch, kind):
    target = tmp_path / "idx"
    x = clustered(400)
    payloads = [f"old/{i}" for i in range(400)]
    old = rebuild_index(target, x, payloads=payloads, kind=kind, **KIND_PARAMS[kind])
    want = old.search(x[:10], k=5)
    calls = []
    real_add = FaissIndex.add

    def failing_add(self, vectors, ids=None, payloads=None):
        calls.append(len(vectors))
        if len(calls) == 3:  # midway: two batches are in the new index already
            raise MemoryError("out of memory while adding")
        return real_add(self, vectors, ids, payloads)

    monkeypatch.setattr(FaissIndex, "add", failing_add)
    with pytest.raises(MemoryError):
        rebuild_index(target, clustered(1000, seed=5), batch_size=200)  # kind, params: the old
    monkeypatch.undo()
    assert calls == [200, 200, 200]
    loaded = load_index(target)
    assert len(loaded) == 400 and loaded.kind == kind
    np.testing.assert_array_equal(loaded.search(x[:10], k=5)[1], want[1])
    assert loaded.payloads([0, 399]) == ["old/0", "old/399"]
    assert partial_dirs(tmp_path) == []
    with pytest.raises(InputValueError, match="one value per vector"):  # bad input: no write
        rebuild_index(target, clustered(10), payloads=["x"])
    assert len(load_index(target)) == 400


# ---------------------------------------------------------------- Qdrant


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_qdrant_local_mode_same_interface(tmp_path, metric):
    pytest.importorskip("qdrant_client")
    from kvision.index import QdrantIndex

    base, queries = clustered(200), clustered(10, seed=3)
    ids = np.arange(200, dtype=np.int64) * 2 + 1
    payloads = [f"img/{i}.png" for i in ids]
    reference = FaissIndex(DIM, metric=metric)
    reference.add(base, ids, payloads)
    index = QdrantIndex(DIM, metric=metric, collection="test", contract=CONTRACT)
    assert index.add(base, ids, payloads).tolist() == ids.tolist()
    scores, found = index.search(queries, k=6)
    want_scores, want_ids = reference.search(queries, k=6)
    assert scores.dtype == np.float32 and found.dtype == np.int64
    np.testing.assert_array_equal(found, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-4, atol=1e-4)
    assert index.payloads(found[0]) == reference.payloads(found[0])
    # delete / re-add / automatic ids, as FaissIndex does
    assert index.delete(ids[:50]) == 50 and len(index) == 150
    assert not np.isin(index.search(base[:50], k=200)[1], ids[:50]).any()
    with pytest.raises(InputValueError, match="not in the index"):
        index.delete(ids[:1])
    with pytest.raises(InputValueError, match="already in the index"):
        index.add(base[50:51], ids[50:51])
    assert index.add(clustered(1, seed=8))[0] == ids.max() + 1
    index.add(base[:50], ids[:50], payloads[:50])
    np.testing.assert_array_equal(index.search(base[:5], 1)[1][:, 0], ids[:5])
    # padding when fewer than k
    small = QdrantIndex(DIM, metric=metric, collection="small")
    small.add(base[:2])
    s, i = small.search(queries[:1], k=4)
    assert (i[0, 2:] == -1).all() and np.isnan(s[0, 2:]).all()
    # save (points dumped) / load round trip
    index.save(tmp_path / "q")
    loaded = load_index(tmp_path / "q", dim=DIM)
    assert isinstance(loaded, QdrantIndex) and loaded.contract == CONTRACT
    np.testing.assert_array_equal(loaded.ids(), index.ids())
    np.testing.assert_array_equal(loaded.search(queries, 6)[1], index.search(queries, 6)[1])
    assert loaded.payloads(ids[60:63]) == payloads[60:63]


def test_qdrant_folder_collection_reopens(tmp_path):
    pytest.importorskip("qdrant_client")
    from kvision.index import QdrantIndex

    base = clustered(50)
    with QdrantIndex(DIM, location=tmp_path / "qdrant", collection="c") as index:
        index.add(base, payloads=[str(i) for i in range(50)])
        index.save(tmp_path / "pointer")
        want = index.search(base[:3], 3)[1]
        with pytest.raises(InputValueError, match="Close the other QdrantIndex"):
            QdrantIndex(DIM, location=tmp_path / "qdrant", collection="c")
    assert not (tmp_path / "pointer" / "vectors.npy").exists()  # data stays with Qdrant
    with pytest.raises(InputValueError, match="holds a QdrantIndex, not a FaissIndex"):
        FaissIndex.load(tmp_path / "pointer")
    with load_index(tmp_path / "pointer") as reopened:
        np.testing.assert_array_equal(reopened.search(base[:3], 3)[1], want)
        assert reopened.payloads([7]) == ["7"]
    with pytest.raises(InputValueError, match="holds 16-dim vectors. Received: dim=8"):
        QdrantIndex(8, location=tmp_path / "qdrant", collection="c")


# ---------------------------------------------------------------- recall@k


def test_recall_at_k_by_hand():
    approx = [[1, 2, 3, 4], [5, 6, 7, 8]]
    exact = [[1, 9, 3, 10], [5, 6, 7, 8]]
    assert recall_at_k(approx, exact, k=1) == 1.0  # 1 in {1}; 5 in {5}
    assert recall_at_k(approx, exact, k=2) == 0.75  # {1,2}&{1,9}: 1/2; {5,6}: 2/2
    assert recall_at_k(approx, exact, k=3) == pytest.approx((2 / 3 + 1) / 2)
    assert recall_at_k([[7, 8]], [[1, 2]], k=2) == 0.0
    # -1 padding is not an id; a query with no exact id is left out
    assert recall_at_k([[2, 1, -1], [4, -1, -1]], [[1, -1, -1], [-1, -1, -1]], k=3) == 1.0
    with pytest.raises(InputValueError, match="one row per query"):
        recall_at_k([[1, 2]], [[1, 2], [3, 4]], k=2)
    with pytest.raises(InputValueError, match="at least k=3 columns"):
        recall_at_k([[1, 2]], [[1, 2]], k=3)
    with pytest.raises(InputValueError, match="no id"):
        recall_at_k([[1]], [[-1]], k=1)


# ---------------------------------------------------------------- benchmark script


def test_bench_index_reports_every_kind(tmp_path, capsys):
    from conftest import load_tool

    bench = load_tool("bench_index")
    out = tmp_path / "bench.json"
    assert bench.main(["--sizes", "2000", "--queries", "20", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["schema"] == "kvision.bench_index/1"
    rows = {r["kind"]: r for r in report["rows"]}
    assert sorted(rows) == ["exact", "hnsw", "ivf"]
    assert all(r["status"] == "ok" and r["p99_ms"] >= r["p50_ms"] > 0 for r in rows.values())
    assert rows["exact"]["recall"] == 1.0 and rows["hnsw"]["recall"] >= 0.9
    assert rows["ivf"]["params"] == {"nlist": 45, "nprobe": 8}
    assert set(report["latency_ratio"]["2000"]) == {"hnsw", "ivf"}
    table = capsys.readouterr().out
    assert "| 2000 | hnsw |" in table and "latency p50 approx/exact at 2000" in table
    # a sweep of search-time settings: one build, one row each, labelled ratios
    sweep = ["--ef-search", "16", "128", "--nprobe", "1", "45", "--json", str(out)]
    assert bench.main(["--sizes", "2000", "--queries", "10", *sweep]) == 0
    report = json.loads(out.read_text())
    hnsw = [r for r in report["rows"] if r["kind"] == "hnsw"]
    assert [r["params"]["ef_search"] for r in hnsw] == [16, 128]
    assert hnsw[0]["build_s"] == hnsw[1]["build_s"] and hnsw[1]["recall"] >= hnsw[0]["recall"]
    ivf = [r for r in report["rows"] if r["kind"] == "ivf"]
    assert [r["params"]["nprobe"] for r in ivf] == [1, 45] and ivf[1]["recall"] == 1.0
    assert set(report["latency_ratio"]["2000"]) == {"hnsw ef_search=16", "hnsw ef_search=128",
                                                    "ivf nprobe=1", "ivf nprobe=45"}  # fmt: skip
