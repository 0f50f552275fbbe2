"""What the task pipeline (:mod:`kvision.spine`) asks the embedding task for: splits with
classes held out of training, the embedder, P x K training batches, evaluation batches, the
retrieval gallery, the 2-D projection plot and the report section.

``data`` is any classification dataset (``fashion_mnist``, ``mnist``, ``folder``, ``npz``: the
classification readers, with their bad-input policy). ``data.unseen_classes`` names the classes
kept out of training (default ``auto``: the last 40 %, Fashion-MNIST's Shirt, Sneaker, Bag and
Ankle boot). Training and validation use the other classes' images (relabelled ``0..S-1``); the
test split is the unseen classes' test images (a dataset without a test split: all their
images), each querying all the others.

Training batches are P x K (:mod:`kvision.tasks.embedding.sampling`): ``P = min(S, 8)``
classes, ``K = data.batch_size // P`` images each (at least 2), ``len(train) // (P * K)``
batches an epoch; augmentation is the classification one (``augment.*``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kvision.errors import InputValueError
from kvision.tasks.base import head_options
from kvision.tasks.classification.stages import DatasetView
from kvision.tasks.classification.stages import eval_batches as eval_batches  # the same splits
from kvision.tasks.embedding.model import EMBEDDING_OUTPUT

_HEAD_OPTIONS = {"dim", "embedding"}
#: the classes kept out of training by ``data.unseen_classes: auto``
UNSEEN_FRACTION = 0.4


@dataclass
class EmbeddingSplits(DatasetView):
    """The classification dataset seen through the embedding task: ``train`` / ``val`` hold the
    seen classes (labels ``0..S-1``), ``test`` the unseen ones (their original labels)."""

    data: object
    seen: list[int]
    unseen: list[int]
    train: object
    val: object
    test: object
    test_name: str = "test"
    notes: list = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.seen)

    def summary(self) -> dict:
        names = self.data.class_names
        return {**self.data.summary(),
                "seen_classes": [names[i] for i in self.seen],
                "unseen_classes": [names[i] for i in self.unseen],
                "splits": {"train": len(self.train),
                           "val": len(self.val) if self.val is not None else 0,
                           self.test_name: len(self.test)}}  # fmt: skip


def unseen_classes(setting, class_names: list[str]) -> list[int]:
    """The class indices ``data.unseen_classes`` names (module docstring).

    Raises:
        InputValueError: an unknown class name or index, or every class held out.
    """
    n = len(class_names)
    if setting == "auto":
        k = max(1, math.ceil(UNSEEN_FRACTION * n)) if n >= 4 else 0
        return list(range(n - k, n))
    if setting is None:
        return []
    if isinstance(setting, str | int):
        setting = [setting]
    out = []
    for item in setting:
        if isinstance(item, str) and item in class_names:
            out.append(class_names.index(item))
        elif isinstance(item, int) and not isinstance(item, bool) and 0 <= item < n:
            out.append(item)
        else:
            raise InputValueError(
                f"`data.unseen_classes` should name classes of the dataset (names or indices "
                f"0..{n - 1}). Received: {item!r}; classes: {class_names}"
            )
    if len(set(out)) > n - 2:
        raise InputValueError(
            f"`data.unseen_classes` should leave at least 2 classes to train on. Received: "
            f"{setting!r} of {n} classes"
        )
    return sorted(set(out))


def _keep(split, classes: list[int], relabel: bool):
    if split is None:
        return None
    index = np.flatnonzero(np.isin(split.labels, classes))
    out = split.subset(index)
    if relabel:
        lookup = np.full(max(classes) + 1, -1, np.int64)
        lookup[classes] = np.arange(len(classes))
        out.labels = lookup[out.labels]
    return out


def _join(a, b):
    from kvision.data.datasets import Split

    parts = [s for s in (a, b) if s is not None and len(s)]
    if len(parts) == 1:
        return parts[0]
    labels = np.concatenate([s.labels for s in parts])
    if all(s.images is not None for s in parts):
        return Split(labels, images=np.concatenate([s.images for s in parts]))
    if all(s.files is not None for s in parts):
        return Split(labels, files=[f for s in parts for f in s.files])
    raise InputValueError("Cannot join a split of arrays with a split of files.")


def load_splits(data_cfg, seed: int = 0) -> EmbeddingSplits:
    """The dataset of ``data_cfg`` split by class (module docstring).

    Raises:
        InputValueError: bad ``data.unseen_classes``, or a split left empty;
        kvision.data.DatasetError: as :func:`kvision.data.load_dataset`.
    """
    from kvision.data import load_dataset

    data = load_dataset(data_cfg, seed=seed)
    unseen = unseen_classes(data_cfg.unseen_classes, list(data.class_names))
    seen = [i for i in range(data.num_classes) if i not in unseen]
    notes = []
    train, val = _keep(data.train, seen, True), _keep(data.val, seen, True)
    if unseen:
        if data.test is not None:
            test, name = _keep(data.test, unseen, False), "test"
        else:
            test = _keep(_join(data.train, data.val), unseen, False)
            name = "unseen"
            notes.append("no test split: every image of the unseen classes is retrieved among")
        names = ", ".join(data.class_names[i] for i in unseen)
        notes.append(f"retrieval among classes never seen in training: {names}")
    else:
        test = data.test if data.test is not None else data.val
        name = "test" if data.test is not None else "val"
        notes.append("data.unseen_classes is empty: retrieval among the training classes")
    for split_name, split in (("train", train), (name, test)):
        if split is None or len(split) == 0:
            raise InputValueError(
                f"The embedding {split_name} split is empty (data.unseen_classes="
                f"{data_cfg.unseen_classes!r} on classes {list(data.class_names)})."
            )
    return EmbeddingSplits(data, seen, unseen, train, val, test, name, notes)


def build_model(model_cfg, splits: EmbeddingSplits):
    """``model.name``: a registered backbone; ``model.options`` its options;
    ``model.head.embedding``: ``pool`` (default: the pooled backbone features are the embedding,
    the losses act on a training-only projection) or ``projection``; ``model.head.dim``: the
    projection's width (default 128). See :mod:`kvision.tasks.embedding.model`."""
    from kvision.models.contract import with_resize
    from kvision.tasks.embedding.model import build_embedder

    head = head_options(model_cfg, _HEAD_OPTIONS, "embedding")
    h, w = model_cfg.input_size or splits.data.image_size
    c = model_cfg.channels or splits.data.channels
    names = splits.labels
    post = {"train_classes": [names[i] for i in splits.seen],
            "unseen_classes": [names[i] for i in splits.unseen]}  # fmt: skip
    model = build_embedder((int(h), int(w), int(c)), model_cfg.name, model_cfg.options,
                           dim=int(head.get("dim", 128)), labels=names, postprocess=post,
                           embedding=head.get("embedding", "pool"))  # fmt: skip
    return with_resize(model, model_cfg.resize)


def pk_shape(num_classes: int, batch_size: int) -> tuple[int, int]:
    """``(P, K)`` of the training batches for ``num_classes`` seen classes (module docstring)."""
    p = min(num_classes, 8)
    return p, max(2, batch_size // p)


def _pixels(split, contract) -> np.ndarray:
    """uint8 ``[N, H, W, C]`` of a split at the contract's size (files decoded once)."""
    from kvision.data.pipeline import fit_batch
    from kvision.preprocess import load_pixels

    size = (contract.height, contract.width)
    if split.images is not None:
        if tuple(split.images.shape[1:]) == contract.shape:
            return split.images
        return np.asarray(fit_batch(split.images, contract))
    return np.stack([load_pixels(f, contract.channels, size, contract.resize) for f in split.files])


def datasets(cfg, splits: EmbeddingSplits, contract, run_dir=None, augment: bool = True):
    """``(train_ds, val_ds, augmentation report entry)``: P x K batches ``(images float32 [P*K,
    H, W, C], int labels [P*K])`` for training, ordered batches of the seen classes' validation
    images."""
    import tensorflow as tf

    from kvision.data import build_dataset
    from kvision.data.pipeline import to_model_inputs
    from kvision.tasks.embedding.sampling import pk_dataset
    from kvision.workflow import augmentation

    augmenter, info = augmentation(cfg, splits.data, contract, run_dir if augment else None)
    if not augment:
        augmenter, info = None, {**info, "enabled": False}
    p, k = pk_shape(splits.num_classes, cfg.data.batch_size)
    steps = max(1, len(splits.train) // (p * k))
    info["sampling"] = f"P x K batches: {p} classes x {k} images, {steps} batches an epoch"
    ds = pk_dataset(_pixels(splits.train, contract), splits.train.labels, p, k,
                    seed=cfg.train.seed, steps=steps)  # fmt: skip
    ds = ds.apply(tf.data.experimental.assert_cardinality(steps))
    train_ds = to_model_inputs(ds, contract, augmenter).prefetch(tf.data.AUTOTUNE)
    val_ds = None
    if splits.val is not None and len(splits.val):
        val_ds = build_dataset(splits.val, contract, cfg.data.batch_size, cache=cfg.data.cache,
                               on_error=cfg.data.on_error)  # fmt: skip
    return train_ds, val_ds, info


def embed(run, split, contract, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(embeddings float32 [N, D], labels [N])`` of the first ``limit`` images of ``split``."""
    vectors, labels = [], []
    subset = split if limit is None or limit >= len(split) else split.subset(np.arange(limit))
    for x, y in eval_batches(subset, contract, 128):
        vectors.append(np.asarray(run(x)[EMBEDDING_OUTPUT], np.float32))
        labels.append(y)
    return np.concatenate(vectors), np.concatenate(labels)


def balanced_pairs(labels, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(i, j)`` int ``[n]`` index pairs into ``labels``, half of the same class and half of
    different classes (as in LFW's verification protocol), ``i != j``; a class with a single
    item never gives a same pair. Fewer pairs when ``labels`` cannot give both kinds."""
    labels = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    multi = [g for g in groups if len(g) >= 2]
    if not multi or len(groups) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    half = n // 2
    sizes = np.array([len(g) for g in multi], np.float64)
    picks = rng.choice(len(multi), half, p=sizes / sizes.sum())
    same = np.array([rng.choice(multi[g], 2, replace=False) for g in picks]).reshape(-1, 2)
    a = rng.integers(0, len(labels), 4 * (n - half))
    b = rng.integers(0, len(labels), 4 * (n - half))
    keep = labels[a] != labels[b]
    diff = np.stack([a[keep], b[keep]], 1)[: n - half]
    pairs = np.concatenate([same, diff]).astype(np.int64)
    return pairs[:, 0], pairs[:, 1]


def side_metrics(run, splits: EmbeddingSplits, contract, pairs: int = 20000,
                 limit: int = 3000) -> dict:  # fmt: skip
    """Pair verification (same class or not; the Siamese use): the cosine threshold that best
    separates :func:`balanced_pairs` of the validation split (seen classes) is applied to
    balanced pairs of the test split (unseen classes), each from its first ``limit`` images.

    Returns ``{"verification_accuracy", "verification_threshold", "verification_val_accuracy",
    "verification_pairs"}`` or ``{}`` without a validation split able to give both kinds of
    pairs.
    """
    from kvision.tasks.embedding.metrics import choose_threshold, verify_pairs

    if splits.val is None or len(splits.val) < 4:
        return {}
    found = []
    for split, seed in ((splits.val, 1), (splits.test, 2)):
        vectors, labels = embed(run, split, contract, limit)
        i, j = balanced_pairs(labels, pairs, seed)
        if not len(i):
            return {}
        found.append((np.sum(vectors[i] * vectors[j], axis=1), labels[i] == labels[j]))
    (val_sims, val_same), (test_sims, test_same) = found
    threshold, val_accuracy = choose_threshold(val_sims, val_same)
    accuracy = float(np.mean(verify_pairs(test_sims, threshold) == test_same))
    return {"verification_accuracy": round(accuracy, 6),
            "verification_threshold": round(threshold, 6),
            "verification_val_accuracy": round(val_accuracy, 6),
            "verification_pairs": int(len(test_sims))}  # fmt: skip


def _tile(pixels: np.ndarray, colour, size: int = 64):
    from PIL import Image, ImageOps

    img = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).convert("RGB")
    img = img.resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(ImageOps.expand(img, border=3, fill=colour))


def write_gallery(run, split, contract, path: Path, n: int = 8, k: int = 5,
                  pool: int = 2000) -> Path:  # fmt: skip
    """Retrieval examples: ``n`` query images (first column, gray border) and their ``k``
    nearest neighbours among the first ``pool`` images of ``split`` (green: same class, red:
    another), and beside it ``embedding_projection.png``: a 2-D t-SNE of those embeddings
    coloured by class."""
    from kvision.tasks.detection.draw import write_grid

    vectors, labels = embed(run, split, contract, pool)
    pixels = _pixels(split.subset(np.arange(len(vectors))), contract)
    n = min(n, len(vectors))
    queries = np.linspace(0, len(vectors) - 1, n).astype(int)  # spread over the classes
    sims = vectors[queries] @ vectors.T
    sims[np.arange(n), queries] = -np.inf
    tiles = []
    for row, q in enumerate(queries):
        tiles.append(_tile(pixels[q], (128, 128, 128)))
        for j in np.argsort(-sims[row])[:k]:
            same = labels[j] == labels[q]
            tiles.append(_tile(pixels[j], (0, 160, 0) if same else (210, 0, 0)))
    out = write_grid(tiles, path, columns=k + 1)
    write_projection(vectors, labels, contract.labels, Path(path).with_name(PROJECTION_PNG))
    return out


PROJECTION_PNG = "embedding_projection.png"


def write_projection(vectors, labels, names, path: Path, max_points: int = 1500) -> Path | None:
    """A 2-D t-SNE (van der Maaten and Hinton, JMLR 2008; scikit-learn, PCA-initialised, seed 0)
    of up to ``max_points`` embeddings, coloured by class; ``None`` when fewer than 5 points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    from kvision.io import atomic_write_bytes

    if len(vectors) < 5:
        return None
    step = max(1, len(vectors) // max_points)
    v, y = vectors[::step][:max_points], labels[::step][:max_points]
    xy = TSNE(2, init="pca", random_state=0, perplexity=min(30.0, len(v) - 1.0)).fit_transform(v)
    fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
    for c in np.unique(y):
        name = names[int(c)] if names and 0 <= int(c) < len(names) else str(int(c))
        ax.scatter(xy[y == c, 0], xy[y == c, 1], s=6, label=name)
    ax.set_title(f"t-SNE of {len(v)} test embeddings")
    ax.set_xticks([]), ax.set_yticks([])
    ax.legend(markerscale=3, fontsize=8, loc="best")
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _verification_lines(m: dict) -> list[str]:
    if m.get("verification_accuracy") is None:
        return []
    return [
        f"Pair verification (same class or not): accuracy {m['verification_accuracy']:.4f} on "
        f"{m.get('verification_pairs', 0):,} balanced test pairs at cosine >= "
        f"{m['verification_threshold']:.3f}, the threshold chosen on validation pairs of the "
        f"training classes (accuracy there {m.get('verification_val_accuracy', 0):.4f}).",
        "",
    ]


def report_lines(section: dict) -> list[str]:
    """Markdown of the retrieval evaluation section (``kvision.spine`` writes it)."""
    m = section.get("metrics", {})

    def f(key):
        v = m.get(key)
        return "-" if v is None else f"{v:.4f}"

    return [
        f"recall@1 **{f('recall@1')}**, recall@5 {f('recall@5')}, recall@10 {f('recall@10')}, "
        f"mAP@R {f('mAP@R')} on {section.get('n', 0):,} {section.get('split', 'test')} images "
        "(each queries all the others; cosine similarity, exact search).",
        "",
        *_verification_lines(m),
        f"![t-SNE of the test embeddings]({PROJECTION_PNG})",
        "",
    ]
