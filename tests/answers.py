"""What every test of the HTTP contract checks of a refusal: the documented error shape."""

from __future__ import annotations

from typing import Any


def assert_error(response: Any, status: int, code: str) -> str:
    """``response`` is ``status`` with ``{"error": {"code": code, "message": ...}}`` and nothing else; its message."""
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return str(body["error"]["message"])
