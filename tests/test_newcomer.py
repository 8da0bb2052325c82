"""The traps a newcomer fell into in the browser (issue 13), each driven in headless Chromium.

One browser for the module; every test has its own DRAGONCLF_HOME (conftest) and reloads the
page, so the app it talks to starts from the bundled demo each time. Screenshots of how each
test ended are kept in test-artifacts/newcomer/.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest

from browser import chromium_page, needs_chromium
from conftest import REPO
from dragonclf import config
from dragonclf.importer import import_files
from dragonclf.store import Store
from ml_fixtures import share_weights, trained_models  # noqa: F401 - a fixture

ARTIFACTS = REPO / "test-artifacts" / "newcomer"

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def browser():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with chromium_page(height=1100, timeout_ms=30_000) as page:
        yield page


@pytest.fixture
def page(browser, app_url, request):
    browser.set_viewport_size({"width": 1400, "height": 1100})
    browser.goto(app_url)
    browser.wait_for_selector("#dataset-counts:has-text('images')")
    yield browser
    browser.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)


def reload(page) -> None:
    page.reload()
    page.wait_for_selector("#dataset-counts:has-text('images')")


def small_dataset(name: str, photo_files, per_label: int = 6) -> Store:
    """Two labels of real photos, imported through the library."""
    store = Store.open(name, create=True)
    for label, key in (("fish", "fishes"), ("tool", "tools")):
        import_files(store, photo_files[key][:per_label], label)
    return store


def install_model_for(dataset: str, model_dir) -> str:
    """A model trained elsewhere (the session's shared one), filed under `dataset`; returns its id."""
    dest = config.models_root() / dataset / model_dir.name
    shutil.copytree(model_dir, dest)
    meta = json.loads((dest / "model.json").read_text())
    meta["dataset"] = dataset
    (dest / "model.json").write_text(json.dumps(meta))
    return dest.name


def dropdown_value(page, elem_id: str) -> str:
    return page.input_value(f"#{elem_id} input")


def select_dataset(page, name: str) -> None:
    page.fill("#dataset input", name)
    page.keyboard.press("Enter")
    page.wait_for_selector("#dataset-counts:not(:has-text('no labels yet'))")


def create_dataset(page, name: str) -> None:
    page.fill("#new-dataset input, #new-dataset textarea", name)
    page.click("#create-dataset")
    page.wait_for_selector("#dataset-counts:has-text('no labels yet')")


def open_tab(page, title: str) -> None:
    page.get_by_role("tab", name=title).click()


def test_upload_box_clears_after_import_so_nothing_goes_in_twice(page, photo_files):
    create_dataset(page, "pets")
    page.click("#images-accordion >> text=Images and import")
    fish, tools = photo_files["fishes"][:3], photo_files["tools"][:3]
    page.set_input_files("#import-files input[type=file]", [str(f) for f in fish])
    page.fill("#import-label textarea", "fish")
    page.click("#import-btn")
    page.wait_for_selector("#import-result:has-text('fish')")
    first = page.inner_text("#import-result")
    assert "3 added to fish" in first, first
    # the box is empty again, ready for the next label's pictures
    page.wait_for_function("!document.querySelector('#import-files').innerText.includes('.webp')")
    page.set_input_files("#import-files input[type=file]", [str(f) for f in tools])
    page.fill("#import-label textarea", "tool")
    page.click("#import-btn")
    page.wait_for_selector("#import-result:has-text('to tool')")
    second = page.inner_text("#import-result")
    assert "3 added to tool" in second and "conflict" not in second.replace("0 label conflicts", ""), second
    assert Store.open("pets").status()["labels"] == {"fish": 3, "tool": 3}
    assert not Store.open("pets").conflicts()


def test_model_lists_fill_on_load_and_after_every_training(page, home, photo_files, trained_models):
    share_weights(home)
    demo_model = install_model_for("demo", trained_models["quick"].model_dir)
    reload(page)
    for tab, elem in (("Train", "train-models"), ("Evaluate", "eval-model"), ("Predict", "predict-model")):
        open_tab(page, tab)
        page.wait_for_function(f"document.querySelector('#{elem} input').value.includes('{demo_model}')")
    # a training fills them again, without pressing ↻ Models
    small_dataset("pets", photo_files)
    select_dataset(page, "pets")
    open_tab(page, "Evaluate")
    page.wait_for_function("document.querySelector('#eval-model input').value === ''")
    open_tab(page, "Train")
    page.click("#train-start")
    page.wait_for_selector("#train-status:has-text('Saved as')", timeout=120_000)
    (model,) = [m.name for m in (config.models_root() / "pets").iterdir() if not m.name.startswith(".")]
    for tab, elem in (("Evaluate", "eval-model"), ("Predict", "predict-model")):
        open_tab(page, tab)
        page.wait_for_function(f"document.querySelector('#{elem} input').value.includes('{model}')")


def error_badges(page) -> int:
    """Gradio's red 'Error' badges over components, visible ones only."""
    return sum(1 for b in page.locator("[data-testid=status-tracker] .error").all() if b.is_visible())


def test_an_error_is_one_message_by_its_action_and_leaves_inputs_usable(page):
    open_tab(page, "Evaluate")
    page.click("#eval-run")
    page.wait_for_selector("#eval-summary:has-text('Train a model first')")
    assert error_badges(page) == 0
    open_tab(page, "Train")
    page.get_by_text("Fine-tune (fastai)").click()
    page.fill("#train-lr textarea, #train-lr input", "fast")
    page.click("#train-start")
    page.wait_for_selector("#train-status:has-text('not a number')")
    assert error_badges(page) == 0
    page.fill("#train-lr textarea, #train-lr input", "1e-3")  # still usable, nothing on top of it
    page.click("#train-lr textarea, #train-lr input")


def test_training_display_rounds_losses_keeps_time_and_says_when_nothing_runs(page, home, photo_files, app_url):
    share_weights(home)
    small_dataset("pets", photo_files)
    select_dataset(page, "pets")
    open_tab(page, "Train")
    page.click("#train-stop")
    page.wait_for_selector("#train-stop-message:has-text('Nothing is training')")
    page.get_by_text("Fine-tune (fastai)").click()
    page.fill("#train-epochs input", "1")
    page.click("#train-mode")  # leave the box
    page.click("#train-more-settings >> text=More settings")
    page.fill("#train-size input", "64")
    page.fill("#train-batch-size input", "8")
    page.click("#train-mode")
    page.click("#train-start")
    page.wait_for_selector("#train-status:has-text('Done'):has-text('finetune model')", timeout=180_000)
    header = page.inner_text("#train-epochs-table thead")
    assert "time" in header, header
    body = page.inner_text("#train-epochs-table").split("time", 1)[-1]  # the rows, after the header
    numbers = re.findall(r"\d+\.\d+", body)
    assert numbers and all(len(n.split(".")[1]) <= 4 for n in numbers), body  # 0.2622, not 0.2621680200099945
    assert re.search(r"\b\d+:\d\d\b", body), body  # the epoch's time, m:ss
    # the progress bar is drawn once, over the status, not over the table and plot too
    import urllib.request

    config = json.loads(urllib.request.urlopen(app_url + "config").read())
    status_id = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "train-status")
    (train,) = [d for d in config["dependencies"] if d.get("api_name") == "train"]
    assert train["show_progress_on"] == [status_id]


def test_a_one_epoch_loss_plot_has_an_axis_from_zero():
    from dragonclf.interpret import plot_history

    fig = plot_history([{"epoch": 1, "train_loss": 1.0, "valid_loss": 0.8}])
    low, high = fig.axes[0].get_ylim()
    assert low == 0 and 1.0 < high < 1.5


def test_predict_names_its_model_and_says_not_sure_below_the_threshold(page, trained_models, photo_files):
    model = install_model_for("demo", trained_models["quick"].model_dir)
    reload(page)
    open_tab(page, "Predict")
    page.wait_for_function(f"document.querySelector('#predict-model input').value.includes('{model}')")
    # a fish photo with no threshold: its class, and which model said so
    page.fill("#predict-threshold input[type=number]", "0")
    page.keyboard.press("Tab")
    page.set_input_files("#predict-image input[type=file]", str(photo_files["fishes"][-1]))
    page.wait_for_selector(f"#predict-answered:has-text('{model}')")
    assert "not sure" not in page.inner_text("#predict-label").lower()
    # raise the threshold past any guess: the same picture is now "not sure", with the guesses in words
    page.fill("#predict-threshold input[type=number]", "1")
    page.keyboard.press("Tab")
    page.wait_for_selector("#predict-label:has-text('not sure')")
    assert "below the 100% threshold" in page.inner_text("#predict-answered")


def test_evaluate_says_no_mistakes_when_every_answer_is_right(tmp_path):
    import numpy as np

    from dragonclf.interpret import Evaluation
    from ui.evaluate_tab import mistakes_note

    right = Evaluation(tmp_path, ["a", "b"], ["1", "2"], [tmp_path / "1.jpg"] * 2, ["a", "b"],
                       np.array([[0.9, 0.1], [0.2, 0.8]]), False)
    assert "No mistakes" in mistakes_note(right)
    wrong = Evaluation(tmp_path, ["a", "b"], ["1", "2"], [tmp_path / "1.jpg"] * 2, ["a", "b"],
                       np.array([[0.9, 0.1], [0.7, 0.3]]), False)
    assert "1 wrong" in mistakes_note(wrong)


def test_the_lr_finder_sweeps_about_one_epoch_reports_progress_and_stops(home):
    """fastai's default is 100 batches (50 here before): on the demo that was 16 epochs' worth of pictures."""
    import threading

    from dragonclf import lr_find
    from dragonclf.errors import DragonError
    from ml_fixtures import SIZE, photo_items

    share_weights(home)
    rows = photo_items(per_label=28, labels=["fishes", "tools"])
    n_train = sum(it.split == "train" for it in rows)
    seen = []
    fig, suggestion = lr_find.lr_find(rows, dataset="photos", size=SIZE, batch_size=32, warm_start=False,
                                    progress=lambda f, m: seen.append((f, m)))
    assert seen and seen[-1][0] == 1.0 and 0 < suggestion < 10
    swept = int(re.search(r"(\d+) pictures", seen[-1][1]).group(1))
    assert n_train * 0.8 <= swept <= max(n_train * 1.5, 64), (swept, n_train)  # 16 steps of 4 at the least
    top = fig.axes[0].get_ylim()[1]
    assert top >= max(line.get_ydata().max() for line in fig.axes[0].lines[:1])  # nothing clipped at the top
    stop = threading.Event()

    def stop_at_once(f, m):
        stop.set()

    with pytest.raises(DragonError, match="stopped"):
        lr_find.lr_find(rows, dataset="photos", size=SIZE, warm_start=False, progress=stop_at_once, cancel=stop)


def test_the_lr_finder_in_the_browser_shows_its_plot_whole_and_stop_stops_it(page, home, photo_files):
    share_weights(home)
    small_dataset("pets", photo_files, per_label=10)
    select_dataset(page, "pets")
    open_tab(page, "Train")
    page.click("text=Learning-rate finder and augmentation preview")
    page.click("#lr-find")
    page.wait_for_selector("#lr-status:has-text('Sweeping')", timeout=60_000)
    page.click("#train-stop")  # the sweep ends with a message, not a spinner, and Stop speaks of the sweep
    page.wait_for_selector("#train-stop-message:has-text('learning-rate sweep')", timeout=10_000)
    page.wait_for_selector("#lr-status:has-text('stopped'), #lr-status:has-text('Suggested')", timeout=120_000)
    page.click("#lr-find")
    page.wait_for_selector("#lr-status:has-text('Suggested')", timeout=180_000)
    assert page.input_value("#train-lr textarea, #train-lr input") != ""
    page.locator("#lr-plot").screenshot(path=str(ARTIFACTS / "lr-plot.png"))


def test_dataset_names_with_spaces_existing_names_and_captions(page, photo_files):
    page.fill("#new-dataset input, #new-dataset textarea", "fish vs tools")
    page.click("#create-dataset")
    page.wait_for_selector("#dataset-message:has-text('fish-vs-tools')")
    assert Store.open("fish-vs-tools").labels() == []
    page.fill("#new-dataset input, #new-dataset textarea", "demo")
    page.click("#create-dataset")
    page.wait_for_selector("#dataset-message:has-text('already')")  # said, not a silent switch
    # captions name the picture (its file name or web address), not its content hash
    small_dataset("fish-vs-tools", photo_files, per_label=3)
    reload(page)  # the page opens on the demo again; picking the dataset refreshes its view
    select_dataset(page, "fish-vs-tools")
    page.click("#images-accordion >> text=Images and import")
    page.wait_for_selector("#label-gallery img")
    captions = page.inner_text("#label-gallery")
    assert photo_files["fishes"][0].name in captions or photo_files["fishes"][2].name in captions, captions
    assert not re.search(r"[0-9a-f]{16}", captions), captions


def test_on_a_phone_nothing_is_wider_than_the_screen(page):
    page.set_viewport_size({"width": 390, "height": 844})
    reload(page)
    for tab in ("Train", "Evaluate"):
        open_tab(page, tab)
        page.wait_for_timeout(300)
        wide = page.evaluate("document.documentElement.scrollWidth")
        page.screenshot(path=str(ARTIFACTS / f"phone-{tab}.png"), full_page=True)
        assert wide <= 391, (tab, wide)
        hidden = page.evaluate("""[...document.querySelectorAll('button[role=tab]')]
            .filter(b => b.offsetParent && b.getBoundingClientRect().right > window.innerWidth).length""")
        assert hidden == 0, (tab, hidden)
