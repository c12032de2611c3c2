"""The tap's private SDK surface (`tap_backstory/sdk.py`) still matches the installed singer-sdk.

An SDK upgrade that changes code the tap overrides, copies or relies on fails here, naming the SDK function,
the tap's place and what to re-check (docs/sdk-upgrade.md), instead of surprising a run later.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib
import importlib.metadata
import inspect
import operator
import signal
import textwrap
import threading
from pathlib import Path

import pytest

from tap_backstory import sdk
from tap_backstory.tap import TapBackstory

PACKAGE = Path(sdk.__file__).parent


def fingerprint(source: str) -> str:
    """sha256 of a function's code: docstrings, comments and formatting left out, so only code changes count.

    The tree is written out by `canonical`, not `ast.unparse`, whose text differs between Pythons (3.10 writes
    `for (a, b) in ...`), so the recorded fingerprints hold on every supported Python."""
    tree = ast.parse(textwrap.dedent(source))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(canonical(tree).encode()).hexdigest()


VERSION_SPECIFIC_FIELDS = frozenset({"type_comment", "kind", "type_params"})
"""AST fields that some supported Pythons have and others lack (or fill differently) for the same code."""


def canonical(node: object) -> str:
    """A syntax tree as text: node names and their non-empty fields, the same on Python 3.10 to 3.13."""
    if isinstance(node, ast.AST):
        fields = [
            f"{name}={canonical(value)}"
            for name, value in ast.iter_fields(node)
            if value not in (None, []) and name not in VERSION_SPECIFIC_FIELDS
        ]
        return f"({type(node).__name__} {' '.join(fields)})"
    if isinstance(node, list):
        return "[" + ", ".join(canonical(item) for item in node) + "]"
    return repr(node)


def sdk_object(path: str) -> object:
    module, _, qualname = path.partition(":")
    return operator.attrgetter(qualname)(importlib.import_module(module))


def change_report(code: sdk.SdkCode, installed_source: str | None) -> str | None:
    """None when the installed code is the recorded one; else what changed, where the tap depends on it, what to do."""
    if installed_source is None:
        found = "no longer exists"
    else:
        installed = fingerprint(installed_source)
        if installed == code.fingerprint:
            return None
        found = f"changed since {sdk.RECORDED_FOR} (its fingerprint is now {installed})"
    version = importlib.metadata.version("singer-sdk")
    return (
        f"singer-sdk {version}: {code.sdk} {found}. The tap {code.how} it in {code.tap}. Re-check: {code.recheck}. "
        "Then record the new fingerprint in tap_backstory/sdk.py (docs/sdk-upgrade.md)."
    )


def installed_source(path: str) -> str | None:
    try:
        return inspect.getsource(sdk_object(path))
    except (ImportError, AttributeError):
        return None


@pytest.mark.parametrize("code", sdk.SDK_CODE, ids=lambda code: code.sdk)
def test_sdk_code_the_tap_depends_on_is_unchanged(code):
    report = change_report(code, installed_source(code.sdk))
    assert report is None, report


RECORDED_SOURCE = """
    def _generate_record_messages(self, record):
        \"""Write out a RECORD message.\"""
        for stream_map in self.stream_maps:
            # Emit record if not filtered
            yield stream_map.transform(record), utc_now()
"""


def test_a_changed_sdk_function_is_reported_with_the_tap_place_and_what_to_recheck():
    code = dataclasses.replace(sdk.SDK_CODE[0], fingerprint=fingerprint(RECORDED_SOURCE))
    assert change_report(code, RECORDED_SOURCE) is None
    # Docstrings, comments and layout are not code: no report.
    reworded = (
        RECORDED_SOURCE.replace("Write out a RECORD message.", "Emit RECORD messages.\n\n        More words.")
        .replace("# Emit record if not filtered", "# a different comment")
        .replace("yield stream_map", "yield (stream_map")
        .replace(", utc_now()", ",\n                utc_now(),\n            )")
    )
    assert change_report(code, reworded) is None
    # One changed expression is, naming the SDK function, the tap's place and what to re-check.
    report = change_report(code, RECORDED_SOURCE.replace("utc_now()", "None"))
    assert report is not None
    assert "singer_sdk.streams.core:Stream._generate_record_messages changed since 0.54.9" in report
    assert "tap_backstory/streams/base.py TapStream._generate_record_messages" in report
    assert "Re-check: it is a copy of this method" in report
    # So is a function that is gone.
    assert "Stream._generate_record_messages no longer exists" in change_report(code, None)


@pytest.fixture(scope="module")
def tap():
    config = {
        "start_date": "2026-01-01",
        "api_url": "http://127.0.0.1:9",  # never contacted: nothing here syncs
        "activity_client_id": "id",
        "activity_client_secret": "secret",
    }
    return TapBackstory(config=config, parse_env_config=False)


@pytest.mark.parametrize("name", sdk.PRIVATE_NAMES, ids=lambda name: f"{name.owner}.{name.name}")
def test_private_names_the_tap_uses_still_exist(request, name):
    if name.owner.startswith("singer_sdk"):
        owner = importlib.import_module(name.owner)
    else:  # on an instance: build a real tap (no request is sent)
        tap = request.getfixturevalue("tap")
        root, _, rest = name.owner.partition(".")
        owner = {"tap": tap, "stream": tap.streams["activities"]}[root]
        owner = operator.attrgetter(rest)(owner) if rest else owner
    assert hasattr(owner, name.name), (
        f"singer-sdk {importlib.metadata.version('singer-sdk')}: {name.owner} has no `{name.name}` any more; "
        f"the tap uses it in {name.tap} ({name.why}). See docs/sdk-upgrade.md."
    )


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals: main thread only")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_sdk_installs_the_taps_termination_handler(signum):
    """Built in the main thread, the tap's `_handle_termination` (exit 143/130, tap_backstory/stopping.py) is
    what SIGTERM and SIGINT call, installed by the SDK's `PluginBase._setup_signal_handlers`."""
    before = signal.getsignal(signum)
    try:
        tap = TapBackstory(config={"contactbased_api_key": "key"}, parse_env_config=False)
        assert signal.getsignal(signum) == tap._handle_termination
    finally:
        signal.signal(signum, before)  # leave pytest's own handler in place


def private_sdk_imports(source: str) -> list[str]:
    """The private SDK modules/names a module's source imports (any dotted part starting with `_`)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [n for n in names if n.startswith("singer_sdk.") and any(p.startswith("_") for p in n.split("."))]
    return found


def test_only_the_sdk_module_imports_private_sdk_modules():
    offenders = {
        str(path.relative_to(PACKAGE.parent)): imports
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != PACKAGE / "sdk.py" and (imports := private_sdk_imports(path.read_text()))
    }
    assert offenders == {}, "import these from tap_backstory.sdk (and list them there) instead"
    assert private_sdk_imports("from singer_sdk.helpers._util import utc_now") == ["singer_sdk.helpers._util.utc_now"]
    assert private_sdk_imports("if X:\n    from singer_sdk.helpers import _batch") == ["singer_sdk.helpers._batch"]
    assert private_sdk_imports("import singer_sdk.helpers._catalog as c") == ["singer_sdk.helpers._catalog"]
    assert private_sdk_imports("from singer_sdk.helpers.conform import TypeConformanceLevel") == []
