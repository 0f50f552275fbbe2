"""Typed settings of the compression stage: a dataclass per technique plus :class:`CompressConfig`.

Every dataclass validates itself in ``__post_init__`` and raises a ``ValueError`` that names the
field, the received value and what is allowed, so a bad YAML value fails before any training::

    cfg = CompressConfig(techniques=["ptq", "qat", "pqat"], prune=PruneConfig(target_sparsity=0.8))

Fine-tuning lengths are in epochs of the training dataset handed to ``compress``
(``steps_per_epoch`` caps them for quick runs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from kvision.errors import InputValueError

TECHNIQUES = ("ptq", "qat", "prune", "pqat", "cluster", "cqat", "distill")
PTQ_VARIANTS = ("float32", "float16", "dynamic", "int8", "int8_float_io", "int16x8")
SCHEDULES = ("polynomial", "constant")
ALLOCATIONS = ("uniform", "lamp")
CENTROID_INITS = ("kmeans_plus_plus", "linear", "density_based", "random")
QAT_OUTPUTS = ("int8", "int8_float_io")


def _check(cond: bool, name: str, value, allowed: str) -> None:
    if not cond:
        raise InputValueError(f"`{name}` should be {allowed}. Received: {name}={value!r}")


def _check_choices(values, name: str, allowed: tuple) -> None:
    values = list(values)
    bad = [v for v in values if v not in allowed]
    _check(
        not bad and len(set(values)) == len(values), name, values, f"distinct values from {allowed}"
    )


class _Section:
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None):
        """Build from a plain dict; unknown keys raise ``ValueError`` naming them."""
        data = dict(data or {})
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise InputValueError(f"Unknown {cls.__name__} field(s) {unknown}. Allowed: {names}.")
        return cls(**data)


@dataclass
class PruneConfig(_Section):
    """Magnitude pruning.

    Args:
        target_sparsity: final fraction of zero weights in each pruned layer (default 0.8).
        initial_sparsity: sparsity at ``begin`` for the polynomial schedule (default 0.3).
        schedule: ``"polynomial"`` (decay from initial to target) or ``"constant"`` (default
            ``"polynomial"``).
        begin: first pruning step; a float in [0, 1) is a fraction of the fine-tuning steps
            (default 0.0).
        end: last pruning step; a float in (0, 1] is a fraction of the fine-tuning steps
            (default 0.6: the rest of the run recovers accuracy at the target sparsity).
        frequency: steps between pruning updates; ``None`` (default) derives it from the real
            number of steps so that short runs still reach the target (tfmot's default of 100
            silently gives 0 % sparsity on runs shorter than that).
        allocation: how ``target_sparsity`` is spread over the layers: ``"uniform"`` (every
            pruned layer at the target) or ``"lamp"`` (layer-adaptive magnitude pruning, Lee et
            al., ICLR 2021: one global threshold on scale-invariant LAMP scores, so large,
            redundant layers are pruned harder than small, sensitive ones; the pruned layers
            together reach the target) (default ``"lamp"``).
        m_by_n: structured sparsity, e.g. ``[2, 4]`` for 2:4 (default ``None``: unstructured).
        xnnpack_policy: apply tfmot's ``PruneForLatencyOnXNNPack`` policy (default False).
        epochs: fine-tuning epochs (default 3: with LAMP and self-distillation, 80 % sparsity
            then QAT cost the default model 0.0 point on Fashion-MNIST with 4 epochs and 0.07
            with 6; 2 epochs of uniform pruning cost 1 to 2 points).
        learning_rate: fine-tuning peak learning rate (default 1e-3).
        skip_layers: layer names never pruned (default: none).

    Example:
        >>> PruneConfig(target_sparsity=0.75, m_by_n=None).schedule
        'polynomial'
    """

    target_sparsity: float = 0.8
    initial_sparsity: float = 0.3
    schedule: str = "polynomial"
    begin: float = 0.0
    end: float = 0.6
    frequency: int | None = None
    allocation: str = "lamp"
    m_by_n: list | None = None
    xnnpack_policy: bool = False
    epochs: int = 3
    learning_rate: float = 1e-3
    skip_layers: list = field(default_factory=list)

    def __post_init__(self):
        _check(
            0.0 < self.target_sparsity < 1.0, "target_sparsity", self.target_sparsity, "in (0, 1)"
        )
        _check(
            0.0 <= self.initial_sparsity <= self.target_sparsity,
            "initial_sparsity",
            self.initial_sparsity,
            f"in [0, target_sparsity={self.target_sparsity}]",
        )
        _check(self.schedule in SCHEDULES, "schedule", self.schedule, f"one of {SCHEDULES}")
        _check(
            self.allocation in ALLOCATIONS, "allocation", self.allocation, f"one of {ALLOCATIONS}"
        )
        _check(self.begin >= 0, "begin", self.begin, ">= 0 (a step, or a fraction in [0, 1))")
        _check(self.end > 0, "end", self.end, "> 0 (a step, or a fraction in (0, 1])")
        _check(
            self.frequency is None or (isinstance(self.frequency, int) and self.frequency >= 1),
            "frequency",
            self.frequency,
            "None or an integer >= 1",
        )
        if self.m_by_n is not None:
            m_n = list(self.m_by_n)
            _check(
                len(m_n) == 2 and all(isinstance(v, int) for v in m_n) and 0 < m_n[0] < m_n[1],
                "m_by_n",
                self.m_by_n,
                "None or [M, N] with 0 < M < N, e.g. [2, 4]",
            )
            self.m_by_n = m_n
        _check(self.epochs >= 1, "epochs", self.epochs, ">= 1")
        _check(self.learning_rate > 0, "learning_rate", self.learning_rate, "> 0")

    @property
    def effective_sparsity(self) -> float:
        """The sparsity the run should reach: ``1 - M/N`` for M:N structure, else the target."""
        if self.m_by_n:
            return 1.0 - self.m_by_n[0] / self.m_by_n[1]
        return self.target_sparsity


@dataclass
class QATConfig(_Section):
    """Quantization-aware training.

    Args:
        epochs: fine-tuning epochs (default 1; also the QAT phase of PQAT and CQAT).
        learning_rate: fine-tuning peak learning rate (default 5e-4).
        outputs: TFLite variants to write, from ``("int8", "int8_float_io")`` (default both:
            int8 input/output, and int8 inside with float input/output).
        skip_layers: layer names left in float even when tfmot supports them (default: none).
        calibration_samples: representative images for the int8 conversion (default 300).

    Example:
        >>> QATConfig(outputs=["int8"]).epochs
        1
    """

    epochs: int = 1
    learning_rate: float = 5e-4
    outputs: list = field(default_factory=lambda: list(QAT_OUTPUTS))
    skip_layers: list = field(default_factory=list)
    calibration_samples: int = 300

    def __post_init__(self):
        _check(self.epochs >= 1, "epochs", self.epochs, ">= 1")
        _check(self.learning_rate > 0, "learning_rate", self.learning_rate, "> 0")
        _check_choices(self.outputs, "outputs", QAT_OUTPUTS)
        _check(
            self.calibration_samples >= 1, "calibration_samples", self.calibration_samples, ">= 1"
        )


@dataclass
class ClusterConfig(_Section):
    """Weight clustering (k shared values per layer).

    Args:
        clusters: clusters per layer (default 16).
        init: centroid initialisation, one of ``kmeans_plus_plus``, ``linear``,
            ``density_based``, ``random`` (default ``kmeans_plus_plus``).
        epochs: fine-tuning epochs (default 1).
        learning_rate: fine-tuning peak learning rate (default 2e-4).
        skip_layers: layer names never clustered (default: none).

    Example:
        >>> ClusterConfig(clusters=8).init
        'kmeans_plus_plus'
    """

    clusters: int = 16
    init: str = "kmeans_plus_plus"
    epochs: int = 1
    learning_rate: float = 2e-4
    skip_layers: list = field(default_factory=list)

    def __post_init__(self):
        _check(
            isinstance(self.clusters, int) and 2 <= self.clusters <= 256,
            "clusters",
            self.clusters,
            "an integer in [2, 256]",
        )
        _check(self.init in CENTROID_INITS, "init", self.init, f"one of {CENTROID_INITS}")
        _check(self.epochs >= 1, "epochs", self.epochs, ">= 1")
        _check(self.learning_rate > 0, "learning_rate", self.learning_rate, "> 0")


@dataclass
class PTQConfig(_Section):
    """Post-training quantization.

    Args:
        variants: TFLite variants (default ``float16``, ``dynamic``, ``int8``, ``int16x8``).
        calibration_samples: representative images drawn from the training pipeline
            (default 300).
        deny_layers: Keras layer names kept in float inside an otherwise int8 model (default
            none). With a deny-list, the ``int8`` variants get float input/output.

    Example:
        >>> PTQConfig(variants=["int8"], deny_layers=["probabilities"]).calibration_samples
        300
    """

    variants: list = field(default_factory=lambda: ["float16", "dynamic", "int8", "int16x8"])
    calibration_samples: int = 300
    deny_layers: list = field(default_factory=list)

    def __post_init__(self):
        _check_choices(self.variants, "variants", PTQ_VARIANTS)
        _check(
            self.calibration_samples >= 1, "calibration_samples", self.calibration_samples, ">= 1"
        )


@dataclass
class DistillConfig(_Section):
    """Knowledge distillation teacher -> student.

    Args:
        student: registered model name of the student (default ``"compact_mobilenet"``).
        student_options: builder options (default ``{"width": 0.6}``: 93 k parameters, 0.44
            of the default 214 k-parameter teacher).
        init: ``teacher`` (default): when the student is the teacher's architecture at a
            smaller width, it starts from the teacher's most important channels
            (:func:`kvision.compress.student.init_from_teacher`) and distillation recovers the
            rest in a few epochs; otherwise, or with ``random``, it starts from scratch.
        temperature: softmax temperature of the soft targets (default 4.0).
        alpha: weight of the hard-label cross-entropy; ``1 - alpha`` weighs the soft KL term
            (scaled by T^2) (default 0.1).
        epochs: student training epochs (default 4: 3 left the student 0.3 to 1.0 point under
            the teacher over 11 runs).
        learning_rate: peak learning rate (default 2e-3).
        scratch_baseline: also train the same student from scratch for the same epochs, for the
            comparison row (default False: it doubles the technique's time; the measured
            comparison is in the README).

    Example:
        >>> DistillConfig(temperature=2.0).alpha
        0.1
    """

    student: str = "compact_mobilenet"
    student_options: dict = field(default_factory=lambda: {"width": 0.6})
    init: str = "teacher"
    temperature: float = 4.0
    alpha: float = 0.1
    epochs: int = 4
    learning_rate: float = 2e-3
    scratch_baseline: bool = False

    def __post_init__(self):
        _check(self.init in ("teacher", "random"), "init", self.init, "teacher or random")
        _check(self.temperature > 0, "temperature", self.temperature, "> 0")
        _check(0.0 <= self.alpha <= 1.0, "alpha", self.alpha, "in [0, 1]")
        _check(self.epochs >= 1, "epochs", self.epochs, ">= 1")
        _check(self.learning_rate > 0, "learning_rate", self.learning_rate, "> 0")


@dataclass
class CompressConfig(_Section):
    """What ``kvision.compress.compress`` runs.

    Args:
        enabled: ``kvision pipeline`` runs the compress stage (default True; ``kvision compress``
            always runs).
        techniques: any of ``ptq``, ``qat``, ``prune``, ``pqat`` (prune, then prune-preserving
            QAT), ``cluster``, ``cqat`` (cluster, then cluster-preserving QAT), ``distill``
            (default ``["ptq", "qat", "pqat", "cluster", "distill"]``: the pipeline's variant set
            float32, float16, dynamic-range, PTQ int8, int16x8, QAT int8, PQAT int8,
            clustered int8 and distilled-student int8).
        accuracy_floor: an artifact whose test accuracy is more than this many points
            (percent) below the float model's is "exported but failed validation" (default 1.0).
        verify_samples: validation images each artifact is compared with Keras on (default 256).
        min_top1_agreement: required top-1 agreement of a quantized classifier with the Keras model
            it was converted from (default 0.9; other tasks use their own parity tables).
        steps_per_epoch: cap fine-tuning steps per epoch (quick runs); ``None`` = full epochs.
        self_distill: fine-tuning (prune, QAT, clustering) also learns the float model's
            softened predictions, with ``distill.temperature`` and ``distill.alpha`` (default
            True; False trains on the labels only).
        model_name: file prefix of the artifacts (default ``"classifier"``).
        seed: seed for fine-tuning and calibration sampling (default 0).
        prune, qat, cluster, ptq, distill: per-technique settings.

    Example:
        >>> CompressConfig(techniques=["ptq"], accuracy_floor=0.5).ptq.variants[0]
        'float16'
    """

    enabled: bool = True
    techniques: list = field(default_factory=lambda: ["ptq", "qat", "pqat", "cluster", "distill"])
    accuracy_floor: float = 1.0
    verify_samples: int = 256
    min_top1_agreement: float = 0.9
    steps_per_epoch: int | None = None
    self_distill: bool = True
    model_name: str = "classifier"
    seed: int = 0
    prune: PruneConfig = field(default_factory=PruneConfig)
    qat: QATConfig = field(default_factory=QATConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    ptq: PTQConfig = field(default_factory=PTQConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def __post_init__(self):
        _check_choices(self.techniques, "techniques", TECHNIQUES)
        _check(self.accuracy_floor >= 0, "accuracy_floor", self.accuracy_floor, ">= 0 (points)")
        _check(self.verify_samples >= 1, "verify_samples", self.verify_samples, ">= 1")
        _check(
            0.0 <= self.min_top1_agreement <= 1.0,
            "min_top1_agreement",
            self.min_top1_agreement,
            "in [0, 1]",
        )
        _check(
            self.steps_per_epoch is None or self.steps_per_epoch >= 1,
            "steps_per_epoch",
            self.steps_per_epoch,
            "None or >= 1",
        )
        sections = {
            "prune": PruneConfig,
            "qat": QATConfig,
            "cluster": ClusterConfig,
            "ptq": PTQConfig,
            "distill": DistillConfig,
        }
        for name, cls in sections.items():
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, cls.from_dict(value))
            elif not isinstance(value, cls):
                raise InputValueError(
                    f"`{name}` should be a {cls.__name__} or a dict. "
                    f"Received: {name}={type(value).__name__}"
                )
