"""One import namespace: the wheel installs `reasonloop.*` only, and a project with its own `flows/`
and `tasks/` packages can run the CLI and a flow without either side shadowing the other."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import tomllib

from tests.procs.spawn import REPO

FOLDERS = ("flows", "tasks", "schemas", "storage", "trainers")


def _declared() -> tuple[list[str], dict[str, str]]:
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    return setuptools["packages"], setuptools["package-dir"]


def test_every_package_folder_is_declared() -> None:
    packages, package_dir = _declared()
    on_disk = {"reasonloop"}
    for folder in FOLDERS:
        assert package_dir[f"reasonloop.{folder}"] == folder
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO).as_posix().replace("/", ".")
            on_disk.add(f"reasonloop.{rel}")
    assert sorted(packages) == sorted(on_disk)


def test_wheel_holds_one_namespace(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    [wheel] = tmp_path.glob("reasonloop-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert tops == {"reasonloop"}
    for module in ("reasonloop/flows/cli.py", "reasonloop/storage/store.py", "reasonloop/tasks/engines/base.py"):
        assert module in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "reasonloop = reasonloop.flows.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def _user_project(path: Path) -> Path:
    """A Prefect user's project: its own `flows`, `tasks` and `storage` packages, with modules of
    the names ours use, each of which fails loudly if imported by mistake."""
    for package in ("flows", "tasks", "storage"):
        (path / package).mkdir(parents=True)
        (path / package / "__init__.py").write_text("OWNER = 'user'\n")
    for module in ("flows/cli.py", "flows/retrain.py", "tasks/engines.py", "storage/store.py"):
        (path / module).write_text("raise ImportError('the user project was imported instead of reasonloop')\n")
    return path


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), OMP_WAIT_POLICY="PASSIVE")
    return env


def test_cli_runs_from_a_project_with_its_own_flows_and_tasks(tmp_path: Path) -> None:
    project = _user_project(tmp_path / "project")
    reasonloop = Path(sys.executable).with_name("reasonloop")
    for command in ([str(reasonloop)], [sys.executable, "-m", "reasonloop.flows.cli"]):
        out = subprocess.run(
            [*command, "store", "stats", "--root", str(tmp_path / "store")],
            cwd=project, env=_env(tmp_path), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
        assert "problems" in out.stdout


FLOW_SCRIPT = """
import sys
sys.path.insert(0, "")  # the project's own packages first, as `python -c` in a project does
import flows, tasks
from reasonloop.flows.prefect_env import configure_prefect
from reasonloop.storage import ReplayStore
configure_prefect(sys.argv[1])
from reasonloop.flows.retrain import check_retrain
ReplayStore(sys.argv[2]).write("problems", [{"prompt": "1+1=", "answer": "2", "answer_type": "exact"}])
due = check_retrain(root=sys.argv[2], threshold=1, tables=["problems"])
import reasonloop.flows, reasonloop.tasks
assert flows.OWNER == "user" and tasks.OWNER == "user", "the project's packages were shadowed"
assert reasonloop.flows.__file__ != flows.__file__
print("due", due["due"])
"""


def test_a_flow_runs_from_a_project_with_its_own_flows_and_tasks(tmp_path: Path) -> None:
    project = _user_project(tmp_path / "project")
    out = subprocess.run(
        [sys.executable, "-c", FLOW_SCRIPT, str(tmp_path / "prefect-home"), str(tmp_path / "store")],
        cwd=project, env=_env(tmp_path), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "due True" in out.stdout
