"""Run the `run:` steps of a GitHub Actions workflow job, as they are written, the way a runner would.

usage: python scripts/run_workflow.py WORKFLOW.yml --job JOB --checkout DIR --python VENV --secrets FILE
       [--stand-in FILE]

What the runner's actions do is the caller's part: `--checkout` is a fresh copy of the repository
(actions/checkout) and `--python` a fresh virtual environment of the Python the workflow asks for, put first on
PATH as actions/setup-python does (this harness's own environment is taken off PATH); any other `uses:` step is
refused, so a step this harness cannot run makes the check fail instead of being skipped.

The job's `env:` is applied with `${{ secrets.NAME }}` read from `--secrets` (KEY=VALUE lines; an unset secret is
the empty string, as on GitHub; a secret the workflow does not use is refused, so the check cannot pass on a
variable the workflow would never give); any other `${{ … }}` expression is refused. `--stand-in` adds variables
that point the run at stand-ins for the real services (the sandbox's API URLs, its fast poll interval, its
"today"): they may not name a variable the workflow sets. Each step runs as GitHub runs it,
`bash --noprofile --norc -eo pipefail STEP`, in the checkout, and `$GITHUB_ENV` / `$GITHUB_PATH` lines carry into
the later steps. Nothing of the caller's TAP_BACKSTORY_*, TARGET_*, MELTANO_* or AWS_* variables reaches a step:
only what the workflow gives it. Exits with the first failing step's code.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from dotenv import dotenv_values

SECRET = re.compile(r"^\$\{\{\s*secrets\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$")
EXPRESSION = re.compile(r"\$\{\{")
HANDLED_ACTIONS = ("actions/checkout@", "actions/setup-python@")
PRIVATE_PREFIXES = ("TAP_BACKSTORY_", "TARGET_", "MELTANO_", "AWS_", "GITHUB_")


def job_env(job: dict, secrets: dict[str, str]) -> dict[str, str]:
    env = {}
    for name, value in (job.get("env") or {}).items():
        text = str(value)
        secret = SECRET.match(text)
        if secret:
            env[name] = secrets.get(secret.group(1)) or ""
        elif EXPRESSION.search(text):
            raise SystemExit(f"run_workflow: env {name}: only ${{{{ secrets.NAME }}}} expressions are supported")
        else:
            env[name] = text
    return env


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines a step appended to $GITHUB_ENV (the one-line form)."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key: value for key, value in pairs}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("workflow", type=Path)
    parser.add_argument("--job", required=True)
    parser.add_argument("--checkout", type=Path, required=True)
    parser.add_argument("--python", type=Path, required=True)
    parser.add_argument("--secrets", type=Path, required=True)
    parser.add_argument("--stand-in", type=Path)
    args = parser.parse_args()

    workflow = yaml.safe_load(args.workflow.read_text())
    job = workflow["jobs"][args.job]
    secrets = {k: v or "" for k, v in dotenv_values(args.secrets).items()}
    env = {k: v for k, v in os.environ.items() if not k.startswith(PRIVATE_PREFIXES) and k != "VIRTUAL_ENV"}
    own_bin = str(Path(sys.prefix, "bin"))
    env["PATH"] = os.pathsep.join([str(args.python.resolve() / "bin"),
                                   *(d for d in env["PATH"].split(os.pathsep) if d != own_bin)])
    workflow_env = job_env(job, secrets)
    used = {m.group(1) for v in (job.get("env") or {}).values() if (m := SECRET.match(str(v)))}
    if unused := sorted(set(secrets) - used):
        raise SystemExit(f"run_workflow: the workflow does not use the secrets {unused}")
    stand_in = {k: v or "" for k, v in dotenv_values(args.stand_in).items()} if args.stand_in else {}
    if clash := sorted(set(stand_in) & set(workflow_env)):
        raise SystemExit(f"run_workflow: stand-in variables {clash} would override the workflow's env")
    env.update(workflow_env)
    env.update(stand_in)
    extra_path: list[str] = []
    with tempfile.TemporaryDirectory(prefix="run-workflow-") as scratch:
        for number, step in enumerate(job["steps"], 1):
            label = step.get("name") or step.get("uses") or step["run"].splitlines()[0]
            if "uses" in step:
                if not step["uses"].startswith(HANDLED_ACTIONS):
                    raise SystemExit(f"run_workflow: step {number} uses {step['uses']}, which this harness cannot run")
                print(f"== step {number}: {label} (done by the caller)", flush=True)
                continue
            if EXPRESSION.search(step["run"]) or step.get("env") or step.get("shell"):
                raise SystemExit(f"run_workflow: step {number} has an expression, env or shell this harness ignores")
            print(f"== step {number}: {label}", flush=True)
            script = Path(scratch, f"step{number}.sh")
            script.write_text(step["run"])
            github_env, github_path = Path(scratch, f"env{number}"), Path(scratch, f"path{number}")
            github_env.touch()
            github_path.touch()
            step_env = dict(env, GITHUB_ENV=str(github_env), GITHUB_PATH=str(github_path),
                            PATH=os.pathsep.join([*extra_path, env["PATH"]]))
            done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
                                  cwd=args.checkout, env=step_env, check=False)
            if done.returncode != 0:
                print(f"== step {number} failed with exit code {done.returncode}", flush=True)
                return done.returncode
            env.update(read_env_file(github_env))
            extra_path = [line for line in github_path.read_text().splitlines() if line] [::-1] + extra_path
    return 0


if __name__ == "__main__":
    sys.exit(main())
