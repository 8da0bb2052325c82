"""Launch the real app once per test session on loopback; talk to it with gradio_client."""

from __future__ import annotations

import socket

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def app_url():
    import app

    port = free_port()
    app.demo.queue(default_concurrency_limit=4).launch(
        prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, ssr_mode=False, quiet=True,
        max_file_size=app.MAX_FILE_SIZE, show_error=False)
    yield f"http://127.0.0.1:{port}/"
    app.demo.close()


@pytest.fixture
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False, download_files=False)
