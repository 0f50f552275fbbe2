"""The ``kvision`` command: a thin mirror of :mod:`kvision.workflow`.

kvision pipeline                          # the main job: Fashion-MNIST, compact MobileNet
kvision train my.yaml train.epochs=3      # YAML config plus validated key=value overrides
kvision evaluate --model runs/x/checkpoints/best.keras
kvision export --model runs/x/checkpoints/best.keras
kvision predict --model runs/x/export/tflite/classifier_float32.tflite shirt.png
kvision config train.epochs=3             # print the resolved config
kvision list models
kvision index build --model runs/e/export/tflite/embedder_float32.tflite photos/ --out photos.index
kvision index search photos.index query.jpg -k 5

Exit status: 0 done; 1 an artifact could not be produced or verified, or an internal error (a bug:
the traceback is printed); 2 a user error (config, arguments, data or model files), printed as
one line (``--debug`` shows its traceback); 130 interrupted. TensorFlow's start-up lines are
hidden unless ``--verbose`` is given.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback
from pathlib import Path

_EPILOG = """\
Config: an optional YAML file and section.field=value overrides, e.g.
  data.dataset=folder data.path=./images model.name=lenet train.epochs=5 augment.enabled=false
Unknown keys are rejected with a suggestion; `kvision config` prints every field.
"""


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "config",
        nargs="*",
        metavar="[CONFIG.yaml] [key=value ...]",
        help="optional YAML config file followed by key=value overrides",
    )


def _add_fresh(p):
    p.add_argument(
        "--fresh",
        action="store_true",
        help="discard the training state of an existing run with this name",
    )


def _add_strict(p):
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when a compressed artifact is below the accuracy floor (default: it is "
        "reported as failed validation, with the remedy, and the exit status stays 0)",
    )


def _prediction_text(result: dict) -> str:
    """One line per file: top-k labels, the detections (label score [box]), the pixels of each
    class in the mask, or the recognized text."""
    from kvision.predict import DRAW_SCORE

    if "top_k" in result:
        return ", ".join(f"{t['label']} {t['probability']:.3f}" for t in result["top_k"])
    if "text" in result:
        conf = result.get("confidences")
        low = f" (lowest character confidence {min(conf):.2f})" if conf else ""
        return f"{result['text']!r}{low}"
    if "embedding" in result:
        head = ", ".join(f"{v:+.3f}" for v in result["embedding"][:4])
        return f"{result['dim']}-d embedding (norm {result['norm']:.3f}): [{head}, ...]"
    if "segmentation" in result:
        seg = result["segmentation"]
        h, w = seg["size"]
        classes = [f"{c['label']} {c['pixels']:,} px" for c in seg["classes"]]
        text = f"{w}x{h} mask: " + (", ".join(classes) or "background only")
        if "instances" in seg:
            text += f"; {seg['instances']['count']} instances"
        return text
    detections = result.get("detections", [])
    shown = [d for d in detections if d["score"] >= DRAW_SCORE]
    parts = [
        f"{d['label']} {d['score']:.2f} [{', '.join(f'{v:.0f}' for v in d['box'])}]" for d in shown
    ]
    return f"{len(shown)} detections (score >= {DRAW_SCORE}; {len(detections)} in --json)" + (
        ": " + "; ".join(parts) if parts else ""
    )


def _exit_status(artifacts, strict: bool) -> int:
    """0 when every artifact was produced and verified; 1 when one could not be (or, with
    ``strict``, when one is below the accuracy floor). Floor misses are listed either way."""
    from kvision.compress.artifacts import EXPORTED_BUT_FAILED

    rows = [a if isinstance(a, dict) else a.to_dict() for a in artifacts]
    failed = [a for a in rows if a["status"] != "ok"]
    below = [a for a in failed if a["reason"].startswith(EXPORTED_BUT_FAILED)]
    if below:
        names = ", ".join(
            f"{a['name']} ({a['metrics'].get('accuracy_drop_points', float('nan')):.2f} points)"
            for a in below
        )
        print(f"Below the accuracy floor (files kept, remedies in the report): {names}")
    broken = [a for a in failed if a not in below]
    return 1 if broken or (strict and below) else 0


def build_parser(extensions=()) -> argparse.ArgumentParser:
    """The ``kvision`` parser. ``extensions`` are callables ``f(subparsers)`` that add commands
    (each sets ``handler=fn(args) -> int`` as a default); ``deploy.cli`` adds benchmark, serve,
    convert and inspect this way, so kvision itself never imports deploy."""
    parser = argparse.ArgumentParser(
        prog="kvision",
        description="Images to compressed, verified TFLite / TF Serving models.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show TensorFlow's start-up and info log lines (hidden by default)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "pipeline",
        help="train -> evaluate -> export -> compress -> benchmark -> report "
        "(no arguments: the default Fashion-MNIST job)",
        epilog=_EPILOG,
        formatter_class=fmt,
    )
    _add_config_args(p)
    _add_fresh(p)
    _add_strict(p)

    p = sub.add_parser(
        "train",
        help="train a model (resumes an interrupted run)",
        epilog=_EPILOG,
        formatter_class=fmt,
    )
    _add_config_args(p)
    _add_fresh(p)

    p = sub.add_parser(
        "evaluate",
        help="test-set metrics, confusion matrix and curves",
        epilog=_EPILOG,
        formatter_class=fmt,
    )
    _add_config_args(p)
    p.add_argument("--model", required=True, help="model file (.keras/.h5)")
    p.add_argument("--out", help="output folder (default: the run directory)")

    p = sub.add_parser(
        "export",
        help="SavedModel (TF Serving layout) + float32 TFLite, verified",
        epilog=_EPILOG,
        formatter_class=fmt,
    )
    _add_config_args(p)
    p.add_argument("--model", required=True, help="model file (.keras/.h5)")
    p.add_argument("--out", help="output folder (default: <run dir>/export)")

    p = sub.add_parser("compress", help="pruning, QAT, clustering, PTQ, distillation -> "
                       "verified int8 TFLite, with a per-layer report", epilog=_EPILOG,
                       formatter_class=fmt)  # fmt: skip
    _add_config_args(p)
    p.add_argument("--model", required=True, help="a tf_keras model file (.keras/.h5)")
    p.add_argument("--out", help="output folder (default: <run dir>/compress)")
    p.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this Python module first (repeatable; from the current folder or "
        "PYTHONPATH): where the model's custom layers are defined and registered",
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="redo every technique (default: a technique finished earlier for this model and "
        "settings is reused after its files are re-checked)",
    )
    _add_strict(p)

    p = sub.add_parser("predict", help="top-k labels for image files")
    p.add_argument(
        "--model",
        required=True,
        help="a .keras/.h5 file, a SavedModel version folder or a .tflite file",
    )
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, BMP)")
    p.add_argument("--top-k", type=int, default=3, help="labels per image (default 3)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument(
        "--out",
        help="detection models: write each image with its boxes drawn (PNG) and its JSON here",
    )

    p = sub.add_parser(
        "config", help="print the resolved config as YAML", epilog=_EPILOG, formatter_class=fmt
    )
    _add_config_args(p)
    p.set_defaults(needs_tensorflow=False)

    p = sub.add_parser("list", help="list registered models or augmentation transforms")
    p.add_argument("what", choices=["models", "transforms"])

    p = sub.add_parser("index", help="image retrieval: build a vector index of an image folder "
                       "with an embedding model, and search it by image")  # fmt: skip
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    b = verbs.add_parser("build", help="embed every image under a folder into a FAISS index")
    b.add_argument("--model", required=True, help="an embedding model (.tflite, SavedModel, "
                   ".keras) with its contract")  # fmt: skip
    b.add_argument("folder", help="the images (searched recursively)")
    b.add_argument("--out", required=True, help="the index folder (replaced atomically)")
    b.add_argument("--kind", choices=["exact", "hnsw", "ivf"], default="hnsw",
                   help="FAISS search: exact, HNSW graph (default) or IVF lists")  # fmt: skip
    b.add_argument("--on-error", choices=["skip", "raise"], default="skip",
                   help="undecodable images: skip and list them (default) or stop")  # fmt: skip
    b.set_defaults(handler=_index_build)
    q = verbs.add_parser("search", help="the nearest indexed images of query images")
    q.add_argument("index", help="an index folder written by `kvision index build`")
    q.add_argument("images", nargs="+", help="query image files")
    q.add_argument("-k", type=int, default=5, help="neighbours per query (default 5)")
    q.add_argument("--model", help="the embedding model (default: the one that built the index)")
    q.add_argument("--json", action="store_true", help="print JSON instead of text")
    q.set_defaults(handler=_index_search)
    for extend in extensions:
        extend(sub)
    return parser


def _load(args):
    from kvision.config import ConfigError, load_config

    path, overrides = None, []
    for i, item in enumerate(args.config):
        if "=" in item:
            overrides.append(item)
        elif i == 0:
            path = item
        else:
            raise ConfigError(
                f"Argument {item!r} is neither the first (config file) nor key=value."
            )
    return load_config(path, overrides)


def main(argv: list[str] | None = None, extensions=()) -> int:
    """Run ``kvision`` with ``argv``; returns the exit status (see the module docstring).

    A user error (:func:`kvision.errors.is_user_error`) is printed as one line
    ``kvision CMD: error: ...`` and returns 2; any other exception is a bug in kvision: its
    traceback and ``kvision CMD: internal error (a bug in kvision, please report it)`` are
    printed and 1 is returned. ``--debug`` re-raises both.
    """
    parser = build_parser(extensions)
    args = parser.parse_args(argv)
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    if args.verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        if getattr(args, "needs_tensorflow", True):
            from kvision import _env

            # Import it here, once, so that its C++ start-up lines can be filtered out.
            _env.import_tensorflow(quiet=not args.verbose)
        return _dispatch(args)
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume.", file=sys.stderr)
        return 130
    except Exception as exc:
        from kvision.errors import UnsafeTrainingError, is_user_error

        if isinstance(exc, UnsafeTrainingError) and argv is None:
            _restart_without_onednn(args.command, exc)  # returns only when it may not
        if args.debug:
            raise
        if is_user_error(exc):
            print(f"kvision {args.command}: error: {exc}", file=sys.stderr)
            return 2
        traceback.print_exc()
        print(
            f"kvision {args.command}: internal error (a bug in kvision, please report it): "
            f"{type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        return 1


def _restart_without_onednn(command: str, exc) -> None:
    """Run this same command again in a fresh process with oneDNN off.

    The guard (:func:`kvision._env.check_trainable`) stops before any training step, so nothing
    is lost; training and compression resume from what is on disk. Only when the user did not
    set ``TF_ENABLE_ONEDNN_OPTS`` (their explicit choice is reported instead) and only once.
    """
    from kvision._env import ONEDNN_VAR

    if ONEDNN_VAR in os.environ:
        return
    print(
        f"kvision {command}: {exc.layers_text()}: restarting with {ONEDNN_VAR}=0 "
        "(oneDNN's gradient of these layers corrupts the heap; slower, but safe).",
        file=sys.stderr,
        flush=True,
    )
    sys.stdout.flush()
    env = {**os.environ, ONEDNN_VAR: "0"}
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def _dispatch(args) -> int:
    from kvision import workflow
    from kvision.errors import InputValueError

    handler = getattr(args, "handler", None)
    if handler is not None:
        return handler(args)

    if args.command == "config":
        import yaml

        from kvision.config import to_dict

        print(yaml.safe_dump(to_dict(_load(args)), sort_keys=False), end="")
        return 0
    if args.command == "list":
        if args.what == "models":
            from kvision.models import list_models

            print("\n".join(list_models()))
        else:
            from kvision.augment import list_transforms

            print("\n".join(list_transforms()))
        return 0
    if args.command == "predict":
        from kvision.predict import predict_task_files

        task = workflow.saved_task(args.model)
        if args.out and task in (None, "classification"):
            raise InputValueError(
                "`--out` writes images with detections or masks drawn; this model is a classifier "
                "(its labels are printed, or use --json)"
            )
        if task not in (None, "classification"):
            results = predict_task_files(args.model, args.images, out_dir=args.out)
        else:
            results = workflow.predict_files(args.model, args.images, top_k=args.top_k)
        if args.json:
            print(json.dumps(results, indent=2))
        else:
            for r in results:
                print(f"{r['file']}: {_prediction_text(r)}")
            if args.out:
                print(f"Drawn predictions and JSON in {args.out}")
        return 0

    cfg = _load(args)
    if args.command == "pipeline":
        report = workflow.run_pipeline(cfg, fresh=args.fresh)
        from kvision.report import render_markdown

        print(render_markdown(report))
        print(f"\nReport: {Path(cfg.runs_dir) / report['run']['name'] / 'report.html'}")
        return _exit_status(report["artifacts"], args.strict)
    if cfg.task != "classification":  # never train or score a classifier under another task
        raise InputValueError(
            f"`kvision {args.command}` runs classification only so far; task={cfg.task} runs "
            f"through `kvision pipeline task={cfg.task} ...` (train, evaluate, export, compress)"
        )
    if args.command == "train":
        run = workflow.train(cfg, fresh=args.fresh)
        print(
            f"best val accuracy {run.fit.best_val_accuracy} (epoch {run.fit.best_epoch}); "
            f"checkpoint {run.fit.checkpoint}"
        )
        return 0

    if args.command == "compress":
        return _compress(cfg, args)

    from kvision._keras import load_model
    from kvision.models import InputContract, attach_contract

    model_path = Path(args.model)
    model = load_model(model_path)
    contract = InputContract.for_model_file(model_path, model)
    attach_contract(model, contract)
    splits = workflow.load_data(cfg)
    if args.command == "evaluate":
        out = Path(args.out) if args.out else cfg.run_dir
        out.mkdir(parents=True, exist_ok=True)
        result = workflow.evaluate(model, splits, contract, out)
        print(
            f"{result['split']} accuracy {result['accuracy']:.4f}  macro F1 "
            f"{result['macro_f1']:.4f}  (metrics: {out / 'metrics.json'})"
        )
        return 0
    if args.command == "export":
        if args.out:
            cfg.runs_dir, cfg.name = str(Path(args.out).parent), Path(args.out).name
        artifacts = workflow.export(model, splits, contract, cfg)
        for a in artifacts:
            print(f"{a.status:7s} {a.format:12s} {a.path}  {a.reason}")
        return 0 if all(a.status == "ok" for a in artifacts) else 1
    raise AssertionError(args.command)  # argparse guarantees a known command


def _index_build(args) -> int:
    from kvision.index.images import build_image_index

    summary = build_image_index(args.model, args.folder, args.out, kind=args.kind,
                                on_error=args.on_error)  # fmt: skip
    for f, reason in summary["bad_files"]:
        print(f"skipped {f}: {reason}", file=sys.stderr)
    print(f"Indexed {summary['count']:,} images ({summary['dim']}-d, {summary['kind']}) in "
          f"{summary['index']}: embedding {summary['embed_s']} s, index {summary['build_s']} s; "
          f"{len(summary['bad_files'])} skipped")  # fmt: skip
    return 0


def _index_search(args) -> int:
    from kvision.errors import InputValueError
    from kvision.index.images import search_images

    if args.k < 1:
        raise InputValueError(f"`-k` should be >= 1. Received: {args.k}")
    results = search_images(args.index, args.images, k=args.k, model_path=args.model)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        print(f"{r['file']}:")
        for rank, hit in enumerate(r["neighbours"], 1):
            print(f"  {rank:>2}. {hit['score']:.4f}  {hit['path']}")
    return 0


def _compress(cfg, args) -> int:
    """``kvision compress --model PATH``: every configured technique on a user's model file."""
    from kvision import _env, workflow
    from kvision.compress import compress, load_model_for_compression
    from kvision.compress.api import FINE_TUNED
    from kvision.config import ConfigError

    if args.imports and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # modules next to the user, as `python -m` would find
    for module in args.imports:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"--import {module}: {exc}") from exc
    model = load_model_for_compression(args.model)
    if set(cfg.compress.techniques) & FINE_TUNED:  # refused before the data is loaded
        _env.check_trainable(model, f"to fine-tune {args.model}")
    splits = workflow.load_data(cfg)
    train_ds, val_ds, test = workflow.compression_data(cfg, splits, model.kvision_contract)
    out = Path(args.out) if args.out else cfg.run_dir / "compress"
    result = compress(model, train_ds, val_ds, cfg.compress, out, test=test, verbose="auto",
                      resume=not args.fresh)  # fmt: skip
    print(result.to_markdown())
    return _exit_status(result.artifacts, args.strict)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
