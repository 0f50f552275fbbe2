"""``kvision serve``: load models and run the REST server with uvicorn (127.0.0.1 by default).

Examples::

    kvision serve --model fashion=runs/x/export/saved_model/classifier      # every version
    kvision serve --model fashion=tflite_models/classifier_int8.tflite --threads 2 --instances 2
    kvision serve --model fashion=runs/x/export/saved_model/classifier --label fashion:stable=1 \
        --batch-max-size 16 --batch-timeout-ms 2 --port 8501

Then ``curl -d '{"instances": [{"b64": "..."}]}' 127.0.0.1:8501/v1/models/fashion:predict``.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys

from deploy.server.app import DEFAULT_MAX_BODY
from kvision.errors import InputValueError


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Add the serve arguments to ``parser`` (a new one by default); the CLI reuses it."""
    p = parser or argparse.ArgumentParser(
        prog="kvision serve", description="TF Serving's REST API for SavedModels and .tflite"
    )
    p.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME=PATH",
        help="model to serve (repeatable): .tflite, .keras/.h5/.hdf5, a SavedModel version folder, "
        "or a SavedModel model folder with numeric versions",
    )
    p.add_argument(
        "--label", action="append", default=[], metavar="NAME:LABEL=VERSION", help="version label"
    )
    p.add_argument(
        "--index", action="append", default=[], metavar="NAME=DIR",
        help="a vector index (kvision index build) that embedding model NAME searches at "
        ":search (repeatable)",
    )  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="bind address (127.0.0.1)")
    p.add_argument("--port", type=int, default=8501, help="port (8501, as TF Serving's REST)")
    p.add_argument("--runtime", default="auto", help="runtime name (auto: litert / tf_cpu / keras)")
    p.add_argument("--threads", type=int, help="threads per runtime (LiteRT, ONNX Runtime)")
    p.add_argument("--instances", type=int, default=1, help="runtimes per version (1)")
    p.add_argument(
        "--max-body-mb", type=float, default=DEFAULT_MAX_BODY / 2**20, help="body limit (16 MiB)"
    )
    p.add_argument(
        "--batch-max-size", type=int, default=0, help="dynamic batching: max images (0 = off)"
    )
    p.add_argument("--batch-timeout-ms", type=float, default=2.0, help="dynamic batching wait")
    p.add_argument("--log-level", default="info", help="uvicorn log level (info)")
    return p


def load_store(models: list[str], labels=(), runtime="auto", threads=None, instances=1,
               indexes=()):  # fmt: skip
    """A :class:`ModelStore` from ``NAME=PATH``, ``NAME:LABEL=VERSION`` and index
    ``NAME=DIR`` strings."""
    from deploy.server.store import ModelStore

    store = ModelStore()
    for spec in models:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise InputValueError(f"--model should be NAME=PATH. Received: {spec!r}")
        store.add(name, path, runtime=runtime, threads=threads, instances=instances)
    for spec in labels:
        left, sep, version = spec.partition("=")
        name, sep2, label = left.partition(":")
        if not (sep and sep2 and version.isdigit()):
            raise InputValueError(f"--label should be NAME:LABEL=VERSION. Received: {spec!r}")
        store.set_label(name, label, int(version))
    for spec in indexes:
        name, sep, directory = spec.partition("=")
        if not sep or not name or not directory:
            raise InputValueError(f"--index should be NAME=DIR. Received: {spec!r}")
        store.add_index(name, directory)
    return store


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load the models and serve until interrupted; returns the exit status."""
    args = build_parser().parse_args(argv)
    return serve_from_args(args)


def serve_from_args(args) -> int:
    import uvicorn

    from deploy.server.app import create_app

    try:
        store = load_store(args.model, args.label, args.runtime, args.threads, args.instances,
                           args.index)  # fmt: skip
    except Exception as exc:  # user errors are one line; anything else is a bug: raised
        from kvision.errors import user_error_status

        return user_error_status("serve", exc)
    if not _is_loopback(args.host):
        print(
            f"kvision serve: warning: binding {args.host} exposes the server beyond this host "
            "(no authentication); the default is 127.0.0.1",
            file=sys.stderr,
        )
    batching = None
    if args.batch_max_size:
        batching = {"max_batch_size": args.batch_max_size, "timeout_ms": args.batch_timeout_ms}
    app = create_app(store, max_body_bytes=int(args.max_body_mb * 2**20), batching=batching)
    for name, versions in store.models.items():
        for v, served in sorted(versions.items()):
            print(f"serving {name} v{v}: {served.path} ({served.runtime.describe()['runtime']})")
    print(f"REST API on http://{args.host}:{args.port}/v1/models/<name>  (Ctrl-C to stop)")
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    finally:
        store.close()
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
