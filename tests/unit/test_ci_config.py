"""CI wiring: the GitHub workflow runs every tox env, and the gate job has a stable name."""

from __future__ import annotations

import configparser
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _tox_envs() -> set[str]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "tox.ini")
    listed = {
        e.strip() for e in parser["tox"]["env_list"].replace("\n", ",").split(",") if e.strip()
    }
    sections = {s.split(":", 1)[1] for s in parser.sections() if s.startswith("testenv:")}
    return listed | sections


def _workflow() -> dict:
    return yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())


def _job_commands(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in job.get("steps", []))


def test_every_tox_env_has_a_workflow_job():
    jobs = _workflow()["jobs"]
    for env in _tox_envs():
        running = [name for name, job in jobs.items() if f"tox -e {env}" in _job_commands(job)]
        assert running, f"no workflow job runs `tox -e {env}`"


def test_gate_job_has_the_stable_name_branch_protection_requires():
    jobs = _workflow()["jobs"]
    assert jobs["gate"]["name"] == "gate"
    assert "tox -e gate" in _job_commands(jobs["gate"])


def test_bench_runs_only_on_schedule_or_by_hand():
    workflow = _workflow()
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as True
    assert "schedule" in triggers and "workflow_dispatch" in triggers
    assert "schedule" in workflow["jobs"]["bench"]["if"]
    assert "pull_request" not in workflow["jobs"]["bench"]["if"]


def test_plain_tox_runs_everything_but_bench():
    parser = configparser.ConfigParser()
    parser.read(ROOT / "tox.ini")
    listed = {e.strip() for e in parser["tox"]["env_list"].split(",")}
    assert listed == {"lint", "unit", "integration", "gate", "docs", "kit-examples"}


def test_docs_env_installs_the_docs_extra():
    """The docs env skips installing the package (and torch), so it lists the extra's deps."""
    parser = configparser.ConfigParser()
    parser.read(ROOT / "tox.ini")
    env_deps = {d.strip() for d in parser["testenv:docs"]["deps"].splitlines() if d.strip()}
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert env_deps == set(extra["docs"])
    assert "mkdocs build --strict" in parser["testenv:docs"]["commands"]


def _readme_commands() -> list[str]:
    """Commands of the README's first code block (comments stripped)."""
    text = (ROOT / "README.md").read_text()
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_starts_with_the_main_job_and_the_test_command():
    commands = _readme_commands()
    assert len(commands) == 2
    assert commands[0].endswith("cxrbox train")
    assert commands[1].endswith("tox")


def test_ci_script_runs_the_readme_test_command():
    script_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert _readme_commands()[1] in script_lines


def test_bench_gate_runs_on_pull_requests_against_the_base_commit():
    job = _workflow()["jobs"]["bench-gate"]
    assert job["name"] == "bench-gate"
    assert "pull_request" in job["if"]
    commands = _job_commands(job)
    assert "github.event.pull_request.base.sha" in commands
    assert ".ci/bench-gate ../base/src" in commands


def test_bench_gate_script_saves_the_base_and_compares_with_a_slowdown_bound():
    script = (ROOT / ".ci" / "bench-gate").read_text()
    assert "--save-json" in script and "--compare" in script and "--max-slowdown" in script
    assert 'PYTHONPATH="$base_src"' in script
