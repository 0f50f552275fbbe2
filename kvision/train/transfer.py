"""Two-phase transfer learning with :func:`kvision.train.fit`: train the head, then fine-tune.

Phase 1 trains the new head with the whole backbone frozen (``run_dir/phase1``); phase 2
unfreezes the top ``unfreeze_blocks`` backbone blocks and trains at ``learning_rate *
finetune_lr_factor`` (``run_dir/phase2``). BatchNormalization stays frozen in both (see
:mod:`kvision.models.transfer`). Each phase is a normal, resumable ``fit`` run; a finished
phase 1 is not repeated when the same command runs again. ``run_dir/transfer.json`` records
both results::

    model = build_transfer_model("runs/mnist/checkpoints/best.keras", 10)
    head, tuned = fit_transfer(model, train_ds, val_ds, TrainConfig(learning_rate=1e-3),
                               "runs/fashion", head_epochs=2, finetune_epochs=5,
                               unfreeze_blocks=2)
"""

from __future__ import annotations

import inspect
import os
from dataclasses import replace
from pathlib import Path

from kvision._keras import require_tf_keras_model
from kvision.config import TrainConfig
from kvision.errors import InputTypeError, InputValueError
from kvision.io import atomic_write_json
from kvision.models.transfer import backbone_blocks, set_trainable_blocks
from kvision.train.fit import FitResult, fit, training_done

HEAD_WEIGHTS = "head_final.weights.h5"
TRANSFER_FILE = "transfer.json"
_FIT_OWN_ARGS = ("model", "train_ds", "val_ds", "cfg", "run_dir")


def fit_transfer(
    model,
    train_ds,
    val_ds,
    cfg: TrainConfig,
    run_dir,
    head_epochs: int,
    finetune_epochs: int,
    unfreeze_blocks: int,
    finetune_lr_factor: float = 0.1,
    **fit_kwargs,
) -> tuple[FitResult, FitResult]:
    """Train the head of a transfer model, then fine-tune its top backbone blocks.

    Args:
        model: a tf_keras classifier, e.g. from
            :func:`kvision.models.transfer.build_transfer_model`.
        train_ds: ``tf.data.Dataset`` of ``(images, labels)`` batches.
        val_ds: validation dataset of the same form (or ``None``).
        cfg: training settings; ``cfg.epochs`` is replaced by the epochs of each phase.
        run_dir: run directory; the phases go to ``phase1/`` and ``phase2/``.
        head_epochs: epochs of phase 1 (>= 1).
        finetune_epochs: epochs of phase 2 (>= 1).
        unfreeze_blocks: top backbone blocks trained in phase 2 (1..number of blocks).
        finetune_lr_factor: phase 2 learning rate = ``cfg.learning_rate`` times this, in (0, 1]
            (default 0.1).
        **fit_kwargs: passed to :func:`kvision.train.fit` (``steps_per_epoch``,
            ``class_weight``, ``callbacks``, ``verbose``).

    Returns:
        ``(phase1_result, phase2_result)``; the model holds the last phase-2 weights.

    Example:
        >>> r1, r2 = fit_transfer(model, train_ds, val_ds, TrainConfig(), "runs/t",
        ...                       head_epochs=1, finetune_epochs=3,
        ...                       unfreeze_blocks=2)  # doctest: +SKIP
    """
    require_tf_keras_model(model)
    for name, value in (
        ("head_epochs", head_epochs),
        ("finetune_epochs", finetune_epochs),
        ("unfreeze_blocks", unfreeze_blocks),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputValueError(f"`{name}` should be an integer >= 1. Received: {name}={value!r}")
    if not 0 < finetune_lr_factor <= 1:
        raise InputValueError(
            f"`finetune_lr_factor` should be in (0, 1]. "
            f"Received: finetune_lr_factor={finetune_lr_factor}"
        )
    allowed = [p for p in inspect.signature(fit).parameters if p not in _FIT_OWN_ARGS]
    unknown = sorted(set(fit_kwargs) - set(allowed))
    if unknown:
        raise InputTypeError(
            f"fit_transfer got unknown argument(s) {unknown}. Allowed **fit_kwargs: {allowed}."
        )
    blocks = backbone_blocks(model)
    if unfreeze_blocks > len(blocks):
        raise InputValueError(
            f"`unfreeze_blocks` should be at most {len(blocks)}, the number of "
            f"backbone blocks ({', '.join(name for name, _ in blocks)}). "
            f"Received: unfreeze_blocks={unfreeze_blocks}"
        )

    run_dir = Path(run_dir)
    phase1_dir, phase2_dir = run_dir / "phase1", run_dir / "phase2"
    set_trainable_blocks(model, 0)
    head_weights = phase1_dir / HEAD_WEIGHTS
    done = training_done(phase1_dir)
    if done is not None and head_weights.is_file():
        model.load_weights(str(head_weights))
        head_result = done
    else:
        head_result = fit(
            model, train_ds, val_ds, replace(cfg, epochs=head_epochs), phase1_dir, **fit_kwargs
        )
        _save_weights_atomic(model, head_weights)

    unfrozen = set_trainable_blocks(model, unfreeze_blocks)
    finetune_cfg = replace(
        cfg, epochs=finetune_epochs, learning_rate=cfg.learning_rate * finetune_lr_factor
    )
    tune_result = fit(model, train_ds, val_ds, finetune_cfg, phase2_dir, **fit_kwargs)
    atomic_write_json(
        run_dir / TRANSFER_FILE,
        {
            "head_epochs": head_epochs,
            "finetune_epochs": finetune_epochs,
            "unfreeze_blocks": unfreeze_blocks,
            "unfrozen": unfrozen,
            "finetune_learning_rate": finetune_cfg.learning_rate,
            "phase1": head_result.to_dict(),
            "phase2": tune_result.to_dict(),
        },
    )
    return head_result, tune_result


def _save_weights_atomic(model, path: Path) -> None:
    """``model.save_weights`` to a temporary file beside ``path``, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")  # same suffix: it selects the weights format
    model.save_weights(str(tmp))
    os.replace(tmp, path)
