"""Several browser sessions at once: separate datasets stay separate; one training per dataset."""

from concurrent.futures import ThreadPoolExecutor

from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from dragonclf.modelstore import list_models
from dragonclf.store import Store


def session(app_url) -> Client:
    return Client(app_url, verbose=False, download_files=False)


def test_two_sessions_on_two_datasets_do_not_see_each_other(app_url, photo_files):
    Store.open("alpha", create=True)
    Store.open("beta", create=True)
    a, b = session(app_url), session(app_url)

    def upload(client, dataset, label, files):
        return client.predict(dataset, [handle_file(str(f)) for f in files], label, api_name="/import_files")

    with ThreadPoolExecutor(2) as pool:
        fa = pool.submit(upload, a, "alpha", "fish", photo_files["fishes"][:6])
        fb = pool.submit(upload, b, "beta", "tool", photo_files["tools"][:5])
        assert "6 added" in fa.result()[0] and "5 added" in fb.result()[0]
    assert Store.open("alpha").status()["labels"] == {"fish": 6}
    assert Store.open("beta").status()["labels"] == {"tool": 5}
    assert "6 images" in a.predict("alpha", api_name="/dataset_status")[0]
    assert "5 images" in b.predict("beta", api_name="/dataset_status")[0]
    assert len(b.predict("beta", "tool", api_name="/label_gallery")) == 5


def test_two_sessions_on_one_dataset_see_each_others_edits(app_url, photo_files):
    Store.open("shared", create=True)
    a, b = session(app_url), session(app_url)
    a.predict("shared", [handle_file(str(f)) for f in photo_files["fishes"][:4]], "fish", api_name="/import_files")
    assert "4 images" in b.predict("shared", api_name="/dataset_status")[0]
    b.predict("shared", [handle_file(str(f)) for f in photo_files["tools"][:3]], "tool", api_name="/import_files")
    status = a.predict("shared", api_name="/dataset_status")[0]
    assert "7 images" in status and "fish" in status and "tool" in status


def test_a_second_training_of_the_same_dataset_is_refused_while_one_runs(app_url):
    Store.open("demo")
    args = ("demo", "finetune", "efficientnet_lite0", 1, "", None, "one_cycle", True, 64, 32, 0.2, "none")

    def train(client):
        try:
            return client.predict(*args, api_name="/train")[0]
        except AppError as e:
            return f"ERROR {e}"

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(train, [session(app_url), session(app_url)]))
    refused = [r for r in results if r.startswith("ERROR")]
    done = [r for r in results if "Done" in r]
    assert len(done) == 1 and len(refused) == 1, results
    assert "already running" in refused[0]
    assert len(list_models("demo")) == 1
