"""The polled routes from cached bytes: what the list and health
caches answer, and when they must not."""

from __future__ import annotations

import json

import httpx
import pytest

from plugwarden import State
from plugwarden.web import listing as listing_module
from plugwarden.web.listing import Listing
from tests.conftest import ECHO, wait_for


def _body(listing: Listing, host) -> list[dict]:
    version = host.records_version
    return json.loads(listing.build(version, host.statuses()))


class TestListingCache:
    @pytest.fixture
    def ageless(self, monkeypatch):
        """Age never expires the list in these tests: what they check is what
        a change does."""
        monkeypatch.setattr(listing_module, "LIST_MAX_AGE_S", 3600.0)

    def test_a_call_keeps_the_cached_list_and_a_state_change_drops_it(
        self, plugwarden_plugin, plugwarden_host, ageless
    ):
        plugwarden_plugin("p", ECHO)
        plugwarden_plugin("q", ECHO)
        host = plugwarden_host({"defaults": {"restart": "never"}})
        listing = Listing(host)
        assert listing.fresh() is None  # nothing built yet
        built = _body(listing, host)
        assert [item["success_count"] for item in built] == [0, 0]
        cached = listing.fresh()
        assert cached is not None and json.loads(cached) == built
        assert host.call("p", "t", {}).ok
        assert listing.fresh() is cached  # a call's counters wait for the age limit
        host._registry.fail("q", "stopped by the test")
        assert listing.fresh() is None  # a state change is never served stale
        rebuilt = {item["name"]: item for item in _body(listing, host)}
        assert rebuilt["q"]["state"] == "FAILED" and rebuilt["q"]["reason"] == "stopped by the test"
        assert rebuilt["p"]["success_count"] == 1

    def test_a_rebuild_reformats_only_the_records_that_changed(
        self, plugwarden_plugin, plugwarden_host, ageless
    ):
        plugwarden_plugin("p", ECHO)
        plugwarden_plugin("q", ECHO)
        host = plugwarden_host()
        listing = Listing(host)
        _body(listing, host)
        before = dict(listing._pieces)
        assert host.call("p", "t", {}).ok
        _body(listing, host)
        assert listing._pieces["q"] is before["q"]
        assert listing._pieces["p"] is not before["p"]

    def test_age_rebuilds_the_list(self, plugwarden_plugin, plugwarden_host, monkeypatch):
        monkeypatch.setattr(listing_module, "LIST_MAX_AGE_S", 0.0)
        plugwarden_plugin("p", ECHO)
        host = plugwarden_host()
        listing = Listing(host)
        _body(listing, host)
        assert listing.fresh() is None

    def test_health_is_served_only_from_a_cached_record(self, plugwarden_plugin, plugwarden_host):
        plugwarden_plugin("p", ECHO)
        host = plugwarden_host()
        listing = Listing(host)
        host.status("p")  # a locked read fills the cache
        cached = listing.health("p")
        assert cached is not None and json.loads(cached)["state"] == "INITIALIZED"
        assert host.call("p", "t", {}).ok
        assert listing.health("p") is None  # changed since: the route reads it under the lock
        assert listing.health("ghost") is None
        for path in ("/v1/plugins/p/health/x", "/v1/plugins//health", "/v1/plugins/a/b/health"):
            assert listing.answer(path) is None


class TestOverHttp:
    def test_cached_and_uncached_answers_agree(self, plugwarden_plugin, plugwarden_server):
        plugwarden_plugin("p", ECHO)
        server = plugwarden_server()
        url = server.url + "/v1/plugins/p/health"
        first, second = httpx.get(url).json(), httpx.get(url).json()
        for record in (first, second):
            record.pop("uptime_seconds")
        assert first == second and first["state"] == "INITIALIZED"
        assert httpx.head(url).status_code == 200  # not a GET: Starlette's route answers
        missing = httpx.get(server.url + "/v1/plugins/ghost/health")
        assert missing.status_code == 404 and missing.json()["error_type"] == "UnknownPlugin"
        nested = httpx.get(server.url + "/v1/plugins/a/b/health")
        assert nested.status_code == 404 and nested.json()["error_type"] == "NotFound"

    def test_the_list_shows_a_call_once_its_age_limit_passed(
        self, plugwarden_plugin, plugwarden_server
    ):
        plugwarden_plugin("p", ECHO)
        server = plugwarden_server()
        listed = httpx.get(server.url + "/v1/plugins").json()
        assert listed[0]["success_count"] == 0
        assert server.host.call("p", "t", {}).ok

        def counted() -> bool:
            return httpx.get(server.url + "/v1/plugins").json()[0]["success_count"] == 1

        wait_for(counted, what="the list to count the call")
        record = httpx.get(server.url + "/v1/plugins/p").json()  # always current
        assert record["success_count"] == 1 and record["state"] == State.INITIALIZED.value
