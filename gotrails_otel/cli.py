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
    args = parser.parse_args(argv)
    if args.command == "schema":
        sys.stdout.write(json.dumps(trail_schema(), indent=2) + "\n")
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
