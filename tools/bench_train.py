"""How far is training from this CPU's limit? Train-step images/s and FLOP/s against a matmul peak.

For the default model (``compact_mobilenet`` on 28x28x1, 10 classes, batch 128) compiled as
``kvision.train.fit`` compiles it (``compile_model`` with the ``TrainConfig`` defaults: AdamW,
warm-up + cosine, label smoothing 0.1, so one-hot labels), one run measures, in one process with
one thread setting:

* images/s of the train step: ``model.make_train_function()``, the function Keras ``fit`` calls
  each step, fed from cached in-memory batches (warm-up excluded); of the forward pass alone
  (``training=False``); of the train step fed by kvision's ``tf.data`` pipeline (``build_dataset``
  with the default flip augmentation), and of that pipeline alone;
* FLOPs per image, measured on the traced graphs (the train function's concrete function, and the
  forward pass): TF's registered op statistics, i.e. what ``tf.compat.v1.profiler`` sums as
  ``float_ops``, plus the depthwise backprop ops TF has no statistic for (from their shapes); ops
  Grappler prunes (the stem's input gradient) left out. Checked against an analytic count,
  2 x MACs per layer (conv 2*Ho*Wo*k*k*Cin*Cout/groups, depthwise 2*Ho*Wo*k*k*C, dense 2*in*out;
  training adds the input and the weight gradient, as many MACs each). Batch norm and ReLU6 have
  no TF statistic and are in neither count;
* the peak: a float32 ``tf.linalg.matmul`` of two n x n matrices (practical peak; best of the runs
  before and after the rest) and the theoretical peak from lscpu (cores x clock x FLOP/cycle of
  the widest FMA; the assumptions are printed);
* what limits it: a TF profiler trace of a few train steps, each op's time attributed to its layer
  (forward and gradient ops) and summed by layer type, by feature-map size and by op type, with
  the FLOP/s each reaches; the idle time between ops; images/s at batch 128, 256 and 512 and the
  per-step overhead fitted from them.

Experiments (off by default): ``--compare-jit`` (the same step with ``jit_compile=True``: images/s
and the logged loss over the same steps from the same weights) and ``--compare-onednn``
(``TF_ENABLE_ONEDNN_OPTS=1`` vs ``0`` in interleaved subprocesses). Usage::

    .venv/bin/python tools/bench_train.py [--batch 128] [--steps 30] [--threads N] [--json out.json]
    .venv/bin/python tools/bench_train.py --compare-jit --compare-onednn

Each images/s is the batch over the median step time of ``--steps`` steps; the best of
``--repeats`` interleaved repeats is reported (the least disturbed one on a shared machine).

JSON schema (``kvision.bench_train/1``): ``config``, ``machine``, ``peak`` (``matmul``,
``theoretical``), ``flops`` (per image: ``measured`` forward/train with ``by_type``,
``analytic``, agreements), ``throughput`` (train, forward, pipeline, pipeline_only: images/s,
ms/step, GFLOP/s), ``profile`` (``by_layer_type``, ``by_size``, ``by_op_type`` rows of ``{group,
ms_per_step, share, mflop_per_image, gflop_per_s}``, ``busy_ms``, ``idle_ms``), ``batch_sweep``,
and when asked ``jit`` and ``onednn``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SCHEMA = "kvision.bench_train/1"
MODEL = ("compact_mobilenet", (28, 28, 1), 10)
TRAIN_IMAGES = 54_000  # Fashion-MNIST train split after data.val_split=0.1: sizes the LR schedule
SWEEP_BATCHES = (128, 256, 512)
MAC_OPS = ("Conv2D", "DepthwiseConv2dNative", "MatMul")  # FLOPs = 2 x multiply-accumulates
DW_BACKPROP = ("DepthwiseConv2dNativeBackpropInput", "DepthwiseConv2dNativeBackpropFilter")
ONEDNN_PREFIXES = ("_MklNative", "_MklFused", "_Mkl")  # oneDNN's rewrites of TF op types


# ------------------------------------------------------------------------------------- setup
def set_threads(threads: int) -> None:
    """Use ``threads`` intra- and inter-op threads (call before TF runs its first op)."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def train_config(batch: int):
    """``TrainConfig()`` with ``epochs: auto`` resolved as the pipeline resolves it for
    Fashion-MNIST's 54,000 training images (it sizes the learning-rate schedule)."""
    import dataclasses

    from kvision.auto import AUTO, choose_epochs
    from kvision.config import TrainConfig

    cfg = TrainConfig()
    if cfg.epochs == AUTO:
        cfg = dataclasses.replace(cfg, epochs=choose_epochs(TRAIN_IMAGES, batch).value)
    return cfg


def build_trainer(batch: int, seed: int = 0, jit: bool = False, dropout: float | None = None):
    """The default model compiled as ``kvision.train.fit`` compiles it (TrainConfig defaults).

    ``jit=True`` sets ``model.jit_compile``, the attribute ``compile(jit_compile=True)`` sets;
    ``dropout`` overrides the model's dropout rate (``None``: the default).
    """
    from kvision._keras import keras
    from kvision.models import build_model
    from kvision.train.fit import compile_model

    keras.utils.set_random_seed(seed)
    model = build_model(*MODEL, **({} if dropout is None else {"dropout": dropout}))
    compile_model(model, train_config(batch), max(1, TRAIN_IMAGES // batch))
    model.jit_compile = jit
    return model


def load_split(limit: int | None = None):
    """Fashion-MNIST's train split as kvision loads it, or random images (with a notice)."""
    from kvision.config import DataConfig
    from kvision.data import DatasetError, Split, load_dataset

    try:
        split = load_dataset(DataConfig(), seed=0).train
        return (split.subset(np.arange(limit)) if limit else split), "fashion-mnist"
    except DatasetError as exc:
        print(f"notice: {exc}; benchmarking on random images instead.", file=sys.stderr)
    rng = np.random.default_rng(0)
    n = limit or 8192
    images = rng.integers(0, 256, size=(n, *MODEL[1]), dtype=np.uint8)
    return Split(rng.integers(0, MODEL[2], n), images=images), "random"


def memory_dataset(split, batch: int, batches: int = 8):
    """``batches`` distinct batches as fit sees them (float [0, 1], one-hot), cached, repeated."""
    import tensorflow as tf

    n = batch * batches
    x = split.images[:n].astype(np.float32) / 255.0
    y = tf.one_hot(split.labels[:n], MODEL[2])
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch, drop_remainder=True)
    return ds.cache().repeat()


def pipeline_dataset(split, batch: int):
    """kvision's training pipeline, default augmentation, labels one-hot as fit maps them."""
    import tensorflow as tf

    from kvision.augment import build_augmenter
    from kvision.auto import resolve_transforms
    from kvision.config import AugmentConfig
    from kvision.data import build_dataset
    from kvision.models import InputContract

    contract = InputContract(*MODEL[1], labels=[str(i) for i in range(MODEL[2])])
    aug = build_augmenter(resolve_transforms(AugmentConfig().transforms, "fashion_mnist"), seed=0)
    ds = build_dataset(split, contract, batch, training=True, augmenter=aug)
    return ds.map(lambda x, y: (x, tf.one_hot(tf.cast(y, tf.int32), MODEL[2]))).repeat()


# ------------------------------------------------------------------------------------ timing
def time_calls(fn, steps: int, warmup: int) -> list[float]:
    """Seconds per call of ``fn()`` for ``steps`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def train_run(model, dataset, batch: int, steps: int, warmup: int = 3) -> dict:
    """Images/s of Keras' own train function on ``dataset``; the loss it logs after each step."""
    fn = model.make_train_function()
    it = iter(dataset)
    losses: list[float] = []
    times = time_calls(lambda: losses.append(float(fn(it)["loss"])), steps, warmup)
    return {**_rate(times, batch), "loss": losses}


def forward_run(model, batch: int, steps: int, warmup: int = 3) -> dict:
    """Images/s of the inference forward pass (``training=False``) on one batch."""
    import tensorflow as tf

    fn = tf.function(lambda x: model(x, training=False))
    x = tf.random.uniform((batch, *MODEL[1]))
    return _rate(time_calls(lambda: fn(x).numpy(), steps, warmup), batch)


def pipeline_only(dataset, batch: int, steps: int) -> dict:
    """Images/s of iterating the input pipeline alone."""
    it = iter(dataset)
    return _rate(time_calls(lambda: next(it), steps, 3), batch)


def _rate(times: list[float], batch: int) -> dict:
    med = statistics.median(times)
    return {"images_per_s": batch / med, "ms_per_step": 1000 * med}


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a float32 ``tf.linalg.matmul`` of two n x n matrices (best of ``repeats``)."""
    import tensorflow as tf

    a, b = tf.random.uniform((n, n)), tf.random.uniform((n, n))
    fn = tf.function(lambda: tf.linalg.matmul(a, b)[0, 0])
    return 2.0 * n**3 / min(time_calls(lambda: fn().numpy(), repeats, 2)) / 1e9


def theoretical_peak(threads: int, ghz: float | None = None) -> dict:
    """cores x clock x fp32 FLOP/cycle from lscpu (``ghz`` overrides the clock), with the
    assumptions it rests on."""
    info = _lscpu()
    flags = set(info.get("Flags", "").split())
    vendor, family = info.get("Vendor ID", ""), int(info.get("CPU family", "0") or 0)
    mhz = float(info.get("CPU max MHz") or info.get("CPU MHz") or _cpuinfo_mhz() or 0)
    tpc = int(info.get("Thread(s) per core", "1") or 1)
    cpus = int(info.get("CPU(s)", os.cpu_count() or 1))
    if "avx512f" in flags and vendor == "AuthenticAMD" and family == 25:
        per_cycle, why = 32, "Zen 4: AVX-512 issued on two 256-bit FMA pipes, 2 x 8 x 2"
    elif "avx512f" in flags:
        per_cycle, why = 64, "two 512-bit FMA units, 2 x 16 x 2 (parts with one unit: half)"
    elif {"avx2", "fma"} <= flags:
        per_cycle, why = 32, "two 256-bit FMA units, 2 x 8 x 2"
    else:
        per_cycle, why = 16, "no FMA: one 8-wide add + one 8-wide mul (AVX)"
    cores = min(threads, max(1, cpus // tpc))
    clock = (
        "lscpu's max clock"
        if info.get("CPU max MHz")
        else ("the clock lscpu reports: nominal in a VM, turbo may run higher")
    )
    if ghz:
        mhz, clock = 1000 * ghz, "the clock given with --ghz"
    return {
        "model": info.get("Model name", platform.processor()),
        "cores": cores,
        "ghz": mhz / 1000,
        "flop_per_cycle": per_cycle,
        "gflop_per_s": cores * mhz / 1000 * per_cycle,
        "assumptions": (
            f"{cores} core(s) x {mhz / 1000:.2f} GHz ({clock}) x {per_cycle} fp32 "
            f"FLOP/cycle ({why}); each of the {cpus} vCPUs ({tpc} thread(s) per core) taken as a "
            "full core"
        ),
    }


def _lscpu() -> dict:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in text.splitlines())}


def _cpuinfo_mhz():
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    return next((float(ln.split(":")[1]) for ln in lines if ln.startswith("cpu MHz")), None)


# ------------------------------------------------------------------------------------- FLOPs
def graph_flops(graph) -> tuple[dict[str, float], dict[str, str], dict[str, int]]:
    """FLOPs of a traced graph's live ops: ``{op name: FLOPs}``, ``{op name: type}`` and the op
    types without a FLOP statistic. TF's registered statistics (the profiler's ``float_ops``),
    plus depthwise backprop ops from their shapes (2 x output-gradient size x kh x kw)."""
    from tensorflow.python.framework import ops as tf_ops

    flops, types, uncounted = {}, {}, {}
    for op in _live_ops(graph):
        if op.type in DW_BACKPROP:
            kernel = (op.inputs[1] if op.type.endswith("Input") else op.outputs[0]).shape
            value = 2.0 * float(np.prod(op.inputs[2].shape)) * kernel[0] * kernel[1]
        else:
            try:
                value = tf_ops.get_stats_for_node_def(graph, op.node_def, "flops").value
            except (ValueError, TypeError):
                value = None
        if value is None:
            uncounted[op.type] = uncounted.get(op.type, 0) + 1
        else:
            flops[op.name], types[op.name] = float(value), op.type
    return flops, types, uncounted


def _live_ops(graph) -> list:
    """Ops whose result is used or that have side effects; Grappler prunes the others."""
    ops = graph.get_operations()
    needed = {t.op for t in graph.outputs} | set(graph.control_outputs)
    needed |= {op for op in ops if op._is_stateful}  # noqa: SLF001 (no public accessor)
    stack = list(needed)
    while stack:
        for dep in [t.op for t in stack[-1].inputs] + list(stack.pop().control_inputs):
            if dep not in needed:
                needed.add(dep)
                stack.append(dep)
    return [op for op in ops if op in needed]


def measured_flops(model, dataset, batch: int) -> dict:
    """Per-image FLOPs of the forward pass and of the train function, from their graphs."""
    import tensorflow as tf

    fwd = tf.function(lambda x: model(x, training=False))
    graphs = {
        "forward": fwd.get_concrete_function(tf.TensorSpec((batch, *MODEL[1]))).graph,
        "train": model.make_train_function().get_concrete_function(iter(dataset)).graph,
    }
    out = {}
    for name, graph in graphs.items():
        flops, types, uncounted = graph_flops(graph)
        by_type: dict[str, float] = {}
        for op, v in flops.items():
            by_type[types[op]] = by_type.get(types[op], 0.0) + v / batch
        out[name] = {
            "total": sum(by_type.values()),
            "mac_ops": sum(v for k, v in by_type.items() if k.startswith(MAC_OPS)),
            "by_type": dict(sorted(by_type.items(), key=lambda kv: -kv[1])),
            "uncounted_op_types": uncounted,
            "per_op": {k: v / batch for k, v in flops.items()} if name == "train" else None,
        }
    return out


def strided_1x1_convs(model) -> list[str]:
    """Names of Conv2D layers with a 1-wide kernel and a stride > 1 (oneDNN's heap bug)."""
    from kvision._keras import keras

    L = keras.layers
    return [
        layer.name
        for layer in model.layers
        if isinstance(layer, L.Conv2D)
        and not isinstance(layer, (L.DepthwiseConv2D, L.SeparableConv2D))
        and any(k == 1 and st > 1 for k, st in zip(layer.kernel_size, layer.strides, strict=True))
    ]


def analytic_flops(model) -> tuple[float, float]:
    """(forward, train) FLOPs per image: 2 x MACs of each conv, depthwise and dense layer;
    training adds the weight gradient and, except for the first layer, the input gradient."""
    from kvision._keras import keras

    fwd = train = 0.0
    for layer in model.layers:
        out = layer.output_shape
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            macs = np.prod(out[1:]) * np.prod(layer.kernel_size)
        elif isinstance(layer, keras.layers.Conv2D):
            cin = layer.input_shape[-1]
            macs = np.prod(out[1:]) * np.prod(layer.kernel_size) * cin / layer.groups
        elif isinstance(layer, keras.layers.Dense):
            macs = layer.input_shape[-1] * layer.units
        else:
            continue
        first = layer.input is model.inputs[0]
        fwd += 2.0 * macs
        train += 2.0 * macs * (2 if first else 3)
    return fwd, train


# ----------------------------------------------------------------------------------- profile
def profile_steps(model, dataset, steps: int, per_op_flops: dict, batch: int) -> dict:
    """Trace ``steps`` train steps with the TF profiler; op times summed by layer type, size and
    op type. Ops on the two executor threads can overlap, so each op's time is scaled so that
    all ops sum to the time at least one op was running (``busy_ms``)."""
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    fn = model.make_train_function()
    it = iter(dataset)
    for _ in range(3):
        fn(it)
    with tempfile.TemporaryDirectory(prefix="kvision-bench-train-") as logdir:
        tf.profiler.experimental.start(logdir)
        t0 = time.perf_counter()
        for _ in range(steps):
            fn(it)
        wall = (time.perf_counter() - t0) / steps
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        space.ParseFromString(Path(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)[0])
                              .read_bytes())  # fmt: skip
    plane = next(p for p in space.planes if p.name == "/host:CPU")
    ps: dict[str, float] = {}  # "op_name:OpType" -> picoseconds
    spans = []
    for line in plane.lines:
        if not line.name.startswith("tf_Compute"):
            continue
        for ev in line.events:
            name = plane.event_metadata[ev.metadata_id].name
            if "::" in name or ":" not in name:
                continue  # executor and thread-pool bookkeeping, not an op
            ps[name] = ps.get(name, 0.0) + ev.duration_ps
            start = line.timestamp_ns * 1000 + ev.offset_ps
            spans.append((start, start + ev.duration_ps))
    busy = _union(spans) / steps / 1e9  # ms per step
    scale = busy / (sum(ps.values()) / steps / 1e9)
    groups = _layer_groups(model)
    rows: dict[str, dict] = {"layer": {}, "size": {}, "op": {}}
    for event, t in ps.items():
        op_name, _, op_type = event.rpartition(":")
        layer = next((p for p in op_name.split("/") if p in groups), None)
        kind = op_type
        for prefix in ONEDNN_PREFIXES:
            kind = kind.removeprefix(prefix)
        if layer is not None:
            group, size = groups[layer]
        else:
            group, size = ("optimizer (AdamW)" if "AdamW" in op_name else "loss, metrics"), None
        keys = {"layer": group, "size": size, "op": kind}
        for table, key in keys.items():
            if key is None:
                continue
            row = rows[table].setdefault(key, {"group": key, "ms_per_step": 0.0, "flops": 0.0})
            row["ms_per_step"] += t / steps / 1e9 * scale
            row["flops"] += per_op_flops.get(op_name, 0.0)
    tables = {}
    for table, found in rows.items():
        out = []
        for row in sorted(found.values(), key=lambda r: -r["ms_per_step"]):
            f = row.pop("flops")
            row["share"] = row["ms_per_step"] / busy
            row["mflop_per_image"] = f / 1e6
            row["gflop_per_s"] = f * batch / (row["ms_per_step"] / 1000) / 1e9 if f else None
            out.append(row)
        tables[table] = out
    return {
        "steps": steps,
        "wall_ms": 1000 * wall,
        "busy_ms": busy,
        "idle_ms": 1000 * wall - busy,
        "by_layer_type": tables["layer"],
        "by_size": sorted(tables["size"], key=lambda r: -int(r["group"])),
        "by_op_type": tables["op"],
    }


def _union(spans) -> float:
    total, end = 0.0, -1.0
    for s, e in sorted(spans):
        if s > end:
            total, end = total + e - s, e
        elif e > end:
            total, end = total + e - end, e
    return total


def _layer_groups(model) -> dict[str, tuple[str, int]]:
    """``{layer name: (layer type row, feature-map size)}``."""
    from kvision._keras import keras

    L = keras.layers
    out = {}
    for layer in model.layers[1:]:
        if isinstance(layer, L.DepthwiseConv2D):
            group = "depthwise 3x3"
        elif isinstance(layer, L.Conv2D):
            group = "conv 1x1" if tuple(layer.kernel_size) == (1, 1) else "conv 3x3 (stem)"
        elif isinstance(layer, (L.BatchNormalization, L.ReLU, L.Add)):
            group = {"BatchNormalization": "batch norm", "ReLU": "relu6", "Add": "residual add"}[
                type(layer).__name__
            ]
        else:
            group = "pool + dropout + dense"
        shape = layer.output_shape
        out[layer.name] = (group, int(shape[1]) if len(shape) == 4 else None)
    return out


def batch_sweep(split, batches, steps: int, repeats: int) -> list[dict]:
    """Train-step images/s at each batch size (best of interleaved repeats) and the least-squares
    fit ``ms/step = fixed + per_image x batch`` over them."""
    models = {b: (build_trainer(b), memory_dataset(split, b, 4)) for b in batches}
    rates: dict[int, list[float]] = {b: [] for b in batches}
    for r in range(repeats):
        for b, (model, ds) in models.items():
            n = max(5, steps * 128 // b)
            rates[b].append(train_run(model, ds, b, n, warmup=3 if r == 0 else 1)["images_per_s"])
    rows = []
    for b, v in rates.items():
        ips = max(v)
        rows.append({"batch": b, "images_per_s": ips, "ms_per_step": 1000 * b / ips})
    if len(rows) > 1:
        per, fixed = np.polyfit([r["batch"] for r in rows], [r["ms_per_step"] for r in rows], 1)
        for r in rows:
            r["fit_fixed_ms"], r["fit_ms_per_image"] = float(fixed), float(per)
    return rows


# ------------------------------------------------------------------------------- experiments
def compare_jit(split, batch: int, steps: int) -> dict:
    """Default vs ``jit_compile=True`` (XLA): images/s of the default model, two interleaved
    rounds after a warm-up that includes XLA's compilation; and the per-step loss of both from
    the same weights on the same batches, with dropout 0 so that both compute the same function
    (XLA draws other random numbers for the dropout masks). At most 10 steps: XLA can be slow.
    """
    n = min(steps, 10)
    data = memory_dataset(split, batch)
    pairs = {}
    for dropout in (None, 0.0):
        base = build_trainer(batch, dropout=dropout)
        xla = build_trainer(batch, jit=True, dropout=dropout)
        xla.set_weights(base.get_weights())
        pairs[dropout] = {"default": base, "xla": xla}
    rates: dict[str, list] = {"default": [], "xla": []}
    for _ in range(2):
        for name, model in pairs[None].items():
            rates[name].append(train_run(model, data, batch, n, warmup=2)["images_per_s"])
    loss = {k: _step_losses(train_run(m, data, batch, n, 0)["loss"]) for k, m in pairs[0.0].items()}
    diff = [abs(a - b) / abs(a) for a, b in zip(loss["default"], loss["xla"], strict=True)]
    rate = {k: max(v) for k, v in rates.items()}
    return {
        "images_per_s": rate,
        "ratio_xla_over_default": rate["xla"] / rate["default"],
        "loss_default": loss["default"],
        "loss_xla": loss["xla"],
        "max_rel_loss_diff": max(diff),
    }


def _step_losses(running: list[float]) -> list[float]:
    """Per-step losses from the running mean Keras logs (metrics fresh at step 1)."""
    return [m * k - (running[k - 2] * (k - 1) if k > 1 else 0.0)
            for k, m in enumerate(running, start=1)]  # fmt: skip


def compare_onednn(args, safe: bool = True, rounds: int = 2) -> dict:
    """TF_ENABLE_ONEDNN_OPTS=1 vs 0, each run a fresh subprocess (TF reads it at import).

    ``safe=False`` (the model has a 1x1 strided conv, whose oneDNN gradient corrupts the heap)
    skips the oneDNN run.
    """
    if not safe:
        return {"runs": {}, "skipped": "the model has a 1x1 strided conv; oneDNN not run"}
    runs: dict[str, list] = {"1": [], "0": []}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--batch", str(args.batch),
           "--steps", str(args.steps), "--threads", str(args.threads)]  # fmt: skip
    for _ in range(rounds):
        for flag in runs:
            env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": flag, "TF_CPP_MIN_LOG_LEVEL": "2"}
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode or not lines:
                runs[flag].append({"error": f"exit {proc.returncode}: {proc.stderr[-300:]}"})
            else:
                got = json.loads(lines[-1])
                if got["onednn"] != (flag == "1"):
                    got = {"error": f"asked oneDNN {flag}, TensorFlow ran with {got['onednn']}"}
                runs[flag].append(got)
    out: dict = {"runs": runs}
    ok = {k: [r for r in v if "error" not in r] for k, v in runs.items()}
    if all(ok.values()):
        for what in ("train", "forward"):
            med = {k: max(r[what] for r in v) for k, v in ok.items()}
            out[what] = med
            out[f"{what}_ratio_off_over_on"] = med["0"] / med["1"]
        pairs = zip(ok["1"][0]["loss"], ok["0"][0]["loss"], strict=True)
        out["max_rel_loss_diff"] = max(abs(a - b) / abs(a) for a, b in pairs)
    return out


def worker(args) -> int:
    """One oneDNN subprocess: train and forward images/s and the logged loss, as a JSON line."""
    split, _ = load_split(args.batch * 8)
    model = build_trainer(args.batch)
    tr = train_run(model, memory_dataset(split, args.batch), args.batch, args.steps)
    fw = forward_run(model, args.batch, args.steps)
    result = {"train": tr["images_per_s"], "forward": fw["images_per_s"], "loss": tr["loss"],
              "onednn": _machine()["onednn"]}  # fmt: skip
    print(json.dumps(result))
    return 0


# -------------------------------------------------------------------------------------- main
def run_benchmark(args) -> dict:
    """All default measurements (and the experiments asked for) as the report dict."""
    t_start = time.perf_counter()
    batch, steps = args.batch, args.steps
    split, source = load_split()
    small = split.subset(np.arange(batch * 8))
    model = build_trainer(batch)
    mem, pipe = memory_dataset(small, batch), pipeline_dataset(split, batch)
    machine = _machine()
    matmul = [matmul_peak(args.matmul_size)]
    flops = measured_flops(model, mem, batch)
    fwd_a, train_a = analytic_flops(model)
    runs: dict[str, list] = {"train": [], "forward": [], "pipeline": [], "pipeline_only": []}
    for r in range(args.repeats):  # interleaved, so load from other processes hits all alike
        warm = 3 if r == 0 else 1
        runs["train"].append(train_run(model, mem, batch, steps, warm))
        runs["forward"].append(forward_run(model, batch, steps, warm))
        runs["pipeline"].append(train_run(model, pipe, batch, steps, warm))
        runs["pipeline_only"].append(pipeline_only(pipe, batch, steps))
    per_image = {"train": flops["train"]["total"], "forward": flops["forward"]["total"]}
    per_image.update(pipeline=per_image["train"], pipeline_only=0.0)
    throughput = {}
    for name, rs in runs.items():
        ips = max(r["images_per_s"] for r in rs)  # the least disturbed repeat
        throughput[name] = {
            "images_per_s": ips,
            "images_per_s_per_repeat": [r["images_per_s"] for r in rs],
            "ms_per_step": 1000 * batch / ips,
            "gflop_per_s": per_image[name] * ips / 1e9,
        }
    profile = profile_steps(model, mem, max(5, steps // 3), flops["train"]["per_op"], batch)
    sweep = batch_sweep(split, args.sweep, steps, args.repeats) if args.sweep else []
    report = {
        "schema": SCHEMA,
        "config": {
            "model": [MODEL[0], list(MODEL[1]), MODEL[2]],
            "batch": batch,
            "steps": steps,
            "repeats": args.repeats,
            "threads": args.threads,
            "data": source,
            "strided_1x1_convs": strided_1x1_convs(model),
        },
        "machine": machine,
        "flops": {
            "measured": {k: {**v, "per_op": None} for k, v in flops.items()},
            "analytic": {"forward": fwd_a, "train": train_a},
            "forward_agreement": flops["forward"]["mac_ops"] / fwd_a - 1,
            "train_agreement": flops["train"]["mac_ops"] / train_a - 1,
            "train_over_forward": flops["train"]["total"] / flops["forward"]["total"],
        },
        "throughput": throughput,
        "profile": profile,
        "batch_sweep": sweep,
    }
    if args.compare_jit:
        report["jit"] = compare_jit(small, batch, steps)
    if args.compare_onednn:
        report["onednn"] = compare_onednn(args, safe=not strided_1x1_convs(model))
    matmul.append(matmul_peak(args.matmul_size))
    report["peak"] = {
        "matmul": {"n": args.matmul_size, "gflop_per_s": max(matmul), "runs": matmul},
        "theoretical": theoretical_peak(args.threads, args.ghz),
    }
    report["machine"]["load_avg_end"] = _load()
    report["wall_s"] = time.perf_counter() - t_start
    return report


def format_report(rep: dict) -> str:
    """The report as Markdown: the headline table, FLOPs, where the time goes, experiments."""
    c, m, pk, tp, fl = rep["config"], rep["machine"], rep["peak"], rep["throughput"], rep["flops"]
    mm, th = pk["matmul"]["gflop_per_s"], pk["theoretical"]["gflop_per_s"]
    rows = []
    for key, label in (("train", "train step, in-memory batches"),
                       ("pipeline", "train step fed by kvision tf.data"),
                       ("forward", "forward pass only (inference)"),
                       ("pipeline_only", "kvision tf.data alone")):  # fmt: skip
        t, g = tp[key], tp[key]["gflop_per_s"]
        per = fl["measured"]["forward" if key == "forward" else "train"]["total"]
        flop = [f"{per / 1e6:.2f}", f"{g:.1f}", f"{g / mm:.0%}", f"{g / th:.0%}"]
        flop = flop if g else ["-"] * 4
        rows.append([label, f"{t['images_per_s']:,.0f}", f"{t['ms_per_step']:.1f}", *flop])
    runs = " and ".join(f"{v:.1f}" for v in pk["matmul"]["runs"])
    rows.append([f"matmul {pk['matmul']['n']}^2 fp32 = practical peak (best of {runs})",
                 "", "", "", f"{mm:.1f}", "100%", f"{mm / th:.0%}"])  # fmt: skip
    rows.append(["theoretical peak", "", "", "", f"{th:.1f}", "", "100%"])
    load = f"load average {m['load_avg'][0]:.1f} at start, {m['load_avg_end'][0]:.1f} at end"
    lines = [
        f"Train step of {c['model'][0]} {tuple(c['model'][1])} -> {c['model'][2]} classes, batch "
        f"{c['batch']}, TrainConfig defaults (AdamW, label smoothing 0.1); {c['threads']} threads,"
        f" oneDNN {'on' if m['onednn'] else 'off'}, TF {m['tensorflow']}, {m['cpus']} CPUs "
        f"({load}); {c['data']} images. images/s = batch / median step time of {c['steps']} "
        f"steps, best of {c['repeats']} interleaved repeats.",
        "",
        *_table(
            [
                "what",
                "images/s",
                "ms/step",
                "MFLOP/image",
                "GFLOP/s",
                "of matmul peak",
                "of theoretical",
            ],
            rows,
        ),  # fmt: skip
        "",
        f"Theoretical peak: {pk['theoretical']['assumptions']}; CPU {pk['theoretical']['model']}."
        + _beyond_peak_note(pk),
        "",
        *_flops_lines(fl),
        "",
    ]
    p = rep["profile"]
    lines += [
        f"Where the time goes: TF profiler over {p['steps']} steps ({p['wall_ms']:.1f} ms/step "
        f"traced): ops busy {p['busy_ms']:.1f} ms, idle between ops {p['idle_ms']:.1f} ms "
        "(dispatch, executor, input). Gradient ops count with their layer.",
    ]
    head = ["ms/step", "share of busy", "MFLOP/image", "GFLOP/s", "of matmul peak"]
    for title, key, limit in (("layer type", "by_layer_type", None),
                              ("feature map", "by_size", None),
                              ("op type (oneDNN prefix dropped)", "by_op_type", 12)):  # fmt: skip
        rows = []
        for r in p[key][:limit]:
            g = r["gflop_per_s"]
            flop = [f"{r['mflop_per_image']:.2f}", f"{g:.1f}", f"{g / mm:.0%}"] if g else ["-"] * 3
            name = f"{r['group']}x{r['group']}" if key == "by_size" else r["group"]
            rows.append([name, f"{r['ms_per_step']:.1f}", f"{r['share']:.0%}", *flop])
        lines += ["", *_table([title, *head], rows)]
    sweep = rep["batch_sweep"]
    if sweep:
        base = next((r["images_per_s"] for r in sweep if r["batch"] == 128), None)
        rows = [[str(r["batch"]), f"{r['images_per_s']:,.0f}", f"{r['ms_per_step']:.1f}",
                 f"{r['images_per_s'] / base:.2f}x" if base else "-"] for r in sweep]  # fmt: skip
        lines += ["", *_table(["batch", "images/s", "ms/step", "vs batch 128"], rows)]
        if "fit_fixed_ms" in sweep[0]:
            fixed, per = sweep[0]["fit_fixed_ms"], sweep[0]["fit_ms_per_image"]
            note = "; < 0: noise, or a slower per-image rate at large batches" if fixed < 0 else ""
            lines += ["", f"step time ~ {fixed:.1f} ms fixed + {per:.3f} ms/image (least "
                          f"squares over these batches{note})"]  # fmt: skip
    return "\n".join(lines + _experiment_lines(rep) + ["", f"wall time {rep['wall_s']:.0f} s"])


def _beyond_peak_note(pk: dict) -> str:
    t = pk["theoretical"]
    if pk["matmul"]["gflop_per_s"] <= t["gflop_per_s"]:
        return ""
    implied = pk["matmul"]["gflop_per_s"] / (t["cores"] * t["flop_per_cycle"])
    return (
        f" The matmul beat it: the cores ran at {implied:.2f} GHz or more (boost above the "
        "reported clock, or more FLOP/cycle than assumed); pass --ghz with the boost clock."
    )


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table, the first column left-aligned and the others right-aligned."""
    rule = "|---|" + "--:|" * (len(head) - 1)
    return ["| " + " | ".join(head) + " |", rule, *("| " + " | ".join(r) + " |" for r in rows)]


def _flops_lines(fl: dict) -> list[str]:
    fwd, tr, an = fl["measured"]["forward"], fl["measured"]["train"], fl["analytic"]
    elementwise = {"FusedBatchNormV3", "FusedBatchNormGradV3", "Relu6", "Relu6Grad"}
    skipped = sorted(elementwise & ({*tr["uncounted_op_types"]} | {*fwd["uncounted_op_types"]}))
    worst = max(abs(fl["forward_agreement"]), abs(fl["train_agreement"]))
    return [
        f"FLOPs per image, measured on the traced graphs (TF op statistics = profiler float_ops, "
        f"+ depthwise backprop from shapes): forward {fwd['total'] / 1e6:.3f} M "
        f"(conv/depthwise/matmul {fwd['mac_ops'] / 1e6:.3f} M); train function "
        f"{tr['total'] / 1e6:.3f} M (conv/depthwise/matmul {tr['mac_ops'] / 1e6:.3f} M; the "
        f"rest: loss, AdamW, adds) = {fl['train_over_forward']:.2f}x the forward pass.",
        f"Analytic, 2 x MACs per conv/depthwise/dense layer: forward {an['forward'] / 1e6:.3f} M, "
        f"train {an['train'] / 1e6:.3f} M (3x; 2x for the stem, which needs no input gradient). "
        f"Measured vs analytic on those ops: forward {fl['forward_agreement']:+.2%}, train "
        f"{fl['train_agreement']:+.2%} (margin 1%: {'agree' if worst <= 0.01 else 'DISAGREE'}).",
        f"In neither count (no TF statistic, elementwise): {', '.join(skipped) or 'none'}.",
    ]


def _experiment_lines(rep: dict) -> list[str]:
    lines = []
    if "jit" in rep:
        j = rep["jit"]
        ld, lx = j["loss_default"], j["loss_xla"]
        lines += ["", (
            f"XLA (jit_compile=True) vs default: {j['images_per_s']['xla']:,.0f} vs "
            f"{j['images_per_s']['default']:,.0f} images/s = {j['ratio_xla_over_default']:.2f}x. "
            f"Per-step loss over {len(lx)} steps from the same weights (dropout 0): max relative "
            f"difference {j['max_rel_loss_diff']:.1e} (first {ld[0]:.4f} vs {lx[0]:.4f}, last "
            f"{ld[-1]:.4f} vs {lx[-1]:.4f})."
        )]  # fmt: skip
    o = rep.get("onednn")
    if o and "train" in o:
        lines += ["", (
            f"oneDNN off vs on (TF_ENABLE_ONEDNN_OPTS=0 vs 1, interleaved subprocesses): train "
            f"{o['train']['0']:,.0f} vs {o['train']['1']:,.0f} images/s = "
            f"{o['train_ratio_off_over_on']:.2f}x; forward {o['forward']['0']:,.0f} vs "
            f"{o['forward']['1']:,.0f} = {o['forward_ratio_off_over_on']:.2f}x; logged loss max "
            f"relative difference {o['max_rel_loss_diff']:.1e}."
        )]  # fmt: skip
    elif o:
        errors = [r["error"] for v in o["runs"].values() for r in v if "error" in r]
        lines += ["", f"oneDNN comparison not made: {o.get('skipped') or errors[0]}"]
    return lines


def _load() -> list[float] | None:
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _machine() -> dict:
    import tensorflow as tf

    try:  # what TensorFlow read at its import, not the variable now
        from tensorflow.python.util import _pywrap_util_port

        onednn = bool(_pywrap_util_port.IsMklEnabled())
    except ImportError:
        onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") not in ("0", "false", "off")
    return {
        "cpus": _cpus(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "onednn": onednn,
        "load_avg": _load(),
    }


def main(argv=None) -> int:
    cpus = _cpus()
    p = argparse.ArgumentParser(prog="bench_train", description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=128, help="batch size (default 128)")
    p.add_argument("--steps", type=int, default=30, help="timed steps per measurement (30)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats (3)")
    p.add_argument("--threads", type=int, default=cpus, help=f"TF threads (default {cpus})")
    p.add_argument("--matmul-size", type=int, default=2048, help="matmul n (default 2048)")
    p.add_argument("--ghz", type=float, help="clock for the theoretical peak (default: lscpu)")
    p.add_argument(
        "--sweep", type=int, nargs="*", default=list(SWEEP_BATCHES),
        help="batch sizes of the batch sweep (default 128 256 512; none: skip)",
    )  # fmt: skip
    p.add_argument("--compare-jit", action="store_true", help="default vs jit_compile=True")
    p.add_argument("--compare-onednn", action="store_true", help="TF_ENABLE_ONEDNN_OPTS 1 vs 0")
    p.add_argument("--json", help="also write the report here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("batch", "steps", "repeats", "threads", "matmul_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} should be >= 1. Received: {getattr(args, name)}")
    if args.ghz is not None and args.ghz <= 0:
        p.error(f"--ghz should be > 0. Received: {args.ghz}")
    if any(b < 1 for b in args.sweep):
        p.error(f"--sweep batch sizes should be >= 1. Received: {args.sweep}")
    import kvision  # noqa: F401  (before TensorFlow, as the kvision command imports them)

    set_threads(args.threads)
    if args.worker:
        return worker(args)
    report = run_benchmark(args)
    print(format_report(report))
    if args.json:
        from kvision.io import atomic_write_json

        print(f"wrote {atomic_write_json(args.json, report)}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
