"""Running the API: `serve` blocks (the `medvl serve` command); `running_server` runs it in a thread (tests,
benchmarks) on a socket bound before start, so the port is known and free, and always shuts it down.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import FastAPI


def _config(app: FastAPI, log_level: str) -> object:
    import uvicorn

    # access_log off: uvicorn's access line holds the client's address; medvl logs an id and timing instead.
    return uvicorn.Config(app, access_log=False, log_level=log_level, lifespan="on", timeout_graceful_shutdown=5)


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve until interrupted."""
    import uvicorn

    config = _config(app, log_level)
    config.host, config.port = host, port
    uvicorn.Server(config).run()


@contextmanager
def running_server(app: FastAPI, host: str = "127.0.0.1", log_level: str = "warning") -> Iterator[str]:
    """Serve `app` in a background thread on a free port of `host`; yields the base URL, shuts down on exit."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    server = uvicorn.Server(_config(app, log_level))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="medvl-api", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API server did not start")
            time.sleep(0.02)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
