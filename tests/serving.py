"""Test servers on loopback served from a thread, started and stopped one way.

The tests run real HTTP and TCP servers of their own (upstreams, exporters, web
hooks' receivers) in a thread of the test process; each is served until it is
stopped, and stopping it waits for its thread, so no test leaves one behind.
"""

from __future__ import annotations

import contextlib
import socketserver
import threading
from collections.abc import Iterator
from typing import Any


class InThread:
    """For a `socketserver` server class: `serve_in_thread()` once bound, `stop()` at the end."""

    thread: threading.Thread
    server_address: Any

    def serve_in_thread(self, poll_interval: float = 0.01) -> None:
        assert isinstance(self, socketserver.BaseServer)
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": poll_interval},
                                       daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        """host:port where it listens."""
        return f"127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        assert isinstance(self, socketserver.BaseServer)
        self.shutdown()
        self.server_close()
        self.thread.join(5)


@contextlib.contextmanager
def serving(server: socketserver.BaseServer, poll_interval: float = 0.5) -> Iterator[str]:
    """Serve `server` from a thread for the block; its host:port."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": poll_interval}, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
