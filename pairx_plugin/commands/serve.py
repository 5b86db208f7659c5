"""``pairx-plugin serve``: run the Wildbook-compatible explain service (see docs/service.md)."""
from __future__ import annotations

import argparse

from . import EXIT_OK


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be between 1 and 65535, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the Wildbook-compatible PAIR-X explain service (POST /explain/)",
        description="Serve POST /explain/ (Wildbook's PAIR-X request) and GET /artifacts/{id}. Image URIs "
                    "must lie under an --image-root (or the config's image_roots); http(s) images only "
                    "when the config enables them.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=8000, help="port (default 8000)")
    parser.add_argument("--image-root", action="append", dest="image_roots", default=[], metavar="DIR",
                        help="directory image URIs may point into (repeatable; added to the config's roots)")
    parser.add_argument("--config", metavar="FILE", help="service settings (YAML/JSON), see docs/service.md")
    parser.add_argument("--output-dir", metavar="DIR", help="artifact store root (overrides the config)")
    parser.set_defaults(handler=run)


def build_config(args: argparse.Namespace):
    """The ``ServiceConfig`` from ``--config`` plus the command-line options."""
    from ..service import ServiceConfig

    base = ServiceConfig.load(args.config) if args.config else ServiceConfig()
    roots = list(base.image_roots) + list(args.image_roots or [])
    overrides = {"image_roots": roots}
    if args.output_dir:
        overrides["output_dir"] = args.output_dir
    return ServiceConfig.load({**base.model_dump(), **overrides})


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ..service import create_app

    app = create_app(build_config(args))
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return EXIT_OK
