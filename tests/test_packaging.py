"""The project's own promises about installing it: the README's commands are what CI runs, the OpenTelemetry
packages are declared in lockstep, and the classifiers name the Pythons that CI tests."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
# OpenTelemetry's core packages are versioned 1.x, its contrib packages 0.x b; each side moves as one.
CORE = ("opentelemetry-api", "opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http")


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text("utf-8")
    return re.findall(r"```bash\n(python -m pip install[^\n]*)\n```", text)


def test_ci_runs_the_readme_test_command_exactly() -> None:
    demo, tests = _readme_commands()[:2]
    assert demo.endswith("gotrails-otel demo") and tests.endswith("pytest")
    ci = (ROOT / ".ci" / "run").read_text("utf-8")
    body = re.search(r"readme_tests\(\) \{\n\s*(.*?)\n\}", ci)
    assert body is not None, ".ci/run lost its readme_tests function"
    assert body.group(1).strip() == tests


def _all_requirements() -> list[Requirement]:
    project = PYPROJECT["project"]
    found = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        found.extend(Requirement(r) for r in extra if not r.startswith("gotrails-otel"))
    return found


def test_opentelemetry_packages_are_declared_in_lockstep() -> None:
    contrib: dict[str, set[str]] = {}
    core: dict[str, set[str]] = {}
    for requirement in _all_requirements():
        if not requirement.name.startswith("opentelemetry-"):
            continue
        side = core if requirement.name in CORE else contrib
        side.setdefault(str(requirement.specifier), set()).add(requirement.name)
    assert len(contrib) == 1, f"contrib packages with different version ranges: {contrib}"
    assert len(core) == 1, f"core packages with different version ranges: {core}"
    (contrib_range,) = contrib
    (core_range,) = core
    # Contrib 0.N b pairs with core 1.(N-21): the lower bounds must name one pair.
    contrib_low = int(re.search(r">=0\.(\d+)b", contrib_range).group(1))  # type: ignore[union-attr]
    core_low = int(re.search(r">=1\.(\d+)", core_range).group(1))  # type: ignore[union-attr]
    assert contrib_low - core_low == 21, (contrib_range, core_range)


def test_classifiers_name_the_supported_pythons() -> None:
    project = PYPROJECT["project"]
    assert project["requires-python"] == ">=3.10"
    listed = sorted(
        c.rsplit(" :: ", 1)[1]
        for c in project["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    )
    assert listed == ["3.10", "3.11", "3.12", "3.13"]
    ci = (ROOT / ".ci" / "run").read_text("utf-8")
    tested = re.search(r'^VERSIONS="([^"]+)"', ci, re.MULTILINE)
    assert tested is not None and sorted(tested.group(1).split()) == listed
