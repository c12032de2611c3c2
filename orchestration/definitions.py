"""Dagster definitions for tap-backstory at scale: one job per organization and stream (per intent feed for the
ContactBased streams), each a `meltano run` of its own inherited extractor, so its own state id; a schedule;
retries; and each organization's Backstory limit of 2 export jobs at once kept across the jobs that run side by
side.

The jobs come from meltano.yml in this folder: every extractor `tap-backstory-<org>--<name>` that inherits from
an org extractor `tap-backstory-<org>` (itself inheriting from `tap-backstory`) is one job `<org>__<name>`.
Load with `dagster job execute -f orchestration/definitions.py -j acme__activities`, or `dagster dev -f ...` with
the daemon for the schedules. Environment: MELTANO_COMMAND (how to call Meltano; default `meltano`),
MELTANO_PROJECT_ROOT (default: this folder), each org's TAP_BACKSTORY_<ORG>_<SETTING> variables, the warehouse's
TARGET_POSTGRES_<SETTING> variables. Each org loads into its own schema, tap_backstory_<org>.

The limit: a job whose extractor selects a Backstory stream holds a slot of the pool `backstory_<org>` (limit 2,
set by `python definitions.py set-pools`) and must have `max_concurrent_jobs: 1`, so at most 2 of an org's export
jobs are queued or running at once, however many of its Backstory jobs run or retry side by side. An org's intent
feed jobs share `contactbased_<org>` (limit 1): they write the same two tables and spend the same quota.
"""

import os
import shlex
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import yaml
from dagster import (
    Backoff,
    Definitions,
    Failure,
    Jitter,
    OpExecutionContext,
    RetryPolicy,
    ScheduleDefinition,
    in_process_executor,
    job,
    op,
)

HERE = Path(__file__).resolve().parent
PROJECT = Path(os.environ.get("MELTANO_PROJECT_ROOT", HERE))
TAP = "tap-backstory"
LOADER = "target-postgres"
SCHEDULE = "17 4 * * *"  # daily, 04:17 UTC, every job: the pools queue what may not run at once
BACKSTORY_STREAMS = ("activities", "enriched_contacts")
POOL_LIMITS = {"backstory": 2, "contactbased": 1}  # Backstory allows 2 running export jobs per organization
# A failed run is retried after about 2, then 4 minutes: it resumes from its stream's state and adopts its export
# job if it still exists, so a retry costs no new export job and no quota twice.
RETRY = RetryPolicy(max_retries=2, delay=120, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS)


@dataclass(frozen=True)
class Pipeline:
    """One Dagster job: `meltano run <extractor> <loader>` for one org's stream or intent feed."""

    extractor: str  # tap-backstory-<org>--<name>
    org: str
    name: str
    backstory: bool  # selects a Backstory stream (uses the org's export job slots)

    @property
    def job_name(self) -> str:
        return f"{self.org}__{self.name}".replace("-", "_")

    @property
    def pool(self) -> str:
        return f"{'backstory' if self.backstory else 'contactbased'}_{self.org}".replace("-", "_")


def pipelines(project: Path = PROJECT) -> list[Pipeline]:
    extractors = yaml.safe_load((project / "meltano.yml").read_text())["plugins"]["extractors"]
    orgs = {p["name"] for p in extractors if p.get("inherit_from") == TAP}
    found = []
    for plugin in extractors:
        if plugin.get("inherit_from") not in orgs:
            continue
        org_plugin, name = plugin["name"].split("--", 1)
        if org_plugin != plugin["inherit_from"]:
            raise ValueError(f"{plugin['name']}: name it {plugin['inherit_from']}--<stream or feed>")
        selected = {pattern.split(".")[0] for pattern in plugin.get("select", [])}
        if not selected:
            raise ValueError(f"{plugin['name']}: select its stream(s)")
        backstory = bool(selected & set(BACKSTORY_STREAMS))
        if backstory and (plugin.get("config") or {}).get("max_concurrent_jobs") != 1:
            raise ValueError(f"{plugin['name']}: a Backstory stream job needs `config: {{max_concurrent_jobs: 1}}` "
                             f"(its pool runs 2 of them at once within the org's limit of 2 export jobs)")
        found.append(Pipeline(plugin["name"], org_plugin.removeprefix(f"{TAP}-"), name, backstory))
    return found


def meltano_run(context: OpExecutionContext, pipeline: Pipeline) -> None:
    command = [*shlex.split(os.environ.get("MELTANO_COMMAND", "meltano")), "run", pipeline.extractor, LOADER]
    schema = f"tap_backstory_{pipeline.org}".replace("-", "_")
    env = {**os.environ, f"{LOADER.upper().replace('-', '_')}_DEFAULT_TARGET_SCHEMA": schema}
    context.log.info(f"{shlex.join(command)} into schema {schema}")
    last_lines: deque[str] = deque(maxlen=20)
    with subprocess.Popen(command, cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as process:
        assert process.stdout is not None
        for line in process.stdout:
            last_lines.append(line.rstrip())
            context.log.info(line.rstrip())
    if process.returncode != 0:
        raise Failure(description=f"meltano run {pipeline.extractor} exited with {process.returncode}",
                      metadata={"last lines": "\n".join(last_lines)})


def build_job(pipeline: Pipeline):
    @op(name=f"{pipeline.job_name}__meltano_run", pool=pipeline.pool, retry_policy=RETRY,
        tags={"org": pipeline.org})
    def run_meltano(context: OpExecutionContext) -> None:
        meltano_run(context, pipeline)

    # One op that waits on a subprocess: in-process execution spares a second Python start per run.
    @job(name=pipeline.job_name, tags={"org": pipeline.org}, executor_def=in_process_executor,
         description=f"meltano run {pipeline.extractor} {LOADER}")
    def the_job() -> None:
        run_meltano()

    return the_job


def pools() -> dict[str, int]:
    return {p.pool: POOL_LIMITS["backstory" if p.backstory else "contactbased"] for p in pipelines()}


JOBS = [build_job(p) for p in pipelines()]
defs = Definitions(
    jobs=JOBS,
    schedules=[ScheduleDefinition(name=f"{j.name}__schedule", job=j, cron_schedule=SCHEDULE,
                                  execution_timezone="UTC") for j in JOBS],
)


def main(command: str) -> None:
    """`python definitions.py jobs`: the job names; `set-pools`: set the pool limits on $DAGSTER_HOME's instance."""
    if command == "jobs":
        print("\n".join(j.name for j in JOBS))
    elif command == "set-pools":
        from dagster import DagsterInstance

        with DagsterInstance.get() as instance:
            for pool, limit in pools().items():
                instance.event_log_storage.set_concurrency_slots(pool, limit)
                print(f"pool {pool}: limit {limit}")
    else:
        raise SystemExit("usage: python definitions.py jobs|set-pools")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "")
