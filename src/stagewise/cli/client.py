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

from stagewise.basics import proc
from stagewise.errors import ServerRefusedError, ServerUnreachableError


def default_state() -> Path:
    return Path(os.environ.get("STAGEWISE_STATE", ".stagewise"))


def _server_in(path: Path) -> dict[str, Any] | None:
    """What a server wrote of itself in `path` (its url, pid and start time), or None when unreadable."""
    try:
        info = json.loads(path.read_text())
        str(info["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info if isinstance(info, dict) else None


def _runs(info: dict[str, Any]) -> bool:
    pid, start = info.get("pid"), info.get("start_time")
    if not isinstance(pid, int):
        return True  # written by an older server: take its word
    return proc.running(pid, start if isinstance(start, int) else None)


def live_server(state_dir: Path) -> dict[str, Any] | None:
    """The server of `server.json`; when it is gone, another server sharing the directory (`servers/PID.json`:
    several servers on one PostgreSQL store may share it); the stale one when none runs, so its end is told."""
    main = _server_in(state_dir / "server.json")
    if main is not None and _runs(main):
        return main
    servers = state_dir / "servers"
    for path in sorted(servers.glob("*.json")) if servers.is_dir() else []:
        other = _server_in(path)
        if other is not None and _runs(other):
            return other
    return main


class Client:
    def __init__(self, state_dir: Path, *, timeout: float = 10.0) -> None:
        self.state_dir = state_dir
        info = state_dir / "server.json"
        found = live_server(state_dir)
        if found is None:
            raise ServerUnreachableError(
                f"no stagewise server for state directory {state_dir} (no {info}); "
                f"start one with: stagewise server --state {state_dir}"
            )
        self.server: dict[str, Any] = found
        self.url = str(found["url"])
        token_file = state_dir / "token"
        self.token = os.environ.get("STAGEWISE_TOKEN", "").strip() or (
            token_file.read_text().strip() if token_file.exists() else "")
        self.http = httpx.Client(base_url=self.url, timeout=timeout)

    @classmethod
    def answering(cls, state_dir: Path) -> Client | None:
        """A client of the server of `state_dir` if one answers now (its health route); else None."""
        try:
            client = cls(state_dir)
        except ServerUnreachableError:
            return None
        try:
            client.get("/api/v1/health")
        except ServerUnreachableError:
            client.close()
            return None
        return client

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
            raise ServerUnreachableError(self._unreachable(exc)) from exc
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"detail": response.text}
            raise ServerRefusedError(response.status_code, str(body.get("detail", response.text)), body)
        return response.json()

    def _unreachable(self, exc: httpx.TransportError) -> str:
        """Why the server does not answer, as far as can be told: a server.json left by a process gone says so."""
        pid, start = self.server.get("pid"), self.server.get("start_time")
        if isinstance(pid, int) and not proc.running(pid, start if isinstance(start, int) else None):
            return (f"the stagewise server of {self.state_dir} (pid {pid}, {self.url}) no longer runs: it ended "
                    f"without removing {self.state_dir / 'server.json'} (killed?); start one with: "
                    f"stagewise server --state {self.state_dir}")
        return f"the stagewise server at {self.url} does not answer ({exc}); is it running?"

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, json_body: Any = None, **params: Any) -> Any:
        return self.request("POST", path, json=json_body, params=params)
