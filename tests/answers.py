"""What tests read from the API's answers: the error shape of a refusal, the dashboard's forms."""

from __future__ import annotations

import re
from typing import Any


def assert_error(response: Any, status: int, code: str) -> str:
    """``response`` is ``status`` with ``{"error": {"code": code, "message": ...}}`` and nothing else; its message."""
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return str(body["error"]["message"])


def csrf_of(page: str) -> str:
    """The CSRF token a dashboard page's forms carry."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "the page has a form with a CSRF token"
    return found[1]


def sign_in(client: Any, token: str) -> str:
    """Sign a test client in to the dashboard through its form; the session's CSRF token."""
    form = client.get("/dashboard/login").get_data(as_text=True)
    answer = client.post("/dashboard/login", data={"token": token, "csrf_token": csrf_of(form)})
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/dashboard/"), answer.status_code
    return csrf_of(client.get("/dashboard/").get_data(as_text=True))
