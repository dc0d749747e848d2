"""The OpenAPI 3 description of /api/v1 (tests/dashboard keeps it equal to the app's routes)."""

from __future__ import annotations

from typing import Any

ERROR = {"$ref": "#/components/responses/Error"}


def _id(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "integer", "format": "int64"}}


FORMAT = {"name": "format", "in": "query", "required": False,
          "schema": {"type": "string", "enum": ["json", "csv"], "default": "json"}}


def _op(summary: str, ok: str = "200", *, admin: bool = False, params: list[dict[str, Any]] | None = None,
        body: dict[str, Any] | None = None, content: str = "application/json") -> dict[str, Any]:
    errors = {"401": ERROR, "404": ERROR, "422": ERROR} | ({"403": ERROR} if admin else {})
    op: dict[str, Any] = {
        "summary": summary + (" (admin tokens only)" if admin else ""),
        "responses": {ok: {"description": "done"} if ok == "204" else
                      {"description": "done", "content": {content: {"schema": {"type": "object"}}}}} | errors,
    }  # fmt: skip
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = {"required": True, "content": body}
    return op


def _json(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"application/json": {"schema": {"type": "object", "properties": properties, "required": required}}}


JOB_BODY = _json({"name": {"type": "string"}, "mode": {"type": "string", "enum": [
    "personal", "permission_personal", "anonymous", "unique", "blind"]},
    "sent_at": {"type": "string", "format": "date-time"}}, ["name", "mode"])
SITE_BODY = _json({"domain": {"type": "string"}, "mode": {"type": "string", "enum": ["personal", "unique", "blind"]},
                   "dnt": {"type": "string", "enum": ["off", "blind", "ignore"]},
                   "cookieless": {"type": "boolean"}, "spa_hash": {"type": "boolean"}}, ["domain", "mode"])
CSV_BODY = {"text/csv": {"schema": {"type": "string",
                                    "description": "recipient,consent,birth_year,gender,zip; all rows or none"}}}
REPORT = "The same report as `pixeltrack report --format json` (or csv)"


def spec() -> dict[str, Any]:
    """The whole description."""
    job, site, token = _id("job_id"), _id("site_id"), _id("token_id")
    paths = {
        "/api/v1/openapi.json": {"get": _op("This description")},
        "/api/v1/jobs": {"get": _op("Mail jobs with their recipient counts"),
                         "post": _op("Create a mail job", "201", admin=True, body=JOB_BODY)},
        "/api/v1/jobs/{job_id}/report": {"get": {**_op(REPORT, params=[job, FORMAT])}},
        "/api/v1/jobs/{job_id}/recipients": {"post": _op("Import recipients from CSV", admin=True, params=[job],
                                                         body=CSV_BODY)},
        "/api/v1/jobs/{job_id}/forget": {"post": _op("Erase a recipient of the job", admin=True, params=[job],
                                                     body=_json({"recipient": {"type": "string"}}, ["recipient"]))},
        "/api/v1/sites": {"get": _op("Tracked websites"),
                          "post": _op("Create a website; returns its key and snippet", "201", admin=True,
                                      body=SITE_BODY)},
        "/api/v1/sites/{site_id}/report": {"get": _op(REPORT, params=[site, FORMAT])},
        "/api/v1/tokens": {"get": _op("API tokens (never their secrets)", admin=True)},
        "/api/v1/tokens/{token_id}": {"delete": _op("Revoke an API token", "204", admin=True, params=[token])},
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "pixeltrack report API", "version": "1"},
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "a token from `pixeltrack token create`"}},
            "responses": {"Error": {"description": "an error", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"error": {"type": "object", "properties": {
                    "status": {"type": "integer"}, "message": {"type": "string"}}}}}}}}},
        },
    }
