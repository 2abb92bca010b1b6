"""Zoo test helpers: an isolated weights cache, a loopback HTTP server, patched weights, legacy .h5 files."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import os
import socket
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest


@pytest.fixture(autouse=True)
def autodl_home(tmp_path, monkeypatch) -> Path:
    """Every zoo test gets its own empty cache: nothing touches ~/.cache or the network."""
    home = tmp_path / "autodl-home"
    monkeypatch.setenv("AUTODL_HOME", str(home))
    # The loopback server must be reached directly even where an HTTP proxy is configured.
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, ",".join(filter(None, [os.environ.get(var, ""), "127.0.0.1", "localhost"])))
    return home


class LoopbackServer:
    """Serves in-memory files on 127.0.0.1; records the requested paths.

    ``truncate`` paths announce twice their length in Content-Length, send the
    body and close the connection, like a download cut off half-way.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802  (http.server's naming)
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                length = 2 * len(body) if self.path in server.truncate else len(body)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def log_message(self, *args: Any) -> None:  # keep the test output clean
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A short poll interval makes shutdown() quick at teardown.
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def serve(self, path: str, body: bytes, *, truncate: bool = False) -> str:
        """Publishes ``body`` at ``path``; returns its URL."""
        self.files[path] = body
        if truncate:
            self.truncate.add(path)
        return self.url + path


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    srv = LoopbackServer()
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/weights.h5"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def patch_weights(monkeypatch) -> Callable[..., Any]:
    """``patch_weights(name, weights)`` swaps a registered entry's ``card.pretrained`` for the test."""
    from autodl.zoo import get, registry

    def patch(name: str, weights: Any) -> Any:
        entry = get(name)
        patched = dataclasses.replace(entry, card=dataclasses.replace(entry.card, pretrained=weights))
        monkeypatch.setitem(registry._ENTRIES, name, patched)
        return patched

    return patch


def save_legacy_h5(model: Any, path: Path) -> Path:
    """Writes ``model``'s weights in the legacy order-based .h5 layout that Keras Applications publish."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return path
