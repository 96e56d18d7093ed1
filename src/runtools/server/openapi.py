"""The OpenAPI 3.0 description of the API (served at /api/openapi.json, checked by schemathesis)."""

from __future__ import annotations

from typing import Any


def _q(name: str, schema: dict[str, Any], desc: str, many: bool = False) -> dict[str, Any]:
    if many:
        schema = {"type": "array", "items": schema}
    return {"name": name, "in": "query", "required": False, "description": desc, "schema": schema,
            **({"style": "form", "explode": True} if many else {})}


def _path(name: str, desc: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": desc,
            "schema": {"type": "string", "minLength": 1}}


def _json(schema: dict[str, Any], desc: str) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": schema}}}


ERR = {"$ref": "#/components/schemas/Error"}
ERRORS = {
    "400": _json(ERR, "a bad parameter or body: the message says what to fix"),
    "401": _json(ERR, "no token, or a wrong one"),
    "404": _json(ERR, "no such run"),
}
CONTROL_ERRORS = {**ERRORS, "403": _json(ERR, "a read token: control needs an operate token"),
                  "409": _json(ERR, "the run is not in a state that allows this")}
PATTERN = _q("pattern", {"type": "string"}, "job id, run id, JOB@RUN or tag; shell globs; ! negates", many=True)
IID = _path("instance_id", "JOB@RUN")
RUNS = {"type": "array", "items": {"$ref": "#/components/schemas/Run"}}
RESULT = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}


def _body(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        schema["required"] = required
    return {"required": bool(required), "content": {"application/json": {"schema": schema}}}


def spec() -> dict[str, Any]:
    time_s = {"type": "string", "minLength": 1}
    nullable_str = {"type": "string", "nullable": True}
    run_schema = {
        "type": "object",
        "description": "the run record, same keys as `taro ps --json` (docs/json.md)",
        "required": ["instance_id", "job_id", "run_id", "stage", "state", "status", "created_at"],
        "properties": {
            "instance_id": {"type": "string"}, "job_id": {"type": "string"}, "run_id": {"type": "string"},
            "stage": {"type": "string", "enum": ["CREATED", "RUNNING", "ENDED"]},
            "state": nullable_str, "detail": nullable_str, "status": nullable_str, "outcome": nullable_str,
            "exit_code": {"type": "integer", "nullable": True}, "created_at": {"type": "string"},
            "started_at": nullable_str, "ended_at": nullable_str,
            "duration_s": {"type": "number", "nullable": True}, "tags": {"type": "array", "items": {"type": "string"}},
            "host": nullable_str, "actions": {"type": "array", "items": {"type": "object"}},
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "taro serve", "version": "1",
                 "description": "runtools over HTTP: every route needs Authorization: Bearer TOKEN"},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]},
                "Run": run_schema,
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/runs": {"get": {
                "summary": "runs, newest first (taro ps / taro history)",
                "parameters": [
                    _q("active", {"type": "boolean"}, "true: active only; false: ended only; absent: both"),
                    PATTERN,
                    _q("status", {"type": "string"}, "e.g. FAILED", many=True),
                    _q("outcome", {"type": "string", "enum": ["SUCCESS", "ABORTED", "REJECTED", "FAULT"]},
                       "outcome", many=True),
                    _q("since", time_s, "created at/after: ISO 8601, today, yesterday or an age (2h)"),
                    _q("until", time_s, "created before (same forms)"),
                    _q("limit", {"type": "integer", "minimum": 0, "maximum": 100000}, "at most N (default 100)"),
                    _q("last", {"type": "boolean"}, "only the latest run of each job"),
                    _q("before", {"type": "string"}, "the X-Next-Cursor of the previous page (keyset paging)"),
                ],
                "responses": {"200": {**_json(RUNS, "runs"), "headers": {
                    "X-Next-Cursor": {"schema": {"type": "string"}, "description": "before= of the next page"}}},
                    **ERRORS},
            }},
            "/api/runs/{instance_id}": {"get": {
                "summary": "one run", "parameters": [IID],
                "responses": {"200": _json({"$ref": "#/components/schemas/Run"}, "the run"), **ERRORS}}},
            "/api/runs/{instance_id}/output": {"get": {
                "summary": "the run's stored output; follow=true streams live output until the run ends",
                "parameters": [IID,
                               _q("stream", {"type": "string", "enum": ["stdout", "stderr", "all"]}, "which stream"),
                               _q("tail", {"type": "integer", "minimum": 0, "maximum": 10000000}, "last N lines"),
                               _q("follow", {"type": "boolean"}, "keep streaming until the run ends")],
                "responses": {"200": {"description": "output bytes",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}}, **ERRORS}}},
            "/api/runs/{instance_id}/stop": {"post": {
                "summary": "stop a run (STOPPED; interrupt: INTERRUPTED); queued/pending runs end CANCELLED",
                "parameters": [IID], "requestBody": _body({"interrupt": {"type": "boolean"},
                                                           "reason": {"type": "string", "minLength": 1}}),
                "responses": {"200": _json(RESULT, "done, or already ended"), **CONTROL_ERRORS}}},
            "/api/runs/{instance_id}/approve": {"post": {
                "summary": "let a pending run through its gate", "parameters": [IID],
                "requestBody": _body({}),
                "responses": {"200": _json(RESULT, "approved (or already)"), **CONTROL_ERRORS}}},
            "/api/runs/{instance_id}/deny": {"post": {
                "summary": "end a pending run DENIED", "parameters": [IID],
                "requestBody": _body({"reason": {"type": "string", "minLength": 1}}),
                "responses": {"200": _json(RESULT, "denied (or already)"), **CONTROL_ERRORS}}},
            "/api/release": {"post": {
                "summary": "release every run pending on a latch",
                "requestBody": _body({"latch": {"type": "string", "minLength": 1},
                                      "pattern": {"type": "array", "items": {"type": "string"}}}, ["latch"]),
                "responses": {"200": _json(RESULT, "the released runs"), **CONTROL_ERRORS}}},
            "/api/jobs/{job}/disable": {"post": {
                "summary": "disable jobs matching a pattern", "parameters": [_path("job", "job pattern")],
                "requestBody": _body({}),
                "responses": {"200": _json(RESULT, "disabled"), **CONTROL_ERRORS}}},
            "/api/jobs/{job}/enable": {"post": {
                "summary": "enable a pattern disabled before", "parameters": [_path("job", "job pattern")],
                "requestBody": _body({}),
                "responses": {"200": _json(RESULT, "enabled"), **CONTROL_ERRORS}}},
            "/api/jobs/disabled": {"get": {
                "summary": "disabled job patterns (taro list-disabled)",
                "responses": {"200": _json({"type": "array", "items": {"type": "object"}}, "patterns"), **ERRORS}}},
            "/api/stats": {"get": {
                "summary": "per job: runs, success rate, p50/p95/max (taro stats)",
                "parameters": [PATTERN, _q("since", time_s, "only runs created at/after")],
                "responses": {"200": _json({"type": "array", "items": {"type": "object"}}, "stats"), **ERRORS}}},
            "/api/events": {"get": {
                "summary": "Server-Sent Events: one data: JSON per lifecycle event (taro listen --json); "
                           "resume with Last-Event-ID",
                "parameters": [PATTERN, _q("timeout", time_s, "end the stream after this long (e.g. 30s)"),
                               _q("last_event_id", {"type": "string"}, "same as the Last-Event-ID header")],
                "responses": {"200": {"description": "event stream",
                                      "content": {"text/event-stream": {"schema": {"type": "string"}}}}, **ERRORS}}},
            "/api/session": {"get": {
                "summary": "who you are: token name, role (and the page's CSRF token)",
                "responses": {"200": _json({"type": "object"}, "the caller"), **ERRORS}}},
            "/metrics": {"get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "metrics",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}}, **ERRORS}}},
            "/api/openapi.json": {"get": {
                "summary": "this document", "responses": {"200": _json({"type": "object"}, "OpenAPI"), **ERRORS}}},
        },
    }
