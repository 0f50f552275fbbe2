"""Where TensorFlow's oneDNN convolutions corrupt the heap, measured one subprocess per case.

TensorFlow 2.21 on x86 enables oneDNN ("oneDNN custom operations are on") unless
``TF_ENABLE_ONEDNN_OPTS=0`` is set before it is imported. Some convolution gradients then write
outside their buffers: the process dies by SIGSEGV or glibc's ``free(): invalid size``, or trains
on a corrupted heap. This script runs each case (layer, kernel, stride, map size, padding,
channels, bias, forward or gradient) in its own process with oneDNN on, under glibc's malloc
checks (``libc_malloc_debug``) so that a corruption aborts at the faulty free instead of passing
silently, and compares the result with the same case run with oneDNN off. It prints one table
row per case: ``ok`` (ran, same numbers), ``wrong`` (ran, different numbers), ``crash
(SIGSEGV)`` / ``abort (SIGABRT): free(): invalid size``, or ``error``.

    .venv/bin/python tools/probe_onednn.py             # the edges (54 cases, ~10 min)
    .venv/bin/python tools/probe_onednn.py --quick     # 6 cases that show the kind
    .venv/bin/python tools/probe_onednn.py --speed     # compact_mobilenet training, on vs off

Measured on a 2-core AMD EPYC with AVX-512 (TensorFlow 2.21): with oneDNN on, the filter gradient
of a 1x1 ``Conv2D`` / ``Conv2DTranspose`` with stride > 1 crashed when both map sides were
divisible by the stride and there were fewer than 16 input channels (not at 8x8); every other
case, and every case with oneDNN off, was right. The README's "oneDNN" note has the table.

``--speed`` trains ``compact_mobilenet`` (28x28x1, 10 classes, batch 128) for ``--steps`` steps
after a warm-up, in one subprocess per setting, alternating oneDNN off / on ``--rounds`` times,
and prints images/s.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_MALLOC_DEBUG = "/usr/lib/x86_64-linux-gnu/libc_malloc_debug.so.0"

# The case the field report found, and one factor changed at a time around it.
BASE = dict(op="Conv2D", k=1, s=2, hw=62, pad="same", cin=8, cout=8, batch=1, bias=True)


def _case(mode="grad_filter", **changes) -> dict:
    return {**BASE, "mode": mode, **changes}


QUICK = [
    _case("forward"),
    _case("grad_input"),
    _case("grad_filter"),
    _case(hw=63),
    _case(k=3),
    _case(s=1),
]

EDGES = [
    *QUICK,
    _case(pad="valid"),
    _case(hw=63, pad="valid"),
    _case(k=3, pad="valid"),
    _case(k=2),
    _case(s=3, hw=63),
    _case(s=3, hw=62),
    _case(bias=False),
    _case(cin=1),
    _case(cin=3),
    _case(cin=16),
    _case(cin=64),
    _case(cout=64),
    _case(cout=64, batch=32),
    _case(cin=256, cout=512, hw=28),
    _case(cin=1024, cout=2048, hw=14),
    _case(hw=8),
    _case(hw=14),
    _case(hw=16),
    _case(hw=28),
    _case(hw=32),
    _case(hw=56),
    _case(hw=64),
    _case(hw=112),
    _case(hw=224, cin=64, cout=64),
    _case(hw=62, batch=4),
    _case(op="Conv2D", k=(1, 3), hw=62),
    _case(op="DepthwiseConv2D", cout=None),
    _case(op="DepthwiseConv2D", k=3, cout=None),
    _case(op="DepthwiseConv2D", mode="grad_input", cout=None),
    _case(op="SeparableConv2D"),
    _case(op="SeparableConv2D", k=3),
    _case(op="Conv2DTranspose"),
    _case(op="Conv2DTranspose", mode="grad_input"),
    _case(mode="fit"),
    # second round: which axis, which channel counts, the other convolution ranks
    _case(hw=[62, 63]),
    _case(hw=[63, 62]),
    _case(s=[2, 1]),
    _case(s=[1, 2], hw=[62, 63]),
    _case(cin=12),
    _case(cin=24),
    _case(cin=32),
    _case(cin=48),
    _case(op="Conv2DTranspose", hw=63),
    _case(op="Conv2DTranspose", k=3),
    _case(op="Conv1D"),
    _case(op="Conv1D", hw=63),
    _case(op="Conv3D", hw=14),
    _case(op="Conv3D", hw=15),
]


def _rank(c: dict) -> int:
    return {"Conv1D": 1, "Conv3D": 3}.get(c["op"], 2)


def _sizes(c: dict, key: str) -> list[int]:
    value = c[key]
    return list(value) if isinstance(value, list | tuple) else [value] * _rank(c)


def _describe(c: dict) -> list[str]:
    k, s, hw = _sizes(c, "k"), _sizes(c, "s"), _sizes(c, "hw")
    parity = {n % 2 for n in hw}
    parity = "even" if parity == {0} else "odd" if parity == {1} else "mixed"
    chans = f"{c['cin']}->{c['cout']}" if c.get("cout") else f"{c['cin']}"
    return [
        c["op"],
        "x".join(map(str, k)),
        str(s[0]) if len(set(s)) == 1 else ",".join(map(str, s)),
        "x".join(map(str, hw)) + f" {parity}",
        c["pad"],
        chans,
        str(c["batch"]),
        "yes" if c["bias"] else "no",
        c["mode"],
    ]


# --------------------------------------------------------------------------- child side
def _run_case(c: dict, steps: int):
    """Run case ``c`` ``steps`` times in this process; return the last result as numpy."""
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras

    rng = np.random.default_rng(0)
    shape = (c["batch"], *_sizes(c, "hw"), c["cin"])
    x = tf.constant(rng.normal(size=shape).astype("float32"))
    kwargs = dict(strides=_sizes(c, "s"), padding=c["pad"], use_bias=c["bias"])
    if c["op"] == "DepthwiseConv2D":
        layer = keras.layers.DepthwiseConv2D(_sizes(c, "k"), **kwargs)
    else:
        layer = getattr(keras.layers, c["op"])(c["cout"], _sizes(c, "k"), **kwargs)
    if c["mode"] == "fit":
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.Input(x.shape[1:]), layer, keras.layers.Flatten(),
             keras.layers.Dense(4)]
        )  # fmt: skip
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        y = np.arange(c["batch"]) % 4
        model.fit(x, y, epochs=steps, batch_size=c["batch"], verbose=0, shuffle=False)
        return np.concatenate([w.ravel() for w in model.get_weights()])
    layer.build(x.shape)
    for w in layer.weights:
        w.assign(rng.normal(size=w.shape).astype("float32") * 0.1)
    target = rng.normal(size=layer.compute_output_shape(x.shape)).astype("float32")

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * target)
        if c["mode"] == "forward":
            return y
        if c["mode"] == "grad_input":
            return tape.gradient(loss, x)
        return tape.gradient(loss, layer.trainable_weights[0])

    for _ in range(steps):
        out = step()
    return out.numpy()


def _child(cases: list[dict], steps: int, out: str) -> None:
    import numpy as np

    results = {}
    for i, c in enumerate(cases):
        try:
            results[f"c{i}"] = _run_case(c, steps)
        except Exception as exc:  # noqa: BLE001  (reported as the case's status)
            results[f"e{i}"] = np.array(f"{type(exc).__name__}: {exc}"[:200])
    np.savez(out, **results)


# --------------------------------------------------------------------------- parent side
def _env(onednn: bool, malloc_check: bool) -> dict:
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="1" if onednn else "0")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if malloc_check and Path(_MALLOC_DEBUG).is_file():
        env["LD_PRELOAD"] = _MALLOC_DEBUG
        env["GLIBC_TUNABLES"] = "glibc.malloc.check=3"
    return env


def _spawn(cases, steps, onednn, malloc_check, timeout):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.npz"
        cmd = [sys.executable, __file__, "--child", json.dumps(cases), "--steps", str(steps),
               "--out", str(out)]  # fmt: skip
        try:
            proc = subprocess.run(
                cmd, env=_env(onednn, malloc_check), capture_output=True, text=True,
                timeout=timeout,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return None, "timeout"
        if proc.returncode != 0:
            return None, _death(proc)
        import numpy as np

        with np.load(out) as data:
            return dict(data), ""


def _death(proc) -> str:
    rc = proc.returncode
    what = f"exit {rc}"
    if rc < 0:
        what = f"{'crash' if -rc == signal.SIGSEGV else 'abort'} ({signal.Signals(-rc).name})"
    glibc = [
        line.strip()
        for line in proc.stderr.splitlines()
        if "free()" in line or "malloc" in line or "munmap" in line or "corrupted" in line
    ]
    return what + (f": {glibc[-1][:60]}" if glibc else "")


def _compare(ref, got) -> str:
    import numpy as np

    if ref.shape != got.shape:
        return f"wrong (shape {got.shape} vs {ref.shape})"
    scale = float(np.max(np.abs(ref))) or 1.0
    err = float(np.max(np.abs(ref - got))) / scale
    return "ok" if err <= 1e-3 else f"wrong (max rel. diff {err:.2g})"


def probe(cases: list[dict], steps: int, malloc_check: bool, timeout: float) -> list[list[str]]:
    """One row per case: the case, its status with oneDNN on, and with oneDNN off."""
    import numpy as np

    ref_timeout = timeout * max(4, len(cases) // 5)  # every case in one process
    ref, why = _spawn(cases, steps, onednn=False, malloc_check=malloc_check, timeout=ref_timeout)
    rows = []
    for i, c in enumerate(cases):
        off = (
            f"reference run died: {why}"
            if ref is None
            else ("ok" if f"c{i}" in ref else f"error: {ref.get(f'e{i}')}")
        )
        got, why_on = _spawn([c], steps, onednn=True, malloc_check=malloc_check, timeout=timeout)
        if got is None:
            on = why_on
        elif "e0" in got:
            on = f"error: {str(np.asarray(got['e0']))[:60]}"
        elif ref is None or f"c{i}" not in ref:
            on = "ran (no reference)"
        else:
            on = _compare(ref[f"c{i}"], got["c0"])
        rows.append([*_describe(c), on, off])
        print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    return rows


def _table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- speed
_SPEED = """
import sys, time, numpy as np
import kvision
from kvision._keras import keras
from kvision.models import build_model
steps, batch = int(sys.argv[1]), 128
keras.utils.set_random_seed(0)
model = build_model("compact_mobilenet", (28, 28, 1), 10)
model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(),
              metrics=["accuracy"])
rng = np.random.default_rng(0)
x = rng.random((batch * 8, 28, 28, 1), dtype=np.float32)
y = rng.integers(0, 10, batch * 8)
import tensorflow as tf
ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).cache().repeat()
model.fit(ds, steps_per_epoch=20, epochs=1, verbose=0)   # trace + warm-up
t0 = time.perf_counter()
model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
dt = time.perf_counter() - t0
from kvision._env import onednn_enabled
print(f"{onednn_enabled()} {steps * batch / dt:.1f} {dt:.2f}")
"""


def speed(steps: int, rounds: int, timeout: float) -> list[list[str]]:
    """images/s of compact_mobilenet training with oneDNN off and on, alternating."""
    rows = []
    for r in range(rounds):
        for onednn in (False, True):
            env = _env(onednn, malloc_check=False)
            env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
            proc = subprocess.run(
                [sys.executable, "-c", _SPEED, str(steps)], env=env, capture_output=True,
                text=True, timeout=timeout,
            )  # fmt: skip
            if proc.returncode != 0:
                rows.append([str(r + 1), str(onednn), "-", "-", _death(proc)])
            else:
                active, ips, secs = proc.stdout.split()[-3:]
                rows.append([str(r + 1), f"{'on' if onednn else 'off'} (active: {active})",
                             ips, secs, ""])  # fmt: skip
            print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="6 cases that show the kind")
    p.add_argument("--speed", action="store_true", help="training images/s, oneDNN on vs off")
    p.add_argument("--steps", type=int, help="steps per case (10) or timed train steps (300)")
    p.add_argument("--rounds", type=int, default=2, help="--speed: off/on rounds (2)")
    p.add_argument("--malloc-check", action="store_true", help="glibc malloc checks (hide it)")
    p.add_argument("--timeout", type=float, default=120, help="seconds per subprocess")
    p.add_argument("--cases", help="run only these case numbers, a Python slice (e.g. 40:)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(json.loads(args.child), args.steps or 10, args.out)
        return 0
    if args.speed:
        steps = args.steps or 300
        rows = speed(steps, args.rounds, args.timeout * 5)
        print(f"compact_mobilenet, 28x28x1, batch 128, {steps} timed train steps after 20:")
        print(_table(["round", "oneDNN", "images/s", "seconds", "note"], rows))
        return 0
    cases = QUICK if args.quick else EDGES
    if args.cases:
        cases = cases[slice(*(int(v) if v else None for v in args.cases.split(":")))]
    t0 = time.perf_counter()
    rows = probe(cases, args.steps or 10, args.malloc_check, args.timeout)
    header = ["layer", "kernel", "stride", "map", "padding", "channels", "batch", "bias", "run",
              "oneDNN on", "oneDNN off"]  # fmt: skip
    print(_table(header, rows))
    print(f"\n{len(rows)} cases in {time.perf_counter() - t0:.0f} s, "
          f"malloc checks {'on' if args.malloc_check else 'off'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
