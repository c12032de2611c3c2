"""Deployed the way Meltano users deploy: settings from the environment, the prod warehouse, the package's
metadata, the plugin definition users paste into another project, the uv bootstrap on a stock python3."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dotenv import dotenv_values

from tests.tap_runner import TAP_EXE

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from readme_plugin import plugin_definition  # noqa: E402

MELTANO = ["uv", "tool", "run", "--from", "meltano==4.4.1", "meltano"]
needs_uv = pytest.mark.skipif(shutil.which("uv") is None, reason="Meltano is run through `uv tool run`")
# A value of every kind as a deployment's environment would hold it, and what the tap must receive.
SAMPLES = {
    "string": ("some-text", "some-text"),
    "integer": ("7", 7),
    "boolean": ("true", True),
    "date_iso8601": ("2026-01-02", "2026-01-02"),
    "array": ('["x", "y"]', ["x", "y"]),
    "object": ('{"a": 1}', {"a": 1}),
    "decimal": ("1.5", 1.5),
}


def project() -> dict:
    return yaml.safe_load((ROOT / "meltano.yml").read_text())


def extractor() -> dict:
    return next(p for p in project()["plugins"]["extractors"] if p["name"] == "tap-backstory")


def env_var(name: str) -> str:
    return "TAP_BACKSTORY_" + name.upper()


def meltano_config(plugin: str, environment: str, variables: dict[str, str], tmp_path: Path) -> dict:
    """The JSON config Meltano hands `plugin` in `environment` with `variables` set (and nothing else of the
    caller's: no TAP_BACKSTORY_*/TARGET_*/MELTANO_* variable, no .env). Runs on a copy of meltano.yml, so
    Meltano writes nothing into the repo."""
    shutil.copy(ROOT / "meltano.yml", tmp_path / "meltano.yml")
    (tmp_path / "empty.env").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAP_BACKSTORY_", "TARGET_", "MELTANO_"))}
    env.update(MELTANO_DATABASE_URI=f"sqlite:///{tmp_path}/meltano.db", MELTANO_SEND_ANONYMOUS_USAGE_STATS="false",
               UV_PYTHON_DOWNLOADS="never", **variables)
    out = subprocess.run(
        [*MELTANO, "--env-file", str(tmp_path / "empty.env"), "--environment", environment, "config", "--unsafe",
         "print", plugin],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


@needs_uv
@pytest.mark.slow
def test_every_setting_can_be_set_from_its_environment_variable(tmp_path):
    """Meltano 4.4.1 parses a `decimal` setting from the environment into a Decimal and then cannot write the
    tap's config (TypeError: Object of type Decimal is not JSON serializable): every kind must round-trip."""
    settings = {s["name"]: s for s in extractor()["settings"]}
    variables, expected = {}, {}
    for name, setting in settings.items():
        if setting["kind"] == "options":
            raw = typed = setting["options"][-1]["value"]
        else:
            raw, typed = SAMPLES[setting["kind"]]
        variables[env_var(name)], expected[name] = raw, typed
    config = meltano_config("tap-backstory", "prod", variables, tmp_path)
    for name, value in expected.items():
        assert config.get(name) == value and type(config.get(name)) is type(value), name


@needs_uv
@pytest.mark.slow
def test_the_e2e_environment_configures_the_tap_with_every_kind(tmp_path):
    """scripts/sandbox.env (what scripts/e2e.sh exports) holds every kind, Meltano passes each value typed, and
    the tap accepts the result."""
    variables = {k: v for k, v in dotenv_values(ROOT / "scripts/sandbox.env").items() if v is not None}
    settings = {s["name"]: s for s in extractor()["settings"]}
    named = {name: settings[name] for name in settings if env_var(name) in variables}
    assert set(variables) == {env_var(name) for name in named}, "a variable that names no setting"
    assert {s["kind"] for s in named.values()} >= {"string", "integer", "boolean", "array", "date_iso8601"}
    assert any(s.get("sensitive") for s in named.values())
    assert "job_poll_interval_seconds" in named  # the number that was `kind: decimal`

    config = meltano_config("tap-backstory", "prod", variables, tmp_path)
    for name, setting in named.items():
        raw = variables[env_var(name)]
        want = {"integer": int, "boolean": lambda v: v == "true", "array": json.loads}.get(setting["kind"], str)(raw)
        assert config[name] == want and type(config[name]) is type(want), name
    (tmp_path / "config.json").write_text(json.dumps(config))
    discovered = subprocess.run([TAP_EXE, "--config", str(tmp_path / "config.json"), "--discover"],
                                capture_output=True, text=True, timeout=120, check=False)
    assert discovered.returncode == 0, discovered.stderr[-2000:]
    assert len(json.loads(discovered.stdout)["streams"]) == 4


@needs_uv
@pytest.mark.slow
def test_prod_loads_into_the_postgresql_of_the_environment(tmp_path):
    warehouse = {"TARGET_POSTGRES_HOST": "db.example.internal", "TARGET_POSTGRES_PORT": "6543",
                 "TARGET_POSTGRES_USER": "loader", "TARGET_POSTGRES_PASSWORD": "pw-from-env",
                 "TARGET_POSTGRES_DATABASE": "analytics"}
    config = meltano_config("target-postgres", "prod", warehouse, tmp_path)
    assert {k: config.get(k) for k in ("host", "port", "user", "password", "database")} == {
        "host": "db.example.internal", "port": 6543, "user": "loader", "password": "pw-from-env",
        "database": "analytics"}


@needs_uv
@pytest.mark.slow
def test_prod_never_falls_back_to_the_test_server(tmp_path):
    config = meltano_config("target-postgres", "prod", {}, tmp_path)
    assert config.get("host") != "127.0.0.1" and config.get("port") != 5433
    assert config.get("user") != "tap" and config.get("database") != "tap"


def test_env_example_lists_every_prod_variable():
    listed = set(dotenv_values(ROOT / ".env.example"))
    for name in ("HOST", "PORT", "USER", "PASSWORD", "DATABASE"):
        assert f"TARGET_POSTGRES_{name}" in listed
    secrets = {env_var(s["name"]) for s in extractor()["settings"] if s.get("sensitive")}
    assert secrets <= listed


def test_about_reports_the_package_version_and_pythons():
    about = json.loads(subprocess.run([TAP_EXE, "--about", "--format", "json"], capture_output=True, text=True,
                                      check=True).stdout)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'version = "{about["version"]}"' in pyproject
    assert about["version"] == importlib.metadata.version("tap-backstory")
    assert {"3.10", "3.11", "3.12", "3.13"} <= set(about["supported_python_versions"])
    assert f"## [{about['version']}]" in (ROOT / "CHANGELOG.md").read_text()


def test_license_file_matches_the_declared_license():
    assert 'license = "Apache-2.0"' in (ROOT / "pyproject.toml").read_text()
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_sandbox_help_says_first_it_is_an_emulator_not_a_data_source():
    sandbox = str(Path(sys.executable).with_name("tap-backstory-sandbox"))
    help_text = subprocess.run([sandbox, "--help"], capture_output=True, text=True, check=True).stdout
    first_paragraph = help_text.split("\n\n")[1]
    assert first_paragraph.startswith("A local emulator for tap-backstory's tests and demos, not a data source")


def test_readme_plugin_definition_declares_what_meltano_yml_declares():
    """The block users paste into another project (and scripts/e2e.sh installs) cannot drift from meltano.yml."""
    pasted = yaml.safe_load(plugin_definition())["plugins"]["extractors"][0]
    ours = extractor()
    for key in ("name", "namespace", "executable", "capabilities"):
        assert pasted[key] == ours[key], key
    assert pasted["pip_url"].endswith(".whl")
    assert [(s["name"], s["kind"], bool(s.get("sensitive")), s.get("options")) for s in pasted["settings"]] == [
        (s["name"], s["kind"], bool(s.get("sensitive")), s.get("options")) for s in ours["settings"]]


def test_readme_uses_the_meltano_4_config_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "meltano config test tap-backstory" in readme
    assert "meltano config tap-backstory test" not in readme


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="needs the system python3")
def test_scripts_bootstrap_uv_without_touching_the_system_python(tmp_path):
    """With only the system python3 on PATH (no uv, no pyenv), scripts/lib.sh installs uv into its own
    virtual environment: a stock Debian python3 refuses `pip install` (externally-managed-environment)."""
    path = "/usr/sbin:/usr/bin:/sbin:/bin"
    if shutil.which("uv", path=path):
        pytest.skip("uv is installed system-wide here: nothing to bootstrap")
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts/lib.sh", tmp_path / "scripts/lib.sh")
    script = "set -euo pipefail; source scripts/lib.sh; ensure_uv; command -v uv; uv --version"
    out = subprocess.run(["bash", "-c", script], cwd=tmp_path, env={**os.environ, "PATH": path},
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines()[0] == str(tmp_path / ".tools/uv/bin/uv")
    assert out.stdout.splitlines()[1].startswith("uv 0.13.9")
    # uv is not on the user's PATH afterwards: the scripts say how to put it there for the README's uv commands.
    assert f'export PATH="{tmp_path}/.tools/uv/bin:$PATH"' in out.stderr


def test_readme_loader_definition_installs_without_the_hub():
    """`meltano add loader target-jsonl` needs Meltano Hub; the README's inline definition does not (a plugin with
    a namespace and a pip_url is custom), and scripts/e2e.sh installs exactly it."""
    [loader] = yaml.safe_load(plugin_definition())["plugins"]["loaders"]
    assert (loader["name"], loader["namespace"], loader["pip_url"]) == ("target-jsonl", "target_jsonl",
                                                                        "target-jsonl==0.1.4")
    assert [setting["name"] for setting in loader["settings"]] == ["destination_path"]
