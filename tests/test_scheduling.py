"""The users' scheduled workflow and the Dagster project, checked without running them (scripts/e2e_workflow.sh and
scripts/e2e_orchestration.sh run them for real): the workflow's schedule, concurrency and secrets; the harness
that runs its steps refuses what it cannot emulate; the orchestration project declares the tap like the README."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.test_packaging import extractor

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "examples/github-actions/tap-backstory.yml"
HARNESS = ROOT / "scripts/run_workflow.py"


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def test_workflow_is_scheduled_dispatchable_and_never_overlaps():
    flow = workflow()
    triggers = flow[True]  # YAML 1.1 reads the key `on` as True
    assert triggers["schedule"][0]["cron"] and "workflow_dispatch" in triggers
    assert flow["concurrency"]["cancel-in-progress"] is False and flow["concurrency"]["group"]


def test_workflow_takes_credentials_and_state_backend_from_secrets():
    env = workflow()["jobs"]["elt"]["env"]
    for name in ("TAP_BACKSTORY_ACTIVITY_CLIENT_SECRET", "TAP_BACKSTORY_OBJECT_CLIENT_SECRET",
                 "TAP_BACKSTORY_CONTACTBASED_API_KEY", "TARGET_POSTGRES_PASSWORD", "MELTANO_STATE_BACKEND_URI",
                 "MELTANO_STATE_BACKEND_S3_AWS_SECRET_ACCESS_KEY"):
        assert env[name] == f"${{{{ secrets.{name} }}}}", name
    steps = "\n".join(step.get("run", "") for step in workflow()["jobs"]["elt"]["steps"])
    assert "meltano[s3]" in steps and "meltano run tap-backstory target-postgres" in steps


def run_harness(tmp_path: Path, flow: dict, secrets: str) -> subprocess.CompletedProcess:
    (tmp_path / "flow.yml").write_text(yaml.safe_dump(flow))
    (tmp_path / "secrets.env").write_text(secrets)
    return subprocess.run(
        [sys.executable, str(HARNESS), str(tmp_path / "flow.yml"), "--job", "j", "--checkout", str(tmp_path),
         "--python", str(Path(sys.prefix)), "--secrets", str(tmp_path / "secrets.env")],
        capture_output=True, text=True, check=False, env={**os.environ, "TAP_BACKSTORY_LEAK": "x"})


def test_harness_runs_steps_with_secrets_github_env_and_path(tmp_path):
    flow = {"jobs": {"j": {"env": {"TOKEN": "${{ secrets.TOKEN }}", "UNSET": "${{ secrets.UNSET }}", "PLAIN": "p"},
                           "steps": [{"uses": "actions/checkout@v4"},
                                     {"run": "echo NEXT=from-step-1 >> \"$GITHUB_ENV\"\n"
                                             "mkdir -p bin && printf '#!/bin/sh\\necho tool ran\\n' > bin/tool\n"
                                             "chmod +x bin/tool && echo \"$PWD/bin\" >> \"$GITHUB_PATH\""},
                                     {"run": "echo \"$TOKEN/$PLAIN/$NEXT/[$UNSET]/[${TAP_BACKSTORY_LEAK:-}]\"; tool"},
                                     {"run": "exit 7"}, {"run": "echo never"}]}}}
    done = run_harness(tmp_path, flow, "TOKEN=s3cret\nUNSET=\n")
    assert done.returncode == 7, done.stderr
    assert "s3cret/p/from-step-1/[]/[]" in done.stdout and "tool ran" in done.stdout
    assert "never" not in done.stdout


def test_harness_refuses_what_it_cannot_emulate(tmp_path):
    base = {"env": {"A": "${{ secrets.A }}"}, "steps": [{"run": "true"}]}
    cases = {
        "uses docker/login-action@v3": {**base, "steps": [{"uses": "docker/login-action@v3"}]},
        "only ${{ secrets.NAME }}": {**base, "env": {"A": "${{ vars.A }}"}},
        "does not use the secrets ['B']": base,
        "expression, env or shell": {**base, "steps": [{"run": "echo ${{ github.sha }}"}]},
    }
    for message, job in cases.items():
        done = run_harness(tmp_path, {"jobs": {"j": job}}, "A=1\nB=2\n" if "'B'" in message else "A=1\n")
        assert done.returncode != 0 and message in done.stderr, (message, done.stderr)


def test_orchestration_project_declares_the_tap_like_the_repository():
    project = yaml.safe_load((ROOT / "orchestration/meltano.yml").read_text())
    extractors = {p["name"]: p for p in project["plugins"]["extractors"]}
    tap = extractors["tap-backstory"]
    assert [s["name"] for s in tap["settings"]] == [s["name"] for s in extractor()["settings"]]
    for name, plugin in extractors.items():
        if name == "tap-backstory":
            continue
        org, _, job = name.partition("--")
        assert plugin["inherit_from"] == (org if job else "tap-backstory"), name
        if job:
            assert plugin["select"], name
            backstory = {s.split(".")[0] for s in plugin["select"]} & {"activities", "enriched_contacts"}
            assert (plugin.get("config", {}).get("max_concurrent_jobs") == 1) == bool(backstory), name
