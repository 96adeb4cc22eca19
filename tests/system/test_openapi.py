"""The OpenAPI document: GET /api/v1/openapi.json and headscale's /swagger/v1/openapiv2.json,
both public, in headscale's swagger 2.0 shape. The unit test tests/unit/test_api.c (openapi/*)
holds it to the server's route table both ways; here it is checked against the swagger 2.0
schema and against the document headscale v0.29.3 serves: every operation of theirs is one
of ours, under the same operationId and with the same parameters."""

import re

import pytest

from refserver import needs_ref, sides  # noqa: F401  (fixture)

try:
    from openapi_spec_validator import validate
    from openapi_spec_validator.validation import OpenAPIV2SpecValidator
except ImportError:  # the check against the schema is skipped without the package
    validate = None


def pattern(path):
    return re.sub(r"\{[^}]*\}", "{}", path)


def operations(doc):
    """{(METHOD, pattern): operation}"""
    return {(m.upper(), pattern(p)): op for p, ops in doc["paths"].items()
            for m, op in ops.items()}


def test_both_paths_serve_it_without_a_key(mserver):
    st, _, a = mserver.api_full("GET", "/api/v1/openapi.json", key=None)
    st2, hdrs, b = mserver.api_full("GET", "/swagger/v1/openapiv2.json", key=None)
    assert st == st2 == 200, (st, st2)
    assert "json" in hdrs.get("content-type", ""), hdrs
    assert a == b and a["swagger"] == "2.0", a.get("swagger")


@pytest.mark.skipif(validate is None, reason="openapi-spec-validator not installed")
def test_valid_swagger_2(mserver):
    validate(mserver.api_ok("GET", "/api/v1/openapi.json", key=None), cls=OpenAPIV2SpecValidator)


def test_every_operation_answers(mserver):
    """Each documented operation is routed: no 404 "no such endpoint" or 405 for it."""
    doc = mserver.api_ok("GET", "/api/v1/openapi.json", key=None)
    for (method, pat), op in operations(doc).items():
        path = pat.replace("{}", "999999")
        st, body = mserver.api(method, path)
        unrouted = st == 405 or (st == 404 and "no such endpoint" in str(body))
        assert not unrouted, (method, path, st, body)


@needs_ref
def test_headscale_operations_are_ours(sides):  # noqa: F811
    ours_side, ref_side = sides
    st, _, ours = ours_side.request("GET", "/swagger/v1/openapiv2.json", auth=False)
    st2, _, theirs = ref_side.request("GET", "/swagger/v1/openapiv2.json", auth=False)
    assert st == st2 == 200, (st, st2)
    assert ours["swagger"] == theirs["swagger"] == "2.0"
    mine = operations(ours)
    missing, differ = [], []
    for key, op in operations(theirs).items():
        if key not in mine:
            missing.append(key)
            continue
        if mine[key]["operationId"] != op["operationId"]:
            differ.append((key, mine[key]["operationId"], op["operationId"]))
        want = sorted((p["in"], p["name"]) for p in op.get("parameters", []) if p["in"] != "path")
        have = sorted((p["in"], p["name"]) for p in mine[key].get("parameters", [])
                      if p["in"] != "path")
        if not set(want) <= set(have):
            differ.append((key, have, want))
    assert not missing, f"headscale serves, we do not document: {missing}"
    assert not differ, differ
