"""One import namespace: the wheel holds only ``polyclip/``, and no module loads twice."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("encoders", "training", "export", "service", "bench")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*cmd, "-w", str(out), str(ROOT)], check=True, capture_output=True)
    return next(out.glob("polyclip-*.whl"))


def test_the_wheel_holds_only_the_polyclip_namespace(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"polyclip"}
    for folder in FOLDERS:
        assert f"polyclip/{folder}/__init__.py" in names
    assert "polyclip/training/recipes/default.yaml" in names
    assert "polyclip/bench/peers/st_server.py" in names


@pytest.mark.timeout(300)
def test_a_fresh_venv_imports_polyclip_names_only(wheel: Path, tmp_path: Path) -> None:
    """Installed from the wheel, outside the repo: ``polyclip.service`` yes, ``service`` no."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    install = [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)]
    subprocess.run(install, check=True, capture_output=True)
    probe = (
        "import importlib.util as u, polyclip.service.app, polyclip.encoders.space\n"
        f"assert all(u.find_spec(n) is None for n in {FOLDERS!r}), 'a bare package is importable'\n"
        "print(polyclip.service.app.__file__)"
    )
    # The project's dependencies come from this environment; its .pth files (the editable
    # install's path hooks) are not run for a PYTHONPATH entry.
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    done = subprocess.run(
        [str(python), "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith(str(venv))


def test_no_module_is_imported_under_a_bare_name_from_the_repo_root() -> None:
    """From the repository root the folders are importable as ``service`` etc. too; nothing in
    polyclip may use those names (two copies: two metric registries, failing isinstance)."""
    probe = (
        "import importlib, pkgutil, sys, polyclip\n"
        "for m in pkgutil.walk_packages(polyclip.__path__, 'polyclip.'):\n"
        "    importlib.import_module(m.name)\n"
        f"bare = sorted(n for n in sys.modules if n.split('.')[0] in {FOLDERS!r})\n"
        "assert not bare, bare\n"
        "print(len([n for n in sys.modules if n.startswith('polyclip.')]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout.strip()) > 40  # every module was imported


def imports(path: Path) -> list[str]:
    """Every module a file imports, at the top or inside a function."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
    return found


def test_bench_is_an_http_harness_and_imports_no_other_stage() -> None:
    """``polyclip bench`` talks to a server over HTTP: no training, export or service code."""
    for path in sorted((ROOT / "bench").rglob("*.py")):
        for name in imports(path):
            stage = name.split(".")[1] if name.startswith("polyclip.") else ""
            assert stage not in ("training", "export", "service"), f"{path}: {name}"


def test_the_service_core_knows_no_http() -> None:
    """TEI's split: routes and errors.py speak HTTP; the core and its backends do not."""
    core = ("core", "collections", "domain", "registry", "batcher", "images", "config",
            "filters", "store", "store_edge", "store_server", "metrics")  # fmt: skip
    for name in core:
        path = ROOT / "service" / f"{name}.py"
        for imported in imports(path):
            assert imported.split(".")[0] not in ("fastapi", "starlette", "uvicorn"), path
            assert not imported.startswith(
                ("polyclip.service.errors", "polyclip.service.routes")
            ), path
