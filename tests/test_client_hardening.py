"""The shared HTTP client's hardening (issue 22): one redaction place, control characters escaped, loopback
decided on the parsed URL, ids as single path segments, URL schemes compared case-insensitively."""

from __future__ import annotations

import gzip
import http.server
import json
import logging
import subprocess
import threading
from urllib.parse import quote, quote_plus

import pytest

from tap_backstory.client import (
    LOGGER,
    MAX_ANSWER_BYTES,
    REDACTED,
    ApiClient,
    ApiError,
    TapBackstoryError,
    is_loopback,
    path_segment,
    register_secret,
    safe_text,
    server_message,
)
from tests.conftest import sandbox
from tests.contactbased_support import INTENT
from tests.fake_vendors import fake_api
from tests.tap_runner import TAP_EXE, run, run_tap, tap_config

SECRET = "s3cr3t/with+odd=chars&?#%-7f3a"


@pytest.fixture(scope="module", autouse=True)
def registered() -> None:
    register_secret(SECRET)


@pytest.mark.parametrize(
    "form",
    [
        SECRET,
        quote(SECRET, safe=""),
        quote_plus(SECRET, safe=""),
        quote(SECRET, safe="").lower(),
        quote(quote(SECRET, safe=""), safe=""),
        SECRET.upper(),
    ],
    ids=["raw", "%-quoted", "form-encoded", "lower-case hex", "quoted twice", "other case"],
)
@pytest.mark.parametrize("position", ["{}", "bad token {}", "{}: refused", "x{}y", "a {} b {} c"])
def test_a_registered_secret_is_redacted_in_every_form_and_position(form, position):
    text = safe_text(position.format(form, form))
    assert form not in text and SECRET not in text
    assert REDACTED in text


def test_control_characters_are_escaped_and_whitespace_folded():
    text = safe_text("red \x1b[31mALERT\x1b[0m\x07 next\nline\ttab \x85 \u202e \x7f \x00")
    assert text == r"red \x1b[31mALERT\x1b[0m\x07 next line tab \u202e \x7f \x00"  # NEL is whitespace: folded
    assert all(ord(char) >= 0x20 and char not in "\x7f\x85\u202e" for char in text)


def test_log_lines_of_the_tap_are_redacted_and_escaped(caplog):
    with caplog.at_level(logging.INFO, logger=LOGGER.name):
        LOGGER.info("server said %s", f"\x1b]0;title\x07 token {SECRET}\nFAKE LOG LINE")
    (record,) = caplog.records
    assert record.getMessage() == rf"server said \x1b]0;title\x07 token {REDACTED} FAKE LOG LINE"


class _Response:
    """Just what `server_message` reads of a requests.Response (an error body)."""

    def __init__(self, body: str) -> None:
        self.text = body
        self.reason = "Bad Request"

    def json(self):
        return json.loads(self.text)


@pytest.mark.parametrize(
    "body",
    [
        '{"detail": "bad key %s \\u001b[2J"}',
        '{"error": "Unauthorized", "message": "token %s\\u0007"}',
        "<html>%s \x1b[31m</html>",
        '{"detail": [{"msg": "%s"}]}',
    ],
)
def test_server_messages_never_carry_a_secret_or_a_control_byte(body):
    message = server_message(_Response(body.replace("%s", SECRET)))  # type: ignore[arg-type]
    assert SECRET not in message and REDACTED in message
    assert "\x1b" not in message and "\x07" not in message


def test_a_deeply_nested_error_body_is_one_line_not_a_crash():
    message = server_message(_Response("[" * 100_000 + "]" * 100_000))  # type: ignore[arg-type]
    assert len(message) < 400


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:8765/x", True),
        ("http://127.3.4.5", True),
        ("http://LOCALHOST:1", True),
        ("http://[::1]:80/", True),
        ("HTTP://127.0.0.1", True),
        ("http://127.0.0.1.nip.io", False),
        ("http://127.example.com", False),
        ("http://localhost.example.com", False),
        ("http://[::2]", False),
        ("http://10.0.0.1", False),
        ("http://[bad", False),
    ],
)
def test_loopback_means_an_ip_literal_in_127_0_0_0_8_or_1_or_localhost(url, loopback):
    assert is_loopback(url) is loopback


@pytest.mark.parametrize(
    ("value", "segment"),
    [
        ("../../auth/v1/tokens?job=1", "..%2F..%2Fauth%2Fv1%2Ftokens%3Fjob%3D1"),
        ("%2F..%2Fx", "%252F..%252Fx"),
        ("a#b c", "a%23b%20c"),
        (12345, "12345"),
    ],
)
def test_a_server_given_id_is_one_path_segment(value, segment):
    assert path_segment(value, "id") == segment


@pytest.mark.parametrize("value", ["", ".", "..", "id\x1b[2J", "id\nx", "id\x00"])
def test_ids_that_cannot_be_a_segment_are_refused(value):
    with pytest.raises(ApiError, match="is not a usable id") as raised:
        path_segment(value, "export id")
    assert "\x1b" not in str(raised.value) and "\n" not in str(raised.value)


def test_a_dns_name_starting_with_127_is_not_loopback_and_plain_http_to_it_is_refused_at_once():
    result = run_tap({"contactbased_api_key": "k" * 20, "contactbased_api_url": "http://127.0.0.1.nip.io"}, timeout=60)
    assert result.returncode == 1
    assert "contactbased_api_url must use https://" in result.error_line


@pytest.mark.parametrize("url", ["ftp://example.com", "https://", "example.com", "file:///etc/passwd"])
def test_urls_that_are_not_http_are_refused(url):
    result = run_tap({"contactbased_api_key": "k" * 20, "contactbased_api_url": url}, timeout=60)
    assert result.returncode == 1
    assert "contactbased_api_url must be an http(s) URL" in result.error_line


def test_schemes_compare_case_insensitively(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"contactbased_api_key": "k" * 20, "contactbased_api_url": "HTTPS://API.example.com"}))
    accepted = subprocess.run(
        [TAP_EXE, "--config", str(config), "--discover"], capture_output=True, text=True, timeout=60, check=False
    )
    assert accepted.returncode == 0, accepted.stderr[-2000:]
    assert INTENT in {stream["tap_stream_id"] for stream in json.loads(accepted.stdout)["streams"]}
    with sandbox(page_size=1000) as sb:
        config = tap_config(sb, INTENT, intent_lookback_days=1)
        config["contactbased_api_url"] = config["contactbased_api_url"].replace("http://", "HTTP://")
        result = run(sb, config)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.records(INTENT)


# --- answers read within bounds (the real ApiClient against a fake vendor's answers) -------------------------
def _answering(status: int, body: bytes, **headers: str):
    return fake_api("ContactBased", lambda method, path, params, payload: (status, body, headers))


@pytest.mark.parametrize("status", [200, 400])
def test_an_answer_larger_than_the_bound_is_refused_in_one_line(status):
    api = _answering(status, b"[" + b" " * MAX_ANSWER_BYTES + b"]")
    with pytest.raises(ApiError, match=rf"POST /intent/feeds/search: the answer \({status}\) is larger than"):
        api.request_json("POST", "/intent/feeds/search", json={})


def test_a_gzip_answer_is_bounded_by_what_it_expands_to():
    """Over real HTTP (urllib3 decodes Content-Encoding): 64 KB on the wire that expand past the bound."""
    bomb = gzip.compress(b" " * (MAX_ANSWER_BYTES + 1))
    assert len(bomb) < MAX_ANSWER_BYTES // 100

    class Bomb(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(bomb)))
            self.end_headers()
            self.wfile.write(bomb)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Bomb)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        api = ApiClient(url, lambda prepared: prepared, vendor="ContactBased", url_setting="contactbased_api_url")
        with pytest.raises(ApiError, match=r"GET /organization/feeds: the answer \(200\) is larger than"):
            api.request_json("GET", "/organization/feeds")
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("body", "needle"),
    [(b"[" * 100_000 + b"]" * 100_000, "is JSON nested too deeply"), (b"<html>oops</html>", "is not JSON")],
)
def test_an_answer_that_is_not_readable_json_is_one_data_error(body, needle):
    with pytest.raises(TapBackstoryError, match=f"ContactBased GET /organization/feeds: the answer {needle}"):
        _answering(200, body).request_json("GET", "/organization/feeds")
