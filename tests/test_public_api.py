"""The public API of 1.x is frozen: these lists change only with a deliberate, documented (CHANGELOG) decision.

Adding a name is a minor release; removing or renaming one is a major release. The same holds for the command line's
commands and options and for the entry points other tools load by name.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import typing
from pathlib import Path

import pytest

from gotrails_otel.cli import build_parser

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent

PUBLIC: dict[str, list[str]] = {
    "gotrails_otel": [
        "CaptureStore",
        "ConfigError",
        "FileTrailExporter",
        "FlushReason",
        "GotrailsPropagator",
        "InMemoryTrailExporter",
        "IntegrationHandle",
        "OTelLogTrailExporter",
        "SealedTrail",
        "StdoutTrailExporter",
        "StepHandle",
        "TrailConfig",
        "TrailExporter",
        "TrailProcessor",
        "__version__",
        "end_step",
        "instrument",
        "integration",
        "kafka_record",
        "record_error",
        "set_metadata",
        "start_step",
        "step",
        "trace_step",
        "trail_schema",
        "uninstrument",
    ],
    "gotrails_otel.config": ["ConfigError", "TrailConfig"],
    "gotrails_otel.exporters": [
        "EVENT_NAME",
        "ExportError",
        "FileTrailExporter",
        "InMemoryTrailExporter",
        "OTelLogTrailExporter",
        "StdoutTrailExporter",
        "TrailExporter",
    ],
    "gotrails_otel.hooks": ["LIBRARIES", "Library", "instrument_libraries", "uninstrument_libraries"],
    "gotrails_otel.testing": ["CapturedTrails", "Trail", "capture_trails"],
    "gotrails_otel.types": [
        "Entry",
        "EntryKind",
        "EntryPayload",
        "ErrorDetail",
        "ErrorEntry",
        "FlushReason",
        "Integration",
        "IntegrationType",
        "Integrity",
        "OTelIds",
        "Status",
        "Step",
        "Trail",
    ],
    "gotrails_otel.verify": ["ChainSummary", "PROBLEM_KINDS", "Problem", "Report", "verify_files"],
}

COMMANDS: dict[str, tuple[list[str], list[str]]] = {
    # command: (its options, its positional arguments)
    "schema": ([], []),
    "demo": (["--output"], []),
    "verify": (
        [
            "--allow-missing-start",
            "--json",
            "--key",
            "--key-file",
            "--no-progress",
            "--progress",
            "--require-final",
        ],
        ["files"],
    ),
    "view": (
        [
            "--errors",
            "--follow",
            "--html",
            "--json",
            "--last",
            "--path",
            "--request-id",
            "--slow",
            "--trace-id",
            "-f",
        ],
        ["files"],
    ),
}

ENTRY_POINTS = {
    "scripts": {"gotrails-otel": "gotrails_otel.cli:main"},
    "opentelemetry_pre_instrument": {"gotrails": "gotrails_otel.auto:pre_instrument"},
    "opentelemetry_post_instrument": {"gotrails": "gotrails_otel.auto:post_instrument"},
    "opentelemetry_propagator": {"gotrails": "gotrails_otel.propagation:GotrailsPropagator"},
    "pytest11": {"gotrails_otel": "gotrails_otel.pytest_plugin"},
}


@pytest.mark.parametrize("module_name", sorted(PUBLIC))
def test_public_names_are_pinned(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert sorted(module.__all__) == sorted(PUBLIC[module_name])
    assert len(set(module.__all__)) == len(module.__all__), "a name is listed twice"
    for name in module.__all__:
        assert hasattr(module, name), f"{module_name}.__all__ names {name}, which does not exist"


def test_the_top_level_package_reexports_the_same_objects() -> None:
    import gotrails_otel

    for module_name, names in PUBLIC.items():
        if module_name == "gotrails_otel":
            continue
        module = importlib.import_module(module_name)
        for name in set(names) & set(gotrails_otel.__all__):
            if (module_name, name) == ("gotrails_otel.types", "FlushReason"):
                continue  # the JSON value's type (a Literal) beside the enum: same values, checked below
            assert getattr(gotrails_otel, name) is getattr(module, name), f"{name} differs in {module_name}"


def test_the_flush_reason_enum_and_the_trail_type_name_the_same_values() -> None:
    from gotrails_otel import FlushReason, types

    assert {reason.value for reason in FlushReason} == set(typing.get_args(types.FlushReason))


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1
    return dict(actions[0].choices)


def test_cli_commands_and_options_are_pinned() -> None:
    found = {}
    for name, sub in _subcommands().items():
        options = sorted(o for a in sub._actions for o in a.option_strings if o not in ("-h", "--help"))
        positionals = [a.dest for a in sub._actions if not a.option_strings]
        found[name] = (options, positionals)
    assert found == COMMANDS


def test_entry_points_are_pinned() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {"scripts": project["scripts"], **project["entry-points"]}
    assert declared == ENTRY_POINTS
    for group in ENTRY_POINTS.values():
        for target in group.values():
            module_name, _, attr = target.partition(":")
            module = importlib.import_module(module_name)
            if attr:
                assert callable(getattr(module, attr)), target
