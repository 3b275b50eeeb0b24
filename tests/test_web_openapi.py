"""The OpenAPI document (GET /openapi.json) against the app's real routes
and the error table: every route described, nothing described that is not
served. (tox -e api fuzzes a live server against it with Schemathesis.)"""

from __future__ import annotations

import httpx
import pytest
from starlette.routing import Route

import plugwarden
from plugwarden.error_types import HTTP_STATUS, ErrorType
from plugwarden.web.apischemas import ERROR_BODY_TYPES
from plugwarden.web.app import create_app
from plugwarden.web.openapi import document

TOKEN = "openapi-token"
METHODS = {"get", "post", "put", "delete", "patch"}


def served_routes(app) -> set[tuple[str, str]]:
    return {
        (route.path, method.lower())
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }


def documented_routes(doc) -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, item in doc["paths"].items()
        for method in item
        if method in METHODS
    }


def refs(node) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(refs(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(refs(value) for value in node))
    return set()


@pytest.fixture
def app(plugwarden_host):
    return create_app(plugwarden_host({"server": {"token": TOKEN}}))


class TestDocument:
    def test_every_served_route_is_documented_and_nothing_else(self, app):
        doc = document(plugwarden.__version__)
        assert served_routes(app) == documented_routes(doc)

    def test_every_operation_has_an_id_a_summary_and_answers(self, app):
        doc = document(plugwarden.__version__)
        ids = []
        for path, item in doc["paths"].items():
            for method, operation in item.items():
                if method not in METHODS:
                    continue
                assert operation["summary"], (path, method)
                assert any(code.startswith("2") for code in operation["responses"]), (path, method)
                ids.append(operation["operationId"])
        assert len(ids) == len(set(ids))

    def test_every_reference_resolves(self):
        doc = document(plugwarden.__version__)
        schemas = doc["components"]["schemas"]
        for target in refs(doc):
            assert target.startswith("#/components/schemas/")
            assert target.rsplit("/", 1)[1] in schemas, target

    def test_links_name_operations_that_exist(self):
        doc = document(plugwarden.__version__)
        operations = {
            op["operationId"]
            for item in doc["paths"].values()
            for m, op in item.items()
            if m in METHODS
        }
        linked = {
            link["operationId"]
            for item in doc["paths"].values()
            for m, op in item.items()
            if m in METHODS
            for answer in op["responses"].values()
            for link in answer.get("links", {}).values()
        }
        assert linked and linked <= operations

    def test_error_bodies_name_every_refusal_in_the_status_table(self):
        assert set(HTTP_STATUS) | {ErrorType.HTTP_ERROR} == set(ERROR_BODY_TYPES)
        doc = document(plugwarden.__version__)
        enum = doc["components"]["schemas"]["Error"]["properties"]["error_type"]["enum"]
        assert set(enum) == set(ERROR_BODY_TYPES)

    def test_token_routes_document_their_refusals(self):
        doc = document(plugwarden.__version__)
        for path, item in doc["paths"].items():
            for method, operation in item.items():
                if method in METHODS and operation["security"] == [{"bearer": []}]:
                    assert {"401", "403"} <= set(operation["responses"]), (path, method)


class TestServed:
    def test_the_live_server_serves_the_document(self, plugwarden_server):
        server = plugwarden_server({"server": {"token": TOKEN}})
        answer = httpx.get(server.url + "/openapi.json", timeout=30)
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/json"
        body = answer.json()
        assert body["openapi"] == "3.1.0"
        assert body["info"]["version"] == plugwarden.__version__
        assert "/v1/plugins/{name}/run" in body["paths"]

    def test_closed_reads_close_the_document_too(self, plugwarden_server):
        server = plugwarden_server({"server": {"token": TOKEN, "public_reads": False}})
        assert httpx.get(server.url + "/openapi.json", timeout=30).status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.get(server.url + "/openapi.json", headers=auth, timeout=30).status_code == 200

    def test_a_wrong_method_is_answered_with_every_method_the_path_serves(self, plugwarden_server):
        server = plugwarden_server({"server": {"token": TOKEN}})
        for path, methods in (
            ("/v1/jobs/0123", {"GET", "DELETE"}),
            ("/v1/plugins", {"GET", "POST"}),
            ("/v1/plugins/x", {"GET", "DELETE"}),
        ):
            answer = httpx.request("PUT", server.url + path, timeout=30)
            assert answer.status_code == 405, path
            allowed = {m.strip() for m in answer.headers["allow"].split(",")}
            assert methods <= allowed, (path, allowed)
            assert answer.json()["error_type"] == "MethodNotAllowed"
