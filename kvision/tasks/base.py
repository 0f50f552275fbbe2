"""The :class:`Task` interface, its streaming metric and parity result, and the task registry.

A task owns what differs between vision tasks; the pipeline stages (run directory, fit loop,
export, compression, runtimes, benchmark, serving, report frame) never branch on a task's name,
they ask the task::

    task = get_task(contract.task)                     # "classification", "detection", ...
    outputs = task.build_head(features, num_classes)   # named raw outputs, no post-processing
    metric = task.metric(contract)
    for x, targets in batches:
        metric.update(runner(x), targets)              # streams: nothing holds the whole split
    metric.result()[task.primary_metric]
    task.parity(keras_outputs, artifact_outputs, "int8", contract)  # decoded, one tolerance table

Outputs always travel as ``dict[str, np.ndarray]`` keyed by the model's output names, so a model
with one output and a detector with several go through the same code.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import numpy as np

from kvision.errors import InputValueError

#: The variant kinds a parity tolerance table has a row for. ``float`` covers float32
#: artifacts (SavedModel, float32 TFLite), ``float16`` the float16-weight TFLite, ``dynamic``
#: dynamic-range quantization, ``int8`` / ``int16x8`` full-integer quantization (PTQ or QAT).
VARIANT_KINDS = ("float", "float16", "dynamic", "int8", "int16x8")


def variant_kind(variant: str) -> str:
    """The tolerance-table row of an artifact variant name.

    Example:
        >>> [variant_kind(v) for v in ("qat_int8_float_io", "ptq_float16", "saved_model")]
        ['int8', 'float16', 'float']
    """
    name = variant.lower()
    for kind in ("int16x8", "int8", "float16", "dynamic"):
        if kind in name:
            return kind
    return "float"


@dataclass(frozen=True)
class Tolerance:
    """How close an artifact's outputs must be to the Keras model's, for one variant kind.

    Args:
        max_abs_diff: largest allowed ``|artifact - keras|`` over the raw outputs; ``None``: not
            checked (quantized variants, judged on decoded outputs only).
        min_agreement: smallest allowed agreement of the decoded outputs (top-1 class, matched
            detections, ... as the task defines it), in [0, 1].
    """

    max_abs_diff: float | None
    min_agreement: float


@dataclass
class Parity:
    """The result of comparing an artifact with the Keras model on the same inputs.

    Args:
        ok: every check in the task's tolerance row passed.
        checks: the measured numbers (JSON-ready), e.g. ``max_abs_diff``, ``agreement``.
        reasons: why it failed (empty when ``ok``).
    """

    ok: bool
    checks: dict = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    @property
    def reason(self) -> str | None:
        return "; ".join(self.reasons) or None


class StreamingMetric:
    """A metric fed batch by batch; only per-batch summaries are kept, never a whole split.

    Subclasses implement :meth:`update` and :meth:`result`. ``result()`` returns a JSON-ready
    dict that contains the task's ``primary_metric`` key.
    """

    def update(self, outputs: dict[str, np.ndarray], targets) -> None:
        """Add one batch: the model's named raw outputs and the batch's targets."""
        raise NotImplementedError

    def result(self) -> dict:
        raise NotImplementedError


class Task:
    """What one vision task owns. Subclasses set the class attributes and implement the methods.

    Attributes:
        name: the task's registry name, written into every contract (``contract.task``).
        primary_metric: the key of :meth:`StreamingMetric.result` that ranks models and gates
            compressed variants (``"accuracy"``, ``"mAP@[.5:.95]"``, ...).
        higher_is_better: direction of ``primary_metric``.
        output_names: the named raw outputs of the task head, in order.
        tolerances: the parity table, one :class:`Tolerance` per variant kind.
        artifact_name: default file prefix of the exported artifacts.
    """

    name: str = ""
    primary_metric: str = ""
    higher_is_better: bool = True
    output_names: tuple[str, ...] = ()
    tolerances: dict[str, Tolerance] = {}
    #: the default file prefix of exported artifacts (``<name>_float32.tflite``, ...)
    artifact_name: str = "model"
    #: PTQ variants the task's exported graph cannot be converted to, with the reason: the
    #: pipeline lists them as not run instead of attempting a conversion known to fail
    unsupported_variants: dict[str, str] = {}
    #: the module with the pipeline hooks (``load_splits``, ``build_model``, ``datasets``,
    #: ``eval_batches``, ``write_gallery``, ``report_lines``) the default methods call
    stages: str = ""

    # -- model ---------------------------------------------------------------------------------
    def build_head(self, features: dict, num_classes: int, **options) -> dict:
        """Named raw output tensors on a backbone's named features (no post-processing)."""
        raise NotImplementedError

    # -- training ------------------------------------------------------------------------------
    def compile_args(self, train_cfg, num_classes: int) -> dict:
        """``loss`` and ``metrics`` for ``model.compile`` (the optimizer is task-agnostic)."""
        raise NotImplementedError

    def monitor(self, has_validation: bool) -> tuple[str, str]:
        """The Keras log key that selects the best checkpoint and its mode (``max``/``min``)."""
        raise NotImplementedError

    def trainer(self, model, train_cfg):
        """The model ``fit`` trains (default: ``model``). A task whose loss needs a
        training-only head (embeddings' ArcFace) returns a model that shares ``model``'s layers;
        checkpoints still save ``model`` alone."""
        return model

    def training_targets(self, dataset, train_cfg, model):
        """Map a ``(inputs, targets)`` dataset to what the compiled loss takes (default: as is)."""
        return dataset

    # -- outside the graph ---------------------------------------------------------------------
    def decode(self, outputs: dict[str, np.ndarray], contract, image_sizes=None) -> list:
        """Raw named outputs of a batch -> one prediction per image (argmax, NMS, ...);
        ``image_sizes`` (``(width, height)`` per image, or one for all) places spatial outputs
        in the original images' pixels (default: the model input's)."""
        raise NotImplementedError

    def metric(self, contract) -> StreamingMetric:
        """A fresh streaming metric for this task."""
        raise NotImplementedError

    def parity(
        self,
        reference: dict[str, np.ndarray],
        outputs: dict[str, np.ndarray],
        variant: str,
        contract=None,
        min_agreement: float | None = None,
    ) -> Parity:
        """Compare an artifact's outputs with the Keras model's on the same inputs, with the
        tolerance row of ``variant`` (see :func:`variant_kind`); ``contract`` is the model's
        (tasks that decode need it), ``min_agreement`` overrides the row's agreement."""
        raise NotImplementedError

    def prediction_json(self, prediction, contract) -> dict:
        """One decoded prediction as the JSON ``kvision predict`` writes."""
        raise NotImplementedError

    def draw(self, pixels, prediction, contract, min_score: float = 0.0):
        """``pixels`` (uint8 ``[H, W, C]``, the original image) with ``prediction`` drawn on
        it, as uint8 ``[H, W, 3]`` (``kvision predict --out``)."""
        raise NotImplementedError(f"Task `{self.name}` does not draw its predictions yet.")

    def prediction_images(self, prediction, contract) -> dict:
        """Extra images ``kvision predict --out`` writes for one prediction, by name (default
        none; segmentation: its class mask)."""
        return {}

    def write_prediction_image(self, name: str, pixels, path, contract):
        """Write one of :meth:`prediction_images` to ``path`` (PNG)."""
        raise NotImplementedError(f"Task `{self.name}` has no prediction image `{name}`.")

    # -- the task pipeline (kvision.spine) -----------------------------------------------------
    def load_splits(self, data_cfg, seed: int = 0):
        """The run's splits from ``cfg.data``: an object with ``train``, ``val`` (or None),
        ``test``, ``labels``, ``num_classes``, ``problems`` (bad input, listed),
        ``write_problems(path)``, ``notes``, ``test_name`` and ``summary()`` (the report's
        ``data`` section)."""
        return self._stages().load_splits(data_cfg, seed)

    def build_model(self, model_cfg, splits):
        """The configured model with its contract (task, labels, post-processing) attached."""
        return self._stages().build_model(model_cfg, splits)

    def datasets(self, cfg, splits, contract, run_dir=None, augment: bool = True):
        """``(train_ds, val_ds, augmentation report entry)``: batches the compiled loss takes;
        the augmentation preview goes to ``run_dir`` when given."""
        return self._stages().datasets(cfg, splits, contract, run_dir, augment)

    def eval_batches(self, split, contract, batch_size: int = 32):
        """``(model inputs, targets for the metric)`` batches over ``split``, in order."""
        return self._stages().eval_batches(split, contract, batch_size)

    def sample_inputs(self, split, contract, n: int) -> np.ndarray:
        """The first ``n`` model inputs of ``split`` (parity and calibration samples), from
        :meth:`eval_batches`."""
        out, have = [], 0
        for x, _ in self.eval_batches(split, contract, 64):
            out.append(np.asarray(x))
            have += len(x)
            if have >= n:
                break
        return np.concatenate(out)[:n]

    def write_gallery(self, run, split, contract, path, n: int = 8):
        """A PNG of predictions on the first ``n`` images of ``split`` (``run(x)`` gives the
        named raw outputs)."""
        return self._stages().write_gallery(run, split, contract, path, n)

    def side_metrics(self, run, splits, contract) -> dict:
        """Metrics beside the streamed one that need more than the test split (e.g. a decision
        threshold chosen on the validation split), merged into the evaluation's ``metrics``;
        ``{}`` when the task has none (the default) or its stages module defines none."""
        hook = getattr(self._stages(), "side_metrics", None)
        return hook(run, splits, contract) if hook else {}

    def report_lines(self, section: dict) -> list[str]:
        """Markdown lines of the report's evaluation section (``section["metrics"]``)."""
        return self._stages().report_lines(section)

    def fine_tune_loss(self, train_cfg):
        """The ``train.loss`` that QAT fine-tunes the trained model with (default: the one it was
        trained with, so a segmentation model trained with ``focal`` is fine-tuned with it)."""
        return getattr(train_cfg, "loss", "auto")

    def fine_tune_targets(self, dataset, train_cfg, model, teacher):
        """QAT's training batches: :meth:`training_targets` of ``train_cfg`` by default; a task
        whose :meth:`fine_tune_loss` learns from the float model ``teacher`` maps them here."""
        return self.training_targets(dataset, train_cfg, model)

    def remedy(self, artifact_name: str) -> str:
        """What to try when a compressed artifact misses the metric floor."""
        return "fine-tune with QAT instead of PTQ, or keep the layers that lose most in float"

    def _stages(self):
        """The module implementing this task's pipeline hooks (:attr:`stages`)."""
        if not self.stages:
            raise NotImplementedError(f"Task `{self.name}` does not run on kvision.spine yet.")
        import importlib

        return importlib.import_module(self.stages)

    # -- shared helpers ------------------------------------------------------------------------
    def tolerance(self, variant: str) -> Tolerance:
        """The tolerance row for ``variant``."""
        return self.tolerances[variant_kind(variant)]

    def better(self, a: float, b: float) -> bool:
        """True when metric value ``a`` is better than ``b`` for this task."""
        return a > b if self.higher_is_better else a < b

    def drop(self, reference: float, value: float) -> float:
        """How much worse ``value`` is than ``reference`` (positive = worse), in metric units."""
        return reference - value if self.higher_is_better else value - reference

    def check_outputs(self, outputs: dict[str, np.ndarray], where: str = "outputs") -> None:
        """Raise ``InputValueError`` unless ``outputs`` has every one of :attr:`output_names`."""
        missing = [n for n in self.output_names if n not in outputs]
        if missing:
            raise InputValueError(
                f"{where} should have the {self.name} outputs {list(self.output_names)}. "
                f"Missing: {missing}; received: {sorted(outputs)}."
            )


def head_options(model_cfg, allowed, task_name: str) -> dict:
    """A copy of ``model.head`` (``{}`` when unset) whose keys are all in ``allowed``.

    Raises:
        InputValueError: an unknown option, named with the task's allowed ones.
    """
    head = dict(model_cfg.head or {})
    unknown = sorted(set(head) - set(allowed))
    if unknown:
        raise InputValueError(
            f"Unknown `model.head` option(s) {unknown} for {task_name}. Allowed: {sorted(allowed)}"
        )
    return head


def check_auto_loss(train_cfg, task_name: str) -> None:
    """Raise ``InputValueError`` unless ``train.loss`` is ``auto`` (for tasks with one loss)."""
    loss = getattr(train_cfg, "loss", "auto")
    if loss != "auto":
        raise InputValueError(
            f"`train.loss` should be `auto` for task {task_name} (its loss is fixed). "
            f"Received: loss={loss!r}"
        )


_REGISTRY: dict[str, type[Task]] = {}


def register_task(name: str):
    """Class decorator that registers a :class:`Task` subclass under ``name``.

    Raises ``ValueError`` if the name is already taken.
    """

    def decorator(cls):
        if name in _REGISTRY:
            owner = _REGISTRY[name].__module__
            raise ValueError(f"Task `{name}` is already registered by {owner}.")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def _import_builtin_tasks() -> None:
    # Importing a task's module runs its @register_task decorator.
    import kvision.tasks.classification  # noqa: F401
    import kvision.tasks.detection.task  # noqa: F401
    import kvision.tasks.embedding.task  # noqa: F401
    import kvision.tasks.ocr.task  # noqa: F401
    import kvision.tasks.segmentation.task  # noqa: F401


def list_tasks() -> list[str]:
    """Names of all registered tasks, sorted."""
    _import_builtin_tasks()
    return sorted(_REGISTRY)


def get_task(name: str) -> Task:
    """A :class:`Task` instance for ``name``; ``InputValueError`` with a suggestion otherwise.

    Example:
        >>> get_task("classification").primary_metric
        'accuracy'
    """
    _import_builtin_tasks()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        raise InputValueError(
            f"Unknown task `{name}`.{hint} Available: {', '.join(sorted(_REGISTRY))}."
        )
    return _REGISTRY[name]()
