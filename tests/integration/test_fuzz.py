"""schemathesis against the live OpenAPI of a real ``lookalike serve`` on 127.0.0.1.

Every documented operation is fuzzed three times per generated case: anonymously, with an
admin key (every route is reachable) and with an extension key (the admin routes answer 403),
over the demo catalog with the real default model. A case fails on any 5xx but a documented
503, on a status code the operation does not document, on a content type it does not
document, on a body that does not match the documented schema (error bodies included: they
must be the ``{"error": {"code", "message"}}`` envelope), or when an invalid request is
accepted. Bounded: a few examples per operation (``LOOKALIKE_FUZZ_EXAMPLES``, default 12),
well under a minute on two cores.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the test extra")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from live import LiveServer, live_server, run_cli  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.specs.openapi import checks as oa_checks  # noqa: E402

EXAMPLES = int(os.environ.get("LOOKALIKE_FUZZ_EXAMPLES", "12"))
REPO = Path(__file__).resolve().parents[2]


class Fuzzed:
    """The live server under fuzzing and its two keys."""

    def __init__(self, server: LiveServer, key: str, extension_key: str) -> None:
        self.url, self.log = server.base, server.log
        self.key, self.extension_key = key, extension_key


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, demo_home: Path) -> Iterator[Fuzzed]:
    """``lookalike serve`` over a private copy of the demo home, with one API key per role."""
    import shutil

    home = tmp_path_factory.mktemp("fuzz") / "home"
    shutil.copytree(demo_home, home)
    keys = {}
    for role in ("admin", "extension"):
        out = run_cli(home, "keys", "create", f"fuzz-{role}", "--role", role, "--json", check=True)
        keys[role] = str(json.loads(out.stdout.strip().splitlines()[-1])["secret"])
    # the fuzzer is one client sending hundreds of requests: rate limits are not under test
    limits = {
        "LOOKALIKE_EXTENSION__RATE_PER_MINUTE": "1000000",
        "LOOKALIKE_EXTENSION__ANONYMOUS_PER_MINUTE": "1000000",
        "LOOKALIKE_EXTENSION__EVENTS_PER_MINUTE": "1000000",
    }
    with live_server(home, **limits) as server:
        yield Fuzzed(server, keys["admin"], keys["extension"])


def _documented_503(ctx: Any, response: Any, case: Any) -> bool | None:
    """No server error at all, except a 503 the operation documents (Retry-After included)."""
    status = response.status_code
    if status < 500:
        return None
    documented = "503" in case.operation.definition.raw.get("responses", {})
    assert status == 503 and documented, (
        f"{case.operation.label} answered {status}: {response.text[:300]}"
    )
    assert response.headers.get("retry-after"), f"503 without Retry-After: {response.text}"
    return None


CHECKS = [
    _documented_503,
    oa_checks.status_code_conformance,
    oa_checks.content_type_conformance,
    oa_checks.response_schema_conformance,
    oa_checks.negative_data_rejection,
]


def _fuzz(operation: Any, mode: Any, keys: tuple[str, ...]) -> None:
    """Up to EXAMPLES cases of ``operation``, each sent anonymously and with each key."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        case.call_and_validate(checks=CHECKS, timeout=30)
        for key in keys:
            case.call_and_validate(checks=CHECKS, headers={"X-API-Key": key}, timeout=30)

    run()


def test_every_operation_holds_its_documented_contract(live: Fuzzed) -> None:
    # Hypothesis is driven here, not through schemathesis' pytest plugin: its lazy-fixture
    # path does not run under pytest 9. Every operation, positive and negative data.
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {op.label for op in operations}
    assert {"POST /v1/search", "GET /v1/items/{item_id}/similar", "GET /health"} <= labels
    failures: list[str] = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz(operation, mode, (live.key, live.extension_key))
            except Unsatisfiable:
                # nothing to negate (no parameters, or only a free-form string): no negative run
                assert mode is GenerationMode.NEGATIVE, operation.label
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis raises groups
                # collect them all: one report names every finding
                failures.append(f"{operation.label} ({mode.value}): {exc}"[:2000])
    assert not failures, "\n\n".join(failures)


def test_the_fuzzed_server_stayed_up_and_logged_nothing_private(live: Fuzzed) -> None:
    """Runs after the fuzz cases: the server survived them, and its log names no client.

    The access log has one JSON line per request with the route template; hundreds of them
    had query strings, a key and came from 127.0.0.1, and none of that may be in the log.
    """
    request = urllib.request.Request(
        f"{live.url}/v1/items/LK-0001/similar?k=3&category=Dress", headers={"X-API-Key": live.key}
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        assert r.status == 200
    with urllib.request.urlopen(f"{live.url}/health", timeout=5) as r:
        assert r.status == 200
    text = live.log.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
    lines = [json.loads(line) for line in text.splitlines() if '"lookalike.access"' in line]
    assert len(lines) > 100
    routes = {line["route"] for line in lines}
    assert "/v1/items/{item_id}/similar" in routes and "/v1/search" in routes
    for line in lines:
        raw = json.dumps(line)
        assert "127.0.0.1" not in raw and "?" not in raw, raw
        assert live.key not in raw and live.extension_key not in raw, raw
        assert "LK-0001" not in raw, raw  # the template, not the path
    # uvicorn's own access log (client address, path and query) is off
    assert 'HTTP/1.1" ' not in text and '" 200' not in text
