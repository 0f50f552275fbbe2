"""Detection examples -> batched ``tf.data`` pipelines with per-anchor targets.

Every image goes through kvision's one decode -> resize path
(:func:`kvision.preprocess.load_pixels`, the contract's stretch or letterbox resize), so a served
image is preprocessed as a training image. Boxes are normalized by the image's own size, which a
stretch resize leaves unchanged, or mapped through the letterbox's scale and padding. Decoded
images are cached in memory as uint8 (a 3,000-image 160x160 RGB set is 230 MB).

    ds = detection_dataset(dataset, contract, anchors, batch_size=32, augmenter=aug, seed=0)
    for images, targets in ds:       # float32 [B, H, W, C]; {"class_logits": int32 [B, A],
        ...                          #   "box_deltas": float32 [B, A, 5]} (deltas + positive flag)

:func:`eval_batches` yields ``(images, ground truth)`` for the streaming metric without targets.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kvision.preprocess import load_pixels
from kvision.tasks.detection.anchors import encode_targets_tf
from kvision.tasks.detection.heads import BOX_OUTPUT, CLASS_OUTPUT


def _normalized(example, contract=None) -> np.ndarray:
    """The example's boxes normalized to the model input: by the image's own size (a stretch
    resize keeps them), or mapped through the letterbox's scale and padding."""
    boxes = np.asarray(example.boxes, np.float32).reshape(-1, 4)
    if contract is not None and contract.resize == "letterbox":
        from kvision.preprocess import letterbox_boxes

        size = (contract.height, contract.width)
        boxes = letterbox_boxes(boxes, example.width, example.height, size)
        scale = np.array([contract.width, contract.height] * 2, np.float32)
    else:
        scale = np.array([example.width, example.height] * 2, np.float32)
    return (boxes / scale).clip(0.0, 1.0)


def _examples(dataset, contract):
    size = (contract.height, contract.width)
    for ex in dataset.examples:
        pixels = load_pixels(ex.image_path, contract.channels, size, contract.resize)
        yield pixels, _normalized(ex, contract), np.asarray(ex.classes, np.int32).reshape(-1)


def example_dataset(dataset, contract, cache: bool = True) -> tf.data.Dataset:
    """``(pixels uint8 [H, W, C], boxes float32 [N, 4] normalized xyxy, classes int32 [N])``
    per example, in the dataset's order, decoded once and cached (``cache=True``)."""
    h, w, c = contract.height, contract.width, contract.channels
    ds = tf.data.Dataset.from_generator(
        lambda: _examples(dataset, contract),
        output_signature=(
            tf.TensorSpec((h, w, c), tf.uint8),
            tf.TensorSpec((None, 4), tf.float32),
            tf.TensorSpec((None,), tf.int32),
        ),
    )
    ds = ds.apply(tf.data.experimental.assert_cardinality(len(dataset.examples)))
    return ds.cache() if cache else ds


def detection_dataset(
    dataset,
    contract,
    anchors,
    *,
    batch_size: int = 32,
    augmenter=None,
    shuffle: bool = False,
    seed: int = 0,
    encode_options: dict | None = None,
    cache: bool = True,
) -> tf.data.Dataset:
    """The training (or validation) pipeline of a detector.

    Args:
        dataset: a :class:`~kvision.tasks.detection.example.DetectionDataset`.
        contract: the model's input contract (size, channels, scale, offset).
        anchors: float32 ``[A, 4]`` normalized xyxy (``generate_anchors``); used with
            ``encode_options`` only, else the contract's own (``contract_anchors``).
        batch_size: images per batch (default 32); the last batch may be smaller.
        augmenter: a ``DetectionAugmenter`` (``build_detection_augmenter``) or ``None``.
        shuffle: reshuffle every epoch (training).
        seed: shuffle seed.
        encode_options: keyword options of ``encode_targets_tf`` (IoU thresholds, variances)
            for the anchor head; default: the contract's head's own assignment.
        cache: keep decoded images in memory.

    Returns:
        ``(images float32 [B, H, W, C], {"class_logits": int32 [B, A], "box_deltas": float32
        [B, A, 5]})`` batches.
    """
    if encode_options:
        anchors = tf.constant(anchors, tf.float32)
        options = dict(encode_options)

        def encode(boxes, classes):
            return encode_targets_tf(boxes, classes, anchors, **options)
    else:  # the contract's head picks the assignment (anchor IoU matching or grid cells)
        from kvision.tasks.detection.task import target_encoder

        encode = target_encoder(contract)
    ds = example_dataset(dataset, contract, cache)
    if shuffle:
        ds = ds.shuffle(max(1, len(dataset.examples)), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda p, b, c: (tf.cast(p, tf.float32) / 255.0, b, c))
    if augmenter is not None:
        ds = augmenter.map(ds)
    scale, offset = 255.0 * contract.scale, contract.offset

    def targets(image, boxes, classes):
        t = encode(boxes, classes)
        positive = tf.cast(t["class_targets"] >= 0, tf.float32)[:, None]
        return image * scale + offset, {
            CLASS_OUTPUT: t["class_targets"],
            BOX_OUTPUT: tf.concat([t["box_targets"], positive], axis=-1),
        }

    ds = ds.map(targets, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def eval_batches(dataset, contract, batch_size: int = 32):
    """Yield ``(inputs float32 [B, H, W, C], examples)`` over ``dataset`` in order: model inputs
    and the :class:`DetectionExample` objects they came from (ground truth in pixels)."""
    size = (contract.height, contract.width)
    examples = dataset.examples
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        pixels = np.stack(
            [load_pixels(ex.image_path, contract.channels, size, contract.resize) for ex in chunk]
        )
        yield contract.normalize(pixels), chunk
