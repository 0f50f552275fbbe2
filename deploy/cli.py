"""The ``kvision`` command with the deploy commands added: benchmark, serve, convert, inspect.

``kvision.cli`` holds the core commands (train, evaluate, export, predict, pipeline, ...); this
module adds the ones implemented in ``deploy`` through ``kvision.cli.build_parser``'s extension
hook, so the dependency points one way (deploy -> kvision). The console script ``kvision`` runs
:func:`main`.
"""

from __future__ import annotations

import sys


def add_deploy_commands(sub) -> None:
    """Add the deploy commands to ``kvision``'s sub-parsers (lazy imports in the handlers)."""
    import importlib

    from deploy.tools import convert, inspect_tflite

    # The packages re-export functions named like these modules: import the modules themselves.
    benchmark_cli = importlib.import_module("deploy.benchmark.cli")
    server_main = importlib.import_module("deploy.server.main")

    p = sub.add_parser("benchmark", help="every artifact x runtime x threads: status, size, "
                       "accuracy, latency, throughput, memory")  # fmt: skip
    benchmark_cli.build_parser(p)
    p.set_defaults(handler=benchmark_cli.run_from_args)

    p = sub.add_parser("serve", help="TF Serving's REST API for a SavedModel or .tflite")
    server_main.build_parser(p)
    p.set_defaults(handler=server_main.serve_from_args)

    p = sub.add_parser(
        "convert", help="SavedModel/.keras/.h5/.hdf5 -> TFLite variants, every output verified"
    )
    convert.build_parser(p)
    p.set_defaults(handler=convert.run_from_args)

    p = sub.add_parser(
        "inspect", help="named inputs/outputs, size (+ ops, tensors, quantization of a .tflite)"
    )
    inspect_tflite.build_parser(p)
    p.set_defaults(handler=inspect_tflite.run_from_args, needs_tensorflow=False)


def main(argv: list[str] | None = None) -> int:
    from kvision.cli import main as kvision_main

    return kvision_main(argv, extensions=(add_deploy_commands,))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
