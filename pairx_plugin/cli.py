"""The ``pairx-plugin`` command line: built-in commands plus commands contributed by adapters.

Built-in commands are the modules named in :data:`BUILTIN_COMMANDS` under
``pairx_plugin.commands`` (one missing module is skipped, so the CLI works while a command is still
being written). Adapters add commands through the entry-point group :data:`ENTRY_POINT_GROUP`; each
entry point is a callable ``register(subparsers)``. A broken one costs only its own command: a
warning on stderr, never a crash. The core never imports an adapter by name.

Exit codes: 0 success, 1 the work failed, 2 bad input (one ``pairx-plugin: error: ...`` line on
stderr, no traceback).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata

from .commands import EXIT_BAD_INPUT
from .errors import PairXError

PROG = "pairx-plugin"
BUILTIN_COMMANDS: tuple[str, ...] = ("explain", "layers", "decisions", "evaluate", "calibrate", "render", "store")
ENTRY_POINT_GROUP = "pairx_plugin.commands"


def _version() -> str:
    try:
        return metadata.version("pairx-plugin")
    except metadata.PackageNotFoundError:
        from .versions import __version__

        return __version__


def _warn(message: str) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def discover_entry_points() -> Iterable[metadata.EntryPoint]:
    """Entry points of :data:`ENTRY_POINT_GROUP` in installed distributions (none when not installed)."""
    return metadata.entry_points(group=ENTRY_POINT_GROUP)


def _register_builtin(subparsers: argparse._SubParsersAction, name: str) -> None:
    module_name = f"{__package__}.commands.{name}"
    if importlib.util.find_spec(module_name) is None:
        return  # not written yet: skip quietly
    try:
        module = importlib.import_module(module_name)
        module.register(subparsers)
    except Exception as exc:  # noqa: BLE001 - one broken command must not take the CLI down
        _warn(f"built-in command {name!r} is unavailable ({type(exc).__name__}: {exc})")


def _register_entry_point(subparsers: argparse._SubParsersAction, entry_point: metadata.EntryPoint) -> None:
    try:
        register: Callable[[argparse._SubParsersAction], object] = entry_point.load()
        if not callable(register):
            raise TypeError(f"{entry_point.value} is not callable")
        register(subparsers)
    except Exception as exc:  # noqa: BLE001 - a broken plugin must not take the CLI down
        _warn(f"command plugin {entry_point.name!r} ({entry_point.value}) skipped: {type(exc).__name__}: {exc}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="PAIR-X explanations for animal re-identification matches.",
        epilog=f"Run '{PROG} COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name in BUILTIN_COMMANDS:
        _register_builtin(subparsers, name)
    try:
        entry_points = list(discover_entry_points())
    except Exception as exc:  # noqa: BLE001 - broken package metadata
        _warn(f"cannot read the {ENTRY_POINT_GROUP!r} entry points ({exc})")
        entry_points = []
    for entry_point in entry_points:
        _register_entry_point(subparsers, entry_point)
    return parser


def _one_line(message: object) -> str:
    return " ".join(str(message).split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version and usage errors
        return exit_.code if isinstance(exit_.code, int) else EXIT_BAD_INPUT
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    try:
        code = handler(args)
    except PairXError as exc:
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return 0 if code is None else int(code)


if __name__ == "__main__":
    sys.exit(main())
