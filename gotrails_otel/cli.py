"""The ``gotrails-otel`` command."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import __version__
from .schema import trail_schema

if TYPE_CHECKING:
    from .verify import Report


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``gotrails-otel`` command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "verify":
        return _verify(args)
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


def build_parser() -> argparse.ArgumentParser:
    """The ``gotrails-otel`` argument parser: the commands ``schema``, ``demo``, ``verify`` and ``view``."""
    parser = argparse.ArgumentParser(prog="gotrails-otel", description="Audit trails from OpenTelemetry spans.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("schema", help="print the JSON Schema (draft 2020-12) of the trail document")
    demo = commands.add_parser("demo", help="run a payment service with gotrails and show the trails of its requests")
    demo.add_argument(
        "--output", metavar="PATH", help="where to append the trails as JSON lines (default: a temp file)"
    )
    _add_verify(commands)
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
    return parser


_KEY_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_PROGRESS_MIN_BYTES = 16 * 1024 * 1024


def _key_arg(value: str) -> tuple[str, bytes]:
    """``ID=KEY`` (never echoed in an error: it holds a secret)."""
    key_id, sep, key = value.partition("=")
    if not sep or not _KEY_ID.fullmatch(key_id) or not key:
        raise argparse.ArgumentTypeError("expected ID=KEY with an id of letters, digits or ._:- (value not shown)")
    return key_id, key.encode("utf-8")


def _key_file_arg(value: str) -> tuple[str, bytes]:
    """``ID=PATH``: the key is the file's bytes without a final newline."""
    key_id, sep, path = value.partition("=")
    if not sep or not _KEY_ID.fullmatch(key_id) or not path:
        raise argparse.ArgumentTypeError("expected ID=PATH with an id of letters, digits or ._:-")
    try:
        with open(path, "rb") as stream:
            key = stream.read().rstrip(b"\r\n")
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read the key file {path}: {exc.strerror}") from None
    if not key:
        raise argparse.ArgumentTypeError(f"the key file {path} is empty")
    return key_id, key


def _add_verify(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    verify = commands.add_parser(
        "verify",
        help="check the hash chains of JSON-lines trail files, every link",
        description=(
            "Check every record and every link of the hash chains in JSON-lines trail files (give rotated files "
            "oldest first: trails.jsonl.2 trails.jsonl.1 trails.jsonl). Keys come from --key, --key-file and "
            "GOTRAILS_HMAC_KEY or GOTRAILS_HMAC_KEY_FILE (with GOTRAILS_HMAC_KEY_ID, default 'default'). Exit status "
            "0 only when everything verifies, 1 when a problem is found, 2 on a usage error."
        ),
    )
    verify.add_argument("files", nargs="+", metavar="FILE", help="JSON-lines files (.gz allowed), oldest first")
    verify.add_argument("--json", action="store_true", help="print one JSON report instead of the text report")
    verify.add_argument(
        "--key", action="append", default=[], type=_key_arg, metavar="ID=KEY", help="an HMAC key and its id"
    )
    verify.add_argument(
        "--key-file",
        action="append",
        default=[],
        type=_key_file_arg,
        metavar="ID=PATH",
        help="an HMAC key read from a file (kept out of the process list), and its id",
    )
    verify.add_argument(
        "--require-final", action="store_true", help="report chains without a final (shutdown) checkpoint"
    )
    verify.add_argument(
        "--allow-missing-start",
        action="store_true",
        help="accept chains whose first records are not in the files (older rotated files already removed)",
    )
    verify.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: on a terminal, for inputs over 16 MiB)",
    )


def _verify(args: argparse.Namespace) -> int:
    from .verify import verify_files

    keys: dict[str, bytes] = {}
    env_id = os.environ.get("GOTRAILS_HMAC_KEY_ID") or "default"
    env_key = os.environ.get("GOTRAILS_HMAC_KEY")
    env_key_file = os.environ.get("GOTRAILS_HMAC_KEY_FILE", "").strip()
    if env_key:
        keys[env_id] = env_key.encode("utf-8")
    elif env_key_file:
        try:
            keys[env_id] = _key_file_arg(f"{env_id}={env_key_file}")[1]
        except argparse.ArgumentTypeError as exc:
            sys.stderr.write(f"gotrails-otel verify: GOTRAILS_HMAC_KEY_FILE: {exc}\n")
            return 2
    keys.update(dict([*args.key_file, *args.key]))
    sizes = []
    for path in args.files:
        try:
            sizes.append(os.path.getsize(path))
        except OSError as exc:
            sys.stderr.write(f"gotrails-otel verify: cannot read {path}: {exc.strerror}\n")
            return 2
    show = args.progress if args.progress is not None else sys.stderr.isatty() and sum(sizes) >= _PROGRESS_MIN_BYTES
    options = (args.require_final, args.allow_missing_start)
    try:
        if show:
            report = _with_progress(args.files, keys, sum(sizes), options)
        else:
            report = verify_files(args.files, keys, require_final=options[0], allow_missing_start=options[1])
    except OSError as exc:
        sys.stderr.write(f"gotrails-otel verify: {exc}\n")
        return 2
    if args.json:
        sys.stdout.write(json.dumps(report.to_json(), indent=2) + "\n")
    else:
        sys.stdout.write(report.to_text())
    return 0 if report.ok else 1


def _with_progress(files: list[str], keys: dict[str, bytes], total: int, options: tuple[bool, bool]) -> Report:
    from .verify import verify_files

    require_final, allow_missing_start = options

    try:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
    except ImportError:  # rich is optional (pip install 'gotrails-otel[verify]')
        return verify_files(files, keys, require_final=require_final, allow_missing_start=allow_missing_start)
    columns = (TextColumn("verifying"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("verify", total=total)
        return verify_files(
            files,
            keys,
            require_final=require_final,
            allow_missing_start=allow_missing_start,
            progress=lambda n: progress.advance(task, n),
        )


if __name__ == "__main__":
    raise SystemExit(main())
