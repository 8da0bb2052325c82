"""The Collect tab through its API: classes in, images stored per class, summary out."""

import pytest

import fake_search
from dragonclf.store import Store
from httpserver import LoopbackServer, real_photos


@pytest.fixture
def web(monkeypatch):
    monkeypatch.setenv("DRAGONCLF_ALLOW_PRIVATE_URLS", "1")
    monkeypatch.setenv("DRAGONCLF_SEARCH_ENGINE", "fake_search:engine")
    with LoopbackServer() as server:
        photos = real_photos()
        paths = {"fish": [], "tool": []}
        for i, f in enumerate(photos[:8]):
            paths["fish"].append(server.add_file(f"/fish/{i}{f.suffix}", f).split(str(server.port), 1)[1])
        for i, f in enumerate(photos[-8:]):
            paths["tool"].append(server.add_file(f"/tool/{i}{f.suffix}", f).split(str(server.port), 1)[1])
        paths["tool"].append(server.add_bytes("/tool/fake.jpg", b"<html>not an image</html>").split(str(server.port), 1)[1])
        calls = fake_search.configure(server, paths)
        yield server, calls


def test_collect_tab_stores_each_class_and_reports_refusals(client, web):
    Store.open("dragons", create=True)
    result = client.predict("dragons", "fish\ntool: tool photo", 5, "moderate", "", "", "", "",
                            api_name="/collect")
    summary = result[0]  # (the State output is not sent to clients)
    assert "Done." in summary and "| fish | 5 |" in summary and "| tool | 5 |" in summary
    status = Store.open("dragons").status()
    assert status["labels"] == {"fish": 5, "tool": 5}
    row = Store.open("dragons").images(label="tool")[0]
    assert row.origin == "url" and row.engine == "fake" and row.query == "tool photo"


def test_collect_tab_without_classes_is_a_clear_error(client, web):
    from gradio_client.exceptions import AppError

    Store.open("dragons", create=True)
    with pytest.raises(AppError, match="at least one class"):
        client.predict("dragons", "   ", 5, "moderate", "", "", "", "", api_name="/collect")
