"""/schema in a real browser with every request beyond the server refused: the API docs page
must render from LocalFlow's own files (issue 15 #10: it loaded Redoc and fonts from the web and
was blank offline)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

pytestmark = pytest.mark.browser


def test_api_docs_render_with_no_network(browser, live):
    server = urlsplit(live.url).netloc
    elsewhere: list[str] = []
    page = browser.new_page()
    try:
        def only_the_server(route):
            if urlsplit(route.request.url).netloc == server:
                route.continue_()
            else:
                elsewhere.append(route.request.url)
                route.abort()

        page.route("**/*", only_the_server)
        page.goto(f"{live.url}/schema")
        # Redoc has fetched the document and drawn the operations.
        page.get_by_role("heading", name="Submit a task").wait_for(timeout=60_000)
        assert page.get_by_role("heading", name="Update a schedule").is_visible()
        assert elsewhere == []
    finally:
        page.close()
