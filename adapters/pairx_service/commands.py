"""``pairx-plugin serve``: run the explain service (contributed through ``pairx_plugin.commands``)."""

from __future__ import annotations

import argparse

from pairx_plugin.commands import EXIT_OK

from .config import ServiceConfig


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be between 1 and 65535, got {value}")
    return value


def register_serve(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="run the PAIR-X explain service (ml-service's POST /explain/)",
        description="Serve POST /explain/ (WildMe ml-service's PAIR-X request, as Wildbook sends it), "
        "GET /artifacts/{id} and GET /health. Image URIs must lie under an --image-root (or "
        "the config's image_roots); http(s) images only when the config enables them. Models "
        "(miewid-msv3, miewid-msv4.1, ...) are configured under 'models:' in --config.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--image-root",
        action="append",
        dest="image_roots",
        default=[],
        metavar="DIR",
        help="directory image URIs may point into (repeatable; added to the config's roots)",
    )
    parser.add_argument("--config", metavar="FILE", help="service settings (YAML/JSON), see docs/service.md")
    parser.add_argument("--output-dir", metavar="DIR", help="artifact store root (overrides the config)")
    parser.set_defaults(handler=run)
    return parser


def build_config(args: argparse.Namespace) -> ServiceConfig:
    """The ``ServiceConfig`` from ``--config`` plus the command-line options."""
    base = ServiceConfig.load(args.config)
    data = base.model_dump()
    data["image_roots"] = list(base.image_roots) + list(args.image_roots or [])
    if args.output_dir:
        data["output_dir"] = args.output_dir
    return ServiceConfig.load(data)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_app

    app = create_app(build_config(args))
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return EXIT_OK


__all__ = ["build_config", "register_serve", "run"]
