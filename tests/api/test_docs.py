"""/docs and /redoc work offline: every asset the pages name is served by ern itself."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient


class _Assets(HTMLParser):
    """The URLs of scripts, stylesheets, icons and images a page loads."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        for attr in ("src", "href"):
            url = named.get(attr)
            if url and tag in ("script", "link", "img"):
                self.urls.append(url)


def _assets(html: str) -> list[str]:
    parser = _Assets()
    parser.feed(html)
    return parser.urls


class TestOfflineDocs:
    @pytest.mark.parametrize("page", ["/docs", "/redoc"])
    def test_every_asset_of_the_page_is_served_locally(self, client: TestClient, page: str) -> None:
        answer = client.get(page)
        assert answer.status_code == 200
        assets = _assets(answer.text)
        assert len(assets) >= 2, assets  # the script and the favicon at least
        for url in assets:
            assert url.startswith("/") and not url.startswith("//"), url
            served = client.get(url)
            assert served.status_code == 200, url
            assert len(served.content) > 0, url
        # Nothing in the page (inline scripts included) points at another host.
        assert "https://" not in answer.text and "http://" not in answer.text

    def test_swagger_ui_reads_ern_s_own_openapi(self, client: TestClient) -> None:
        page = client.get("/docs").text
        assert "/openapi.json" in page
        assert "/docs-static/swagger-ui-bundle.js" in page
        assert client.get("/openapi.json").json()["info"]["title"] == "ern"
        assert client.get("/docs/oauth2-redirect").status_code == 200
