"""The CLI's HTTP client: finds the server and its token in the state directory.

The token is `STAGEWISE_TOKEN` when set (a person's own, made with `stagewise
token create`), else the server's own from the state directory's file
`token`; it goes with every request, reads too, so a server that requires a
token for reads (`--reads token`) answers them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx

from stagewise.errors import StagewiseError


class Unreachable(StagewiseError):
    """No server answers for this state directory (exit code 3)."""


class ApiError(StagewiseError):
    """The server refused a request; `status` is its HTTP status."""

    def __init__(self, status: int, detail: str, body: dict[str, Any] | None = None) -> None:
        self.status, self.detail, self.body = status, detail, body or {}
        super().__init__(detail)


def default_state() -> Path:
    return Path(os.environ.get("STAGEWISE_STATE", ".stagewise"))


def _url_in(path: Path) -> tuple[str, int | None] | None:
    try:
        info = json.loads(path.read_text())
        return str(info["url"]), info.get("pid")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive(pid: int | None) -> bool:
    if pid is None:
        return True  # written by an older server: take its word
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _live_server(state_dir: Path) -> str | None:
    """The address in `server.json`; when its server is gone, that of another server sharing the directory
    (`servers/PID.json`: several servers on one PostgreSQL store may share it)."""
    main = _url_in(state_dir / "server.json")
    if main is not None and _alive(main[1]):
        return main[0]
    for path in sorted((state_dir / "servers").glob("*.json")) if (state_dir / "servers").is_dir() else []:
        other = _url_in(path)
        if other is not None and _alive(other[1]):
            return other[0]
    return main[0] if main is not None else None


class Client:
    def __init__(self, state_dir: Path, *, timeout: float = 10.0) -> None:
        self.state_dir = state_dir
        info = state_dir / "server.json"
        found = _live_server(state_dir)
        if found is None:
            raise Unreachable(
                f"no stagewise server for state directory {state_dir} (no {info}); "
                f"start one with: stagewise server --state {state_dir}"
            )
        self.url = found
        token_file = state_dir / "token"
        self.token = os.environ.get("STAGEWISE_TOKEN", "").strip() or (
            token_file.read_text().strip() if token_file.exists() else "")
        self.http = httpx.Client(base_url=self.url, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = self.http.request(method, path, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise Unreachable(f"the stagewise server at {self.url} does not answer ({exc}); is it running?") from exc
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"detail": response.text}
            raise ApiError(response.status_code, str(body.get("detail", response.text)), body)
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, json_body: Any = None, **params: Any) -> Any:
        return self.request("POST", path, json=json_body, params=params)
