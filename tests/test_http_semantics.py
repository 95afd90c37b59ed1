"""Plain HTTP as strict clients and uptime checkers use it, against a real `localflow api`
process (no worker: tasks stay queued, so their versions only change when a test changes them).

HEAD and OPTIONS, Location on 201, ETag / If-Match / If-None-Match on tasks and schedules,
static files that cache, revalidate (304) and compress, and the API docs page with no network.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import re
from collections.abc import Iterator

import httpx
import pytest

from tests import procs

pytestmark = pytest.mark.e2e

ECHO = {"type": "shell", "payload": {"command": "echo", "args": ["hi"]}}
SCHEDULE = {"name": "nightly", "cron_expr": "0 3 * * *", "task_type": "shell",
            "payload": {"command": "echo", "args": ["night"]}}


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[httpx.Client]:
    db = tmp_path_factory.mktemp("http") / "http.db"
    proc = procs.start("api", db)
    try:
        with httpx.Client(base_url=proc.url, timeout=30) as client:
            client.db_path = db  # type: ignore[attr-defined]
            yield client
    finally:
        proc.stop()


def _task(api: httpx.Client) -> dict:
    r = api.post("/api/tasks", json=ECHO)
    assert r.status_code == 201, r.text
    return r.json()


def _schedule(api: httpx.Client) -> httpx.Response:
    r = api.post("/api/schedules", json=SCHEDULE)
    assert r.status_code == 201, r.text
    return r


# -- HEAD and OPTIONS ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/health", "/metrics", "/api/tasks", "/api/schedules",
                                  "/dashboard", "/schema", "/schema/openapi.json"])
def test_head_answers_like_get_without_a_body(api, path):
    get = api.get(path)
    head = api.head(path)
    assert get.status_code == 200
    assert head.status_code == 200, head.text
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    if path not in ("/metrics", "/dashboard"):  # those two change between the requests
        assert head.headers["content-length"] == get.headers["content-length"]


def test_head_is_counted_as_head_on_its_route(api):
    api.head("/api/schedules")
    metrics = api.get("/metrics").text
    assert re.search(
        r'localflow_http_requests_total\{method="HEAD",route="/api/schedules",status="200"\} '
        r"[1-9]", metrics)


def test_head_of_a_missing_task_is_404_like_get(api):
    assert api.head("/api/tasks/01NOSUCHTASK00000000000000").status_code == 404


@pytest.mark.parametrize(("path", "allow"), [
    ("/api/tasks", "GET, HEAD, POST, OPTIONS"),
    ("/api/tasks/{task}", "GET, HEAD, DELETE, OPTIONS"),
    ("/api/tasks/batch", "POST, OPTIONS"),
    ("/api/tasks/{task}/cancel", "POST, OPTIONS"),
    ("/api/schedules", "GET, HEAD, POST, OPTIONS"),
    ("/api/schedules/{schedule}", "GET, HEAD, PUT, DELETE, OPTIONS"),
    ("/health", "GET, HEAD, OPTIONS"),
    ("/metrics", "GET, HEAD, OPTIONS"),
])
def test_options_and_405_list_every_method_of_the_path(api, path, allow):
    path = path.format(task="01NOSUCHTASK00000000000000", schedule="01NOSUCHSCHEDULE0000000000")
    options = api.options(path)
    assert options.status_code == 204
    assert options.headers["allow"] == allow
    wrong = api.request("PATCH", path)
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == allow
    assert wrong.headers["content-type"] == "application/problem+json"


# -- Location and the idempotent replay ----------------------------------------------------


def test_201_carries_location_of_what_was_made(api):
    r = api.post("/api/tasks", json=ECHO)
    assert r.status_code == 201
    assert r.headers["location"] == f"/api/tasks/{r.json()['id']}"
    assert api.get(r.headers["location"]).json()["id"] == r.json()["id"]

    s = _schedule(api)
    assert s.headers["location"] == f"/api/schedules/{s.json()['id']}"
    assert api.get(s.headers["location"]).json()["name"] == "nightly"

    run = api.post(f"/api/schedules/{s.json()['id']}/run")
    assert run.status_code == 201
    assert run.headers["location"] == f"/api/tasks/{run.json()['id']}"
    assert api.get(run.headers["location"]).json()["schedule_id"] == s.json()["id"]


def test_idempotent_replay_is_200_with_the_original_and_its_location(api):
    body = {**ECHO, "idempotency_key": "replay-semantics-1"}
    first = api.post("/api/tasks", json=body)
    again = api.post("/api/tasks", json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]


# -- ETag and conditional requests ---------------------------------------------------------


def test_task_etag_and_if_none_match(api):
    task = _task(api)
    r = api.get(f"/api/tasks/{task['id']}")
    etag = r.headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]{24}"', etag)
    again = api.get(f"/api/tasks/{task['id']}", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    other = api.get(f"/api/tasks/{task['id']}", headers={"If-None-Match": '"other"'})
    assert other.status_code == 200 and other.json()["id"] == task["id"]


def test_task_delete_with_a_stale_if_match_is_412_and_deletes_nothing(api):
    task = _task(api)
    url = f"/api/tasks/{task['id']}"
    for stale in ('"nope"', "nope"):  # the exact request, and an unquoted one
        r = api.delete(url, headers={"If-Match": stale})
        assert r.status_code == 412, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["title"] == "Precondition Failed"
        assert api.get(url).status_code == 200  # still there
    # Cancelling makes a new version: the ETag read before no longer deletes it.
    before = api.get(url).headers["etag"]
    cancelled = api.post(f"{url}/cancel", headers={"If-Match": before})
    assert cancelled.status_code == 200
    assert cancelled.headers["etag"] != before
    assert api.delete(url, headers={"If-Match": before}).status_code == 412
    assert api.delete(url, headers={"If-Match": cancelled.headers["etag"]}).status_code == 204
    assert api.get(url).status_code == 404


def test_if_match_star_and_lists(api):
    task = _task(api)
    url = f"/api/tasks/{task['id']}"
    etag = api.get(url).headers["etag"]
    r = api.post(f"{url}/cancel", headers={"If-Match": f'"x", {etag}'})
    assert r.status_code == 200
    assert api.delete(url, headers={"If-Match": "*"}).status_code == 204
    assert api.delete(url, headers={"If-Match": "*"}).status_code == 404


def test_two_people_editing_one_schedule(api):
    """Both read version 1; the first save wins, the second gets 412 and changes nothing."""
    s = _schedule(api)
    url = s.headers["location"]
    etag = api.get(url).headers["etag"]
    assert etag == s.headers["etag"]
    alice = api.put(url, json={"name": "alice"}, headers={"If-Match": etag})
    assert alice.status_code == 200
    assert alice.headers["etag"] != etag
    bob = api.put(url, json={"name": "bob"}, headers={"If-Match": etag})
    assert bob.status_code == 412
    assert "changed since you read it" in bob.json()["detail"]
    assert api.get(url).json()["name"] == "alice"
    # Bob reads again and saves on the current version.
    current = api.get(url).headers["etag"]
    assert api.put(url, json={"name": "bob"}, headers={"If-Match": current}).status_code == 200
    assert api.delete(url, headers={"If-Match": current}).status_code == 412
    assert api.get(url).json()["name"] == "bob"
    assert api.delete(url, headers={"If-Match": api.get(url).headers["etag"]}).status_code == 204


def test_concurrent_conditional_saves_let_exactly_one_through(api):
    s = _schedule(api)
    url = s.headers["location"]
    etag = s.headers["etag"]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(
            lambda i: api.put(url, json={"name": f"editor {i}"},
                              headers={"If-Match": etag}).status_code,
            range(8),
        ))
    assert sorted(codes) == [200] + [412] * 7


def test_a_fire_does_not_change_the_schedule_etag(api):
    """The ETag versions the definition: a run (last task, fire bookkeeping) is no conflict."""
    s = _schedule(api)
    url = s.headers["location"]
    etag = api.get(url).headers["etag"]
    assert api.post(f"{url}/run").status_code == 201
    assert api.get(url).json()["last_task_id"] is not None
    assert api.get(url).headers["etag"] == etag


@pytest.mark.parametrize(("method", "path", "header"), [
    ("POST", "/api/tasks", "If-Match"),
    ("POST", "/api/schedules", "If-Match"),
    ("DELETE", "/api/tasks/{task}", "If-Unmodified-Since"),
    ("DELETE", "/api/tasks/{task}", "If-None-Match"),
])
def test_conditions_an_operation_does_not_honour_are_400(api, method, path, header):
    task = _task(api)
    value = "Tue, 01 Dec 2026 00:00:00 GMT" if header == "If-Unmodified-Since" else '"x"'
    body = ECHO if path == "/api/tasks" else SCHEDULE if "schedules" in path else None
    tasks, schedules = procs.task_count(api.db_path), len(api.get("/api/schedules").json())
    r = api.request(method, path.format(task=task["id"]), json=body, headers={header: value})
    assert r.status_code == 400, r.text
    assert header in r.json()["detail"]
    # Nothing was made or deleted.
    assert api.get(f"/api/tasks/{task['id']}").status_code == 200
    assert procs.task_count(api.db_path) == tasks
    assert len(api.get("/api/schedules").json()) == schedules


def test_empty_if_match_is_400(api):
    task = _task(api)
    r = api.delete(f"/api/tasks/{task['id']}", headers={"If-Match": ""})
    assert r.status_code == 400
    assert api.get(f"/api/tasks/{task['id']}").status_code == 200


def test_repeated_or_null_query_parameters_are_400(api):
    for query in ("status=queued&status=failed", "limit=5&limit=6", "status=null"):
        r = api.get(f"/api/tasks?{query}")
        assert r.status_code == 400, (query, r.text)
        assert r.json()["errors"][0]["field"] in ("status", "limit")


# -- static files --------------------------------------------------------------------------


def _linked_assets(api: httpx.Client) -> list[str]:
    page = api.get("/dashboard").text
    return re.findall(r'(?:href|src)="(/dashboard/static/[^"]+)"', page)


def test_pages_link_versioned_static_files_that_cache_for_a_year(api):
    links = _linked_assets(api)
    assert links and all(re.fullmatch(r"/dashboard/static/[0-9a-f]{12}/[\w.-]+", u) for u in links)
    for link in links:  # e.g. idiomorph-ext.min.js: a hyphen in a name is served the same way
        r = api.get(link)
        assert r.status_code == 200, link
        assert r.headers["cache-control"] == "public, max-age=31536000, immutable"


def test_unversioned_static_files_revalidate_and_answer_304(api):
    url = "/dashboard/static/htmx.min.js"
    r = api.get(url, headers={"Accept-Encoding": "identity"})
    assert r.status_code == 200
    assert r.headers["cache-control"] == "public, no-cache"
    etag, modified = r.headers["etag"], r.headers["last-modified"]
    by_tag = api.get(url, headers={"If-None-Match": etag})
    assert by_tag.status_code == 304 and by_tag.content == b""
    assert by_tag.headers["etag"] in (etag, etag[:-1] + '-gzip"')
    by_date = api.get(url, headers={"If-Modified-Since": modified})
    assert by_date.status_code == 304
    stale = api.get(url, headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"})
    assert stale.status_code == 200 and len(stale.content) == len(r.content)
    # If-None-Match decides when both are sent (RFC 9110 13.2.2).
    both = api.get(url, headers={"If-None-Match": '"other"', "If-Modified-Since": modified})
    assert both.status_code == 200


def test_static_files_are_gzipped_when_the_client_accepts_it(api):
    url = "/dashboard/static/htmx.min.js"
    plain = api.get(url, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    with httpx.stream("GET", f"{api.base_url}{url}", headers={"Accept-Encoding": "gzip"}) as r:
        raw = b"".join(r.iter_raw())
        assert r.headers["content-encoding"] == "gzip"
        assert r.headers["vary"] == "Accept-Encoding"
    assert len(raw) < len(plain.content) / 2
    assert gzip.decompress(raw) == plain.content
    assert api.get("/dashboard/static/nope.js").status_code == 404


# -- the API docs page ---------------------------------------------------------------------


def test_docs_page_needs_no_network(api):
    page = api.get("/schema")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    # Nothing loaded from elsewhere: no absolute URL at all in the page.
    assert not re.search(r"(?:src|href)=\"(?:https?:)?//", page.text), page.text
    assert "fonts.googleapis" not in page.text and "cdn" not in page.text.lower()
    # And the browser is told to load nothing from elsewhere (Redoc's footer would fetch a logo).
    assert "default-src 'self'" in page.headers["content-security-policy"]
    script = re.search(r'<script src="(/schema/ui/[0-9a-f]{12}/redoc\.standalone\.js)"',
                       page.text)
    assert script, page.text
    js = api.get(script.group(1))
    assert js.status_code == 200
    assert js.headers["content-type"].startswith("text/javascript")
    assert js.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert len(js.content) > 500_000  # the real bundle, vendored
    assert 'spec-url="/schema/openapi.json"' in page.text
    assert "MIT" in api.get("/schema/ui/redoc.LICENSE").text
