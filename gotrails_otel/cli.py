"""The ``gotrails-otel`` command."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from . import __version__
from .schema import trail_schema


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``gotrails-otel`` command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="gotrails-otel", description="Audit trails from OpenTelemetry spans.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("schema", help="print the JSON Schema (draft 2020-12) of the trail document")
    demo = commands.add_parser("demo", help="run a payment service with gotrails and show the trails of its requests")
    demo.add_argument(
        "--output", metavar="PATH", help="where to append the trails as JSON lines (default: a temp file)"
    )
    from .view import add_arguments as add_view_arguments

    add_view_arguments(
        commands.add_parser(
            "view",
            help="show trails from JSON lines: a waterfall in the terminal, --json, or --html OUT",
            description="Show trails from JSON lines (files, rotated files, stdin) as a waterfall in the terminal, "
            "pass the selected ones on unchanged (--json), or write one self-contained HTML page (--html OUT). "
            "Lines that are not trails are reported on stderr and skipped.",
        )
    )
    args = parser.parse_args(argv)
    if args.command == "schema":
        sys.stdout.write(json.dumps(trail_schema(), indent=2) + "\n")
        return 0
    if args.command == "view":
        from .view import run as run_view

        return run_view(args)
    if args.command == "demo":
        from .demo.run import main as run_demo

        return run_demo(args.output)
    parser.print_help()
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
