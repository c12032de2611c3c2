"""The README and meltano.yml agree with the tap itself (so neither can drift from the code)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.tap_runner import TAP_EXE

ROOT = Path(__file__).resolve().parent.parent
MELTANO_KINDS = {"string", "integer", "boolean", "decimal", "date_iso8601", "options", "array", "object"}


def about() -> dict:
    out = subprocess.run([TAP_EXE, "--about", "--format", "json"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def extractor() -> dict:
    project = yaml.safe_load((ROOT / "meltano.yml").read_text())
    return next(p for p in project["plugins"]["extractors"] if p["name"] == "tap-backstory")


def test_readme_settings_table_is_generated_from_about():
    check = subprocess.run([sys.executable, str(ROOT / "scripts/update_readme.py"), "--check"],
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout


def test_meltano_yml_declares_every_setting_like_the_tap():
    settings = about()["settings"]["properties"]
    declared = {s["name"]: s for s in extractor()["settings"]}
    assert set(declared) == set(settings)
    for name, prop in settings.items():
        meltano = declared[name]
        assert meltano["kind"] in MELTANO_KINDS, name
        assert meltano.get("label"), name
        assert meltano.get("description") == prop.get("description", ""), name
        assert bool(meltano.get("sensitive")) == bool(prop.get("secret")), name
        if "enum" in prop:
            assert [o["value"] for o in meltano["options"]] == [v for v in prop["enum"] if v is not None], name
        if prop.get("format") == "date":
            assert meltano["kind"] == "date_iso8601", name


def test_meltano_yml_capabilities_and_loaders():
    plugin = extractor()
    assert set(plugin["capabilities"]) == set(about()["capabilities"])
    project = yaml.safe_load((ROOT / "meltano.yml").read_text())
    loaders = {p["name"]: p for p in project["plugins"]["loaders"]}
    # target-duckdb 0.8.0 with duckdb >= 1.3 drops the first row of every batch: the pin must stay.
    assert "duckdb==1.2.2" in loaders["target-duckdb"]["pip_url"]
    assert "target-postgres" in loaders
    assert project["default_environment"] == "sandbox"
    for plugin in [*project["plugins"]["extractors"], *project["plugins"]["loaders"]]:
        assert plugin.get("namespace") and plugin.get("pip_url"), plugin["name"]  # Meltano Hub is unreachable


def test_every_file_the_docs_name_is_in_this_repository():
    """A repository path or a Markdown file named in README.md or docs/*.md exists (none points outside);
    a run's output folder that git ignores counts as in the repository."""
    ignored = {line.rstrip("/") for line in (ROOT / ".gitignore").read_text().splitlines()}
    repo_path = re.compile(r"\b(?:tap_backstory\w*|tests|docs|scripts|benchmarks)/[\w./-]*\w|\b[\w-]+\.md\b")
    missing = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for name in set(repo_path.findall(doc.read_text())):
            places = (ROOT / folder / name for folder in ("", "docs", "tap_backstory"))
            if name not in ignored and not any(place.exists() for place in places):
                missing.append(f"{doc.name}: {name}")
    assert missing == []
