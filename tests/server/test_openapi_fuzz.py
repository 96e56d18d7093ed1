"""schemathesis against /api/openapi.json: every route, generated parameters and bodies; no answer
is a 5xx, every error is JSON `{"error": ...}`, responses match the schema."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from ._serve import OPERATE

# semantic checks (an unknown status, a time that is no time) answer 400 for input the schema allows:
# positive_data_acceptance does not apply
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def test_every_route_survives_generated_input(cli, served):
    cli.run("--id", "fuzzed", "--", "echo", "x")
    auth = {"Authorization": f"Bearer {OPERATE}"}
    schema = schemathesis.openapi.from_url(served.url + "/api/openapi.json", headers=auth)
    schema.config.base_url = served.url
    checked = []
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path == "/api/events":  # a stream: tested in test_events.py
            continue
        checked.append(f"{op.method.upper()} {op.path}")

        @given(case=op.as_strategy())
        @settings(max_examples=12, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def check(case):
            resp = case.call(headers=auth, base_url=served.url, timeout=10)
            assert resp.status_code < 500, (case.path, case.query, case.body, resp.text)
            if resp.status_code >= 400:
                assert "error" in resp.json(), resp.text
            case.validate_response(resp, checks=CHECKS)

        check()
    assert len(checked) == 13, checked
