#!/usr/bin/env python
"""Convert a SavedModel / ``.keras`` / ``.h5`` / ``.hdf5`` model into TFLite variants, verified.

Every variant goes through ``kvision.export.converter.convert_tflite`` (the one converter user)
and is then reloaded with LiteRT and compared with the source model. A one-output classifier is
verified by ``kvision.export.verify.verify_artifact`` (builtin ops only, dtypes, |diff|, top-1
agreement) with the per-variant tolerances of :data:`TOLERANCES`; any other model (several
outputs, e.g. a detector's ``boxes`` and ``scores``) output by output by
``deploy.tools.output_parity.verify_outputs`` with the tolerances of its
``OUTPUT_TOLERANCES`` (per-output max |diff|), and a failure names the output. A SavedModel
(kvision's or anyone's with one image input) is wrapped in a tf_keras model around its serving
signature, keeping every output under its signature key. Sources with several inputs are
refused with the inputs named (the converter and calibration take one image input).

The source's input contract decides what both sides are fed (``kvision.models.contract``): a
source whose integer input has no quantization parameters (a ``uint8`` SavedModel or Keras
model that divides by 255 inside) gets ``input_domain="uint8"``, so calibration and
verification feed the source and every variant the same whole pixel values 0..255, and the
contract written beside each ``.tflite`` keeps that range for ``predict``, ``serve`` and the
benchmark.

Usage::

    python tools/convert.py --model runs/x/checkpoints/best.keras --variant float32 int8 \
        --calibration data/calib_images --out runs/x/tflite
    python tools/convert.py --model runs/x/export/saved_model/classifier --variant int16x8 \
        --calibration data/calib_images --out out/

Writes ``<out>/<name>_<variant>.tflite`` (+ ``.contract.json``) and ``<out>/convert_report.json``;
exits 1 when a variant fails to convert or verify.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from kvision.errors import InputValueError

# variant -> (atol on probabilities or None, minimum top-1 agreement with the source model)
TOLERANCES = {
    "float32": (1e-4, 1.0),
    "float16": (1e-2, 0.98),
    "dynamic": (None, 0.95),
    "int8": (None, 0.90),
    "int8_float_io": (None, 0.90),
    "int16x8": (None, 0.95),
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(
        prog="kvision convert", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--model", required=True, help="SavedModel folder, .keras/.h5/.hdf5 file")
    p.add_argument(
        "--variant",
        nargs="+",
        default=["float32"],
        help=f"TFLite variants: {', '.join(TOLERANCES)} (default float32)",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--name", help="file prefix (default: the model's stem / folder name)")
    p.add_argument(
        "--calibration",
        help="folder of images (flat or one sub-folder per class) for int8 / int16x8 "
        "calibration and for verification",
    )
    p.add_argument("--samples", type=int, default=200, help="calibration images used (200)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    return p


def main(argv: list[str] | None = None) -> int:
    """Convert and verify; print one line per variant; return the exit status."""
    return run_from_args(build_parser().parse_args(argv))


def run_from_args(args) -> int:
    """Run a conversion from parsed arguments (``kvision convert``)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        report = convert(
            args.model,
            args.variant,
            args.out,
            name=args.name,
            calibration=args.calibration,
            samples=args.samples,
            overwrite=args.overwrite,
        )
    except Exception as exc:  # user errors are one line; anything else is a bug: raised
        from kvision.errors import user_error_status

        return user_error_status("convert", exc)
    for a in report["artifacts"]:
        c = a["checks"]
        if c.get("outputs"):  # per output: max |diff| / tolerance
            diffs = "  ".join(
                f"{k} max|diff| {_f(v['max_abs_diff'])}/{_f(v['tolerance'])}"
                for k, v in c["outputs"].items()
            )
        else:
            diffs = f"max|diff| {_f(c.get('max_abs_diff'))}  top-1 {_f(c.get('top1_agreement'))}"
        print(
            f"{a['status']:7s} {a['name']:24s} {a['size_bytes'] / 1e3:8.1f} KB  {diffs}  "
            f"{a['path']}  {a['reason']}"
        )
    return 0 if all(a["status"] == "ok" for a in report["artifacts"]) else 1


def convert(
    model_path,
    variants,
    out_dir,
    name: str | None = None,
    calibration=None,
    samples: int = 200,
    overwrite: bool = False,
) -> dict:
    """Convert ``model_path`` to each variant in ``out_dir``, verify, write the report.

    Args:
        model_path: SavedModel folder, ``.keras`` / ``.h5`` / ``.hdf5`` file.
        variants: variant names (``kvision.export.converter.VARIANTS``).
        out_dir: output folder.
        name: file prefix (default: the model's stem / folder name).
        calibration: image folder for calibration and verification (default ``None``: 32
            seeded pixel-noise images in the source's domain verify; calibrating variants
            then refuse).
        samples: calibration images used (default 200).
        overwrite: replace existing files (default False).

    Returns:
        ``{"model": str, "calibration": str | None, "outputs": [names], "tolerances": {...},
        "artifacts": [Artifact.to_dict(), ...]}``; a multi-output artifact's ``checks``
        has ``outputs``: ``{name: {max_abs_diff, mean_abs_diff, tolerance, ok}}``.

    Raises:
        InputValueError: unknown variants, a calibrating variant without ``calibration``, or
            a source with several inputs.

    Example:
        >>> report = convert("detector.keras", ["float32", "int8"], "out", calibration="imgs")
        >>> [a["status"] for a in report["artifacts"]]
        ['ok', 'ok']
    """
    from deploy.tools.output_parity import OUTPUT_TOLERANCES, verify_outputs
    from kvision.export.artifact import Artifact, short_reason
    from kvision.export.converter import VARIANTS, convert_tflite
    from kvision.export.saved_model import output_names
    from kvision.export.verify import empty_checks, verify_artifact
    from kvision.io import atomic_write_json

    variants = [variants] if isinstance(variants, str) else list(variants)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise InputValueError(f"`variant` should be among {sorted(VARIANTS)}. Received: {variants}")
    model, contract = load_source_model(model_path)
    needs_data = any(VARIANTS[v].needs_representative_data for v in variants)
    if calibration is None and needs_data:
        raise InputValueError(
            f"Variants {[v for v in variants if VARIANTS[v].needs_representative_data]} "
            "calibrate activations: pass --calibration DIR (a folder of images)."
        )
    x = calibration_images(calibration, contract, samples) if calibration else _probe(contract, 32)
    names = output_names(model)
    reference = model.predict(x, batch_size=64, verbose=0)
    if isinstance(reference, dict):
        reference = {str(k): v for k, v in reference.items()}
    else:
        reference = dict(zip(names, reference if len(names) > 1 else [reference], strict=True))
    # a one-output classifier keeps its top-1 verification; anything else is checked per output
    classifier = (
        contract.task == "classification" and len(names) == 1 and reference[names[0]].ndim == 2
    )
    prefix = name or _stem(Path(model_path))
    out = Path(out_dir)
    artifacts = []
    for variant in variants:
        path = out / f"{prefix}_{variant}.tflite"
        data = x if VARIANTS[variant].needs_representative_data else None
        try:
            convert_tflite(
                model,
                path,
                variant,
                representative_data=data,
                contract=contract,
                overwrite=overwrite,
                max_calibration_samples=samples,
            )
        except Exception as exc:  # a variant that cannot be produced is a failed row
            checks = empty_checks()
            artifacts.append(Artifact.failed(variant, "tflite", path, short_reason(exc), checks))
            continue
        if not classifier:
            artifacts.append(verify_outputs(path, variant, x, reference, name=variant))
            continue
        atol, agreement = TOLERANCES[variant]
        artifacts.append(
            verify_artifact(
                path,
                "tflite",
                None,
                x,
                atol=atol,
                name=variant,
                reference=reference[names[0]],
                min_top1_agreement=agreement,
            )
        )
    table = TOLERANCES if classifier else OUTPUT_TOLERANCES
    report = {
        "model": str(model_path),
        "calibration": str(calibration) if calibration else None,
        "n_samples": int(len(x)),
        "outputs": names,
        "tolerances": {v: list(table[v]) for v in variants},
        "contract": contract.to_dict(),
        "artifacts": [a.to_dict() for a in artifacts],
    }
    atomic_write_json(out / "convert_report.json", report)
    return report


def load_source_model(path):
    """``(tf_keras model, InputContract)`` for a ``.keras`` / ``.h5`` / ``.hdf5`` file or a
    SavedModel with one image input.

    The contract is the one saved with the model (checked against its input tensor), else
    derived from the input tensor (``InputContract.for_tensor``: raw ``uint8`` pixels for an
    integer input without quantization). A SavedModel's outputs keep their signature keys as
    the model's output names.

    Raises:
        InputValueError: not a SavedModel / Keras file, or a model with several inputs.
    """
    from kvision._keras import load_model
    from kvision.models.contract import attach_contract
    from kvision.runtime import artifact_contract, detect_format, open_runtime

    p = Path(path)
    fmt = detect_format(p)
    if fmt == "keras":
        model = load_model(p)
        _one_input(p, list(model.input_names))
        contract = _keras_contract(p, model)
    elif fmt == "saved_model":
        with open_runtime(p, "tf_cpu") as rt:
            inputs, outputs = rt.inputs, rt.outputs
        _one_input(p, [i.name for i in inputs])
        contract, _ = artifact_contract(p, inputs[0])
        n = outputs[0].shape[-1] if len(outputs) == 1 and outputs[0].shape else None
        if not contract.labels and isinstance(n, int):
            contract.labels = [str(i) for i in range(n)]
        model = _wrap_saved_model(p, inputs[0], [o.name for o in outputs], contract)
    else:
        raise InputValueError(
            f"--model should be a SavedModel, .keras, .h5 or .hdf5. Received: {p} ({fmt})"
        )
    attach_contract(model, contract)
    return model, contract


def _keras_contract(path, model):
    """The contract saved with a Keras file, checked against its input, else derived from the
    input tensor (``InputContract.for_model_file`` for one output; with several outputs there
    are no class labels to derive)."""
    from kvision.models.contract import InputContract, model_input_dtype

    if len(model.outputs) == 1:
        return InputContract.for_model_file(path, model)
    try:
        contract = InputContract.find(path)
    except FileNotFoundError:
        return InputContract.for_tensor(
            model.input_shape, model_input_dtype(model), where=str(path)
        )
    contract.check_tensor(model_input_dtype(model), where=str(path))
    return contract


def _one_input(path, names: list[str]) -> None:
    if len(names) != 1:
        raise InputValueError(
            f"kvision convert takes a model with one image input; {path} has inputs {names}. "
            "Convert it with tf.lite.TFLiteConverter, then benchmark or serve the .tflite."
        )


def _wrap_saved_model(path, spec, out_names: list[str], contract):
    """A tf_keras model whose one layer calls the SavedModel's serving signature; several
    outputs become the model's outputs, named by their signature keys."""
    import tensorflow as tf

    from kvision._keras import keras
    from kvision.runtime import saved_model_version_dir

    folder = str(saved_model_version_dir(path))

    class SavedModelLayer(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.loaded = tf.saved_model.load(folder)
            sigs = dict(self.loaded.signatures)
            self.fn = sigs.get("serving_default") or next(iter(sigs.values()))

        def call(self, x):  # x holds whole pixel values when spec is an integer input
            out = self.fn(**{spec.name: tf.cast(x, spec.dtype)})
            return [out[k] for k in out_names] if len(out_names) > 1 else out[out_names[0]]

    inp = keras.Input(contract.shape, name="kvision_source_input")
    y = SavedModelLayer(name="saved_model")(inp)
    if len(out_names) == 1:
        return keras.Model(inp, y)
    named = [
        keras.layers.Activation("linear", name=k)(t) for k, t in zip(out_names, y, strict=True)
    ]
    return keras.Model(inp, named)


def calibration_images(folder, contract, limit: int = 200) -> np.ndarray:
    """Up to ``limit`` images of ``folder`` (searched recursively, sorted, evenly spread),
    decoded, resized and normalized for the contract by ``kvision.preprocess.file_inputs``:
    float32 ``[N, H, W, C]`` (whole pixel values for a raw ``uint8`` contract)."""
    from kvision.preprocess import file_inputs

    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"Calibration folder not found: {root}")
    files = sorted(f for f in root.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputValueError(f"No images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InputValueError(f"`samples` should be a positive integer. Received: {limit!r}")
    if len(files) > limit:
        idx = np.linspace(0, len(files) - 1, limit).round().astype(int)
        files = [files[i] for i in np.unique(idx)]
    return file_inputs(files, contract)


def _probe(contract, n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return contract.normalize(rng.integers(0, 256, (n, *contract.shape), dtype=np.uint8))


def _stem(p: Path) -> str:
    if p.is_dir():
        return p.parent.name if p.name.isdigit() else p.name
    return p.stem


def _f(v) -> str:
    return "-" if v is None else f"{v:.4g}"


if __name__ == "__main__":
    sys.exit(main())
