"""What a release ships: classifiers PyPI accepts, one set of project URLs, and a wheel and sdist that build, pass
``twine check --strict`` and, installed into a fresh virtual environment (not editable), run the commands users run
first: ``gotrails-otel demo``, ``gotrails-otel view`` on the demo's output and ``gotrails-otel schema``, and the
sdist's tests of the core against the installed package."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import orjson
import pytest
import trove_classifiers
import yaml

from gotrails_otel import trail_schema

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
PACKAGE = ROOT / "gotrails_otel"


def _run(
    command: list[str | Path], timeout: float, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, timeout=timeout, check=False, env=env, cwd=cwd
    )
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def test_classifiers_are_known_to_pypi() -> None:
    unknown = [c for c in PROJECT["classifiers"] if c not in trove_classifiers.classifiers]
    assert not unknown, f"PyPI rejects an upload with unknown classifiers: {unknown}"
    assert not [c for c in PROJECT["classifiers"] if c.startswith("License ::")], "the SPDX `license` says it"


def test_project_urls_and_the_documentation_site_agree() -> None:
    urls = PROJECT["urls"]
    assert {"Homepage", "Documentation", "Repository", "Issues", "Changelog"} <= set(urls)
    mkdocs = (ROOT / "mkdocs.yml").read_text("utf-8")
    assert f"repo_url: {urls['Repository']}\n" in mkdocs
    assert f"site_url: {urls['Documentation']}\n" in mkdocs
    changelog = (ROOT / "CHANGELOG.md").read_text("utf-8")
    assert f"]: {urls['Repository']}/" in changelog


def test_the_changelog_has_an_entry_for_the_current_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text("utf-8")
    assert "## [Unreleased]" in changelog
    assert f"## [{PROJECT['version']}] - " in changelog, "add the version's section to CHANGELOG.md"


def test_the_github_workflow_runs_what_ci_runs() -> None:
    """.github/workflows/ci.yml mirrors .ci/run: the same Pythons, checks, server packages and test command."""
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text("utf-8"))
    ci = (ROOT / ".ci" / "run").read_text("utf-8")
    versions = re.search(r'^VERSIONS="([^"]+)"', ci, re.MULTILINE)
    assert versions is not None
    jobs = workflow["jobs"]
    assert jobs["tests"]["strategy"]["matrix"]["python"] == versions.group(1).split()
    runs = {name: "\n".join(step.get("run", "") for step in job["steps"]) for name, job in jobs.items()}
    readme_tests = re.search(r"readme_tests\(\) \{\n\s*(.*?)\n\}", ci)
    assert readme_tests is not None and readme_tests.group(1).strip() in runs["tests"]
    for check in ("ruff check .", "ruff format --check .", "mypy", "mkdocs build --strict"):
        assert check in ci and check in runs["lint"], check
    for package in ("redis-server", "postgresql", "chromium"):
        assert package in ci and package in runs["tests"], package
    assert "python -m build" in runs["build"] and "twine check --strict" in runs["build"]


def _source_packages() -> set[str]:
    return {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in PACKAGE.rglob("__init__.py")
        if ".venv" not in init.parts
    }


@pytest.mark.service
def test_the_built_wheel_runs_the_cli_from_a_fresh_virtual_environment(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--outdir", dist, ROOT], timeout=600)  # the sdist, then the wheel from it
    [wheel] = dist.glob("*.whl")
    [sdist] = dist.glob("*.tar.gz")
    _run([sys.executable, "-m", "twine", "check", "--strict", wheel, sdist], timeout=120)

    names = set(zipfile.ZipFile(wheel).namelist())
    shipped_packages = {n.rsplit("/", 1)[0].replace("/", ".") for n in names if n.endswith("/__init__.py")}
    assert shipped_packages == _source_packages()
    for source in PACKAGE.rglob("*.py"):
        assert source.relative_to(ROOT).as_posix() in names
    assert {"gotrails_otel/py.typed", "gotrails_otel/trail.schema.json"} <= names
    with tarfile.open(sdist) as archive:
        members = {m.name.split("/", 1)[1] for m in archive.getmembers() if "/" in m.name}
    assert {"README.md", "LICENSE", "CHANGELOG.md", "pyproject.toml", "gotrails_otel/trail.schema.json"} <= members
    assert "tests/conftest.py" in members and "docs/griffe_rst.py" in members

    # A fresh environment with the wheel and the demo's extras, at the versions this environment tests with.
    env_dir = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", env_dir], timeout=120)
    bindir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    frozen = _run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], timeout=120).stdout
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(
        "".join(line + "\n" for line in frozen.splitlines() if "==" in line and not line.startswith("gotrails")),
        "utf-8",
    )
    python = bindir / "python"
    _run([python, "-m", "pip", "install", "-q", "-c", constraints, f"{wheel}[demo]"], timeout=900)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "GOTRAILS_", "PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    where = _run(
        [python, "-c", "import gotrails_otel; print(gotrails_otel.__file__, gotrails_otel.__version__)"],
        60,
        env=env,
        cwd=tmp_path,
    )
    location, version = where.stdout.split()
    assert Path(location).is_relative_to(env_dir), location  # the wheel's copy, not this checkout
    assert version == PROJECT["version"]

    cli = bindir / "gotrails-otel"
    output = tmp_path / "trails.jsonl"
    demo = _run([cli, "demo", "--output", output], timeout=300, env=env, cwd=tmp_path)
    assert "Traceback" not in demo.stdout + demo.stderr
    records = [orjson.loads(line) for line in output.read_bytes().splitlines()]
    trails = [r for r in records if "record" not in r]  # not the hash chain's checkpoints
    assert [t["response"]["status"] for t in trails if t["request"].get("path") == "/v1/payments"] == [
        201,
        422,
        502,
        201,
    ]

    view = _run([cli, "view", output], timeout=120, env={**env, "COLUMNS": "160"}, cwd=tmp_path)
    assert "/v1/payments" in view.stdout and "ledger" in view.stdout

    schema = _run([cli, "schema"], timeout=60, env=env, cwd=tmp_path)
    assert json.loads(schema.stdout) == trail_schema()

    # The sdist's own tests against the installed wheel: the core, masking, public-API and verify suites (the
    # service suites run against the checkout). Only tests/, pyproject.toml and README.md are unpacked, so nothing
    # but the installed package can be imported.
    _run([python, "-m", "pip", "install", "-q", "-c", constraints, f"{wheel}[test]"], timeout=900)
    suite = tmp_path / "suite"
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            inner = member.name.split("/", 1)[1] if "/" in member.name else ""
            if member.isfile() and (inner.startswith("tests/") or inner in ("pyproject.toml", "README.md")):
                target = suite / inner
                target.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)
                assert source is not None
                target.write_bytes(source.read())
    selected = [f"tests/{name}.py" for name in _WHEEL_SUITES]
    code = "import gotrails_otel, pytest, sys; print(gotrails_otel.__file__); sys.exit(pytest.main(sys.argv[1:]))"
    result = _run(
        [python, "-c", code, "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *selected],
        timeout=900,
        env=env,
        cwd=suite,
    )
    assert Path(result.stdout.splitlines()[0]).is_relative_to(env_dir), result.stdout[:500]
    assert re.search(r"\b\d+ passed\b", result.stdout) and " failed" not in result.stdout, result.stdout[-3000:]


_WHEEL_SUITES = (
    "test_processor",
    "test_redact",
    "test_public_api",
    "test_verify",
    "test_types",
)
