"""``kvision index build`` / ``kvision index search`` on an image folder with a real (untrained)
embedding TFLite model: exact neighbours match NumPy, duplicates are found first, bad files are
listed, an incompatible model is refused; and ``:search`` in ``kvision serve``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from kvision.cli import main
from kvision.errors import InputValueError
from kvision.index.images import build_image_index, search_images
from kvision.tasks.embedding.model import build_embedder


def _embedder_tflite(path, dim=8, size=16, seed=0):
    from kvision._keras import keras
    from kvision.export.converter import convert_tflite

    keras.utils.set_random_seed(seed)
    model = build_embedder((size, size, 1), "compact_mobilenet", {"width": 0.25}, dim=dim,
                           embedding="projection")  # fmt: skip
    return convert_tflite(model, path)


@pytest.fixture(scope="module")
def folder_and_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("index")
    photos = root / "photos"
    rng = np.random.default_rng(0)
    for i in range(12):
        sub = photos / ("a" if i < 6 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20, 24), np.uint8)).save(sub / f"{i:02d}.png")
    (photos / "b" / "broken.png").write_bytes(b"not a png")
    (photos / "notes.txt").write_text("ignored: not an image")
    model = _embedder_tflite(root / "embedder_float32.tflite")
    return root, photos, model


def _embed_like_the_index(model, files):
    from kvision.index.images import _open, embed_files

    contract, runtime = _open(model)
    vectors, kept, bad = embed_files(contract, runtime, files)
    runtime.close()
    return vectors, kept, bad


def test_build_lists_bad_files_and_search_matches_numpy(folder_and_model, tmp_path):
    _, photos, model = folder_and_model
    summary = build_image_index(model, photos, tmp_path / "idx", kind="exact", progress=False)
    assert summary["count"] == 12 and summary["dim"] == 8
    assert [b[0].endswith("broken.png") for b in summary["bad_files"]] == [True]
    files = sorted(photos.rglob("[0-9]*.png"))
    vectors, _, _ = _embed_like_the_index(model, files)
    query = files[3]
    (result,) = search_images(tmp_path / "idx", [query], k=4)
    sims = vectors @ vectors[3]
    expected = np.argsort(-sims)[:4]
    assert [h["path"] for h in result["neighbours"]] == [str(files[i]) for i in expected]
    assert result["neighbours"][0]["path"] == str(query)  # the image itself, cosine 1
    assert result["neighbours"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose([h["score"] for h in result["neighbours"]], sims[expected],
                               atol=1e-4)  # fmt: skip


def test_rebuild_replaces_the_index_and_hnsw_finds_the_same(folder_and_model, tmp_path):
    _, photos, model = folder_and_model
    build_image_index(model, photos / "a", tmp_path / "idx", kind="exact", progress=False)
    q = sorted((photos / "b").glob("[0-9]*.png"))[0]
    assert all("/a/" in h["path"] for h in search_images(tmp_path / "idx", [q], 3)[0]["neighbours"])
    build_image_index(model, photos, tmp_path / "idx", kind="hnsw", progress=False)
    hits = search_images(tmp_path / "idx", [q], 3)[0]["neighbours"]
    assert hits[0]["path"] == str(q)  # rebuilt with folder b: the query itself is found


def test_incompatible_models_and_bad_queries_are_refused(folder_and_model, tmp_path):
    root, photos, model = folder_and_model
    build_image_index(model, photos, tmp_path / "idx", kind="exact", progress=False)
    other = _embedder_tflite(tmp_path / "wide_float32.tflite", dim=16)
    q = sorted(photos.rglob("[0-9]*.png"))[0]
    with pytest.raises(InputValueError, match="dim: index 8, model 16"):
        search_images(tmp_path / "idx", [q], model_path=other)
    classifier = root.parents[0] / "none.tflite"
    with pytest.raises(FileNotFoundError, match="Model not found"):
        search_images(tmp_path / "idx", [q], model_path=classifier)
    from kvision.preprocess import ImageError

    with pytest.raises(ImageError):
        search_images(tmp_path / "idx", [photos / "b" / "broken.png"])
    with pytest.raises(FileNotFoundError, match="Image folder not found"):
        build_image_index(model, tmp_path / "nowhere", tmp_path / "x", progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputValueError, match="No image"):
        build_image_index(model, empty, tmp_path / "x", progress=False)


def test_a_classification_model_cannot_build_an_index(folder_and_model, tmp_path):
    from pathlib import Path

    _, photos, _ = folder_and_model
    ref = Path(__file__).resolve().parents[2] / "tflite_models" / "classifier_float32.tflite"
    with pytest.raises(InputValueError, match="needs an embedding model"):
        build_image_index(ref, photos, tmp_path / "idx", progress=False)


def test_cli_build_and_search(folder_and_model, tmp_path, capsys):
    _, photos, model = folder_and_model
    out = tmp_path / "cli.index"
    assert main(["index", "build", "--model", str(model), str(photos), "--out", str(out),
                 "--kind", "exact"]) == 0  # fmt: skip
    printed = capsys.readouterr()
    assert "12" in printed.out + printed.err and "broken.png" in printed.out + printed.err
    q = sorted(photos.rglob("[0-9]*.png"))[5]
    assert main(["index", "search", str(out), str(q), "-k", "2", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results[0]["file"] == str(q) and results[0]["neighbours"][0]["path"] == str(q)
    assert main(["index", "search", str(out), str(q), "-k", "0"]) == 2
    assert "-k" in capsys.readouterr().err


def test_serve_search_endpoint(folder_and_model, tmp_path):
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from deploy.server import create_app, load_store
    from kvision.models import InputContract

    _, photos, model = folder_and_model
    build_image_index(model, photos, tmp_path / "idx", kind="exact", progress=False)
    store = load_store([f"shoes={model}"], indexes=[f"shoes={tmp_path / 'idx'}"])
    client = TestClient(create_app(store))
    files = sorted(photos.rglob("[0-9]*.png"))
    vectors, _, _ = _embed_like_the_index(model, files)
    contract = InputContract.find(model)
    from kvision.preprocess import load_pixels

    x = contract.normalize(np.stack([load_pixels(files[7], 1, (16, 16), contract.resize)]))
    res = client.post("/v1/models/shoes:search", json={"instances": x.tolist(), "k": 3})
    assert res.status_code == 200, res.text
    hits = res.json()["results"][0]
    assert hits[0]["payload"] == str(files[7]) and hits[0]["score"] == pytest.approx(1, abs=1e-4)
    assert [h["payload"] for h in hits] == [
        str(files[i]) for i in np.argsort(-(vectors @ vectors[7]))[:3]
    ]
    bad = client.post("/v1/models/shoes:search", json={"instances": x.tolist(), "k": 0})
    assert bad.status_code == 400 and "'k'" in bad.text
    store.close()
    with pytest.raises(InputValueError, match="NAME=DIR"):
        load_store([f"shoes={model}"], indexes=["shoes"])
    with pytest.raises(Exception, match="not served"):
        load_store([f"shoes={model}"], indexes=[f"boots={tmp_path / 'idx'}"])
    plain = load_store([f"shoes={model}"])
    res = TestClient(create_app(plain)).post("/v1/models/shoes:search",
                                             json={"instances": x.tolist()})  # fmt: skip
    assert res.status_code == 404 and "--index shoes=DIR" in res.text
    plain.close()
