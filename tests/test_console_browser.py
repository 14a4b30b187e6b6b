"""The agent console in a real headless Chromium (Selenium, the system's chromium and
chromedriver): login, a routed call arriving live without a reload, claiming it, and an
agent of another forvaltning who can neither see it nor claim it.

The tests never reach for the network: the driver is the system's /usr/bin/chromedriver,
given to Selenium by path (so Selenium Manager, which would look for and download drivers, is
not consulted), and Selenium Manager is kept offline (SE_OFFLINE) and made to fail if run."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from pathlib import Path

import httpx
import pytest

from voicebot.app import create_app

from .console_helpers import (
    PASSWORD,
    add_agents,
    make_services,
    make_settings,
    route,
    routed_call,
)
from .redis_server import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path(
    "/usr/bin/chromedriver"
)  # pinned: never another one found on PATH or downloaded
EVIL = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2"> min skraldespand'

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (pip install -e .[test])"
)
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(
        "chromium/chromium-driver are not installed (scripts/test-services.sh installs them)",
        allow_module_level=True,
    )

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.selenium_manager import SeleniumManager  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


class ServerThread:
    """uvicorn on a loopback port in a thread with its own event loop, so the test can run
    coroutines (route a call) on the app's loop as a call session would."""

    def __init__(self, app, port: int) -> None:
        import uvicorn

        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            timeout_graceful_shutdown=1,
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.url = f"http://127.0.0.1:{port}"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_until_complete, args=(self.server.serve(),), daemon=True
        )

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the app did not start")
            time.sleep(0.02)
        return self

    def run(self, coro) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def no_selenium_manager(self, args: list) -> dict:
    raise AssertionError(f"Selenium Manager was asked for a driver ({args}): it may download one")


@pytest.fixture
def chromium(tmp_path, monkeypatch):
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager's documented offline switch
    monkeypatch.setenv("SE_CHROMEDRIVER", str(CHROMEDRIVER))
    monkeypatch.setattr(SeleniumManager, "binary_paths", no_selenium_manager)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1440,1000",
        "--lang=da-DK",
    ):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(20)
    yield driver
    with contextlib.suppress(Exception):  # the test may have quit it already
        driver.quit()


def wait_for(driver, css: str, timeout: float = 15.0):
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(
        lambda d: (
            d.find_element(By.CSS_SELECTOR, css) if d.find_elements(By.CSS_SELECTOR, css) else False
        )
    )


def log_in(driver, base: str, name: str) -> None:
    driver.get(base + "/console/login")
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for(driver, "#status.status-live")


def in_page_claim(driver, call_id: str) -> int:
    """A hand-made API request from the agent's own page, with the agent's CSRF token."""
    return driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('/console/api/me').then(r => r.json()).then(me => fetch("
        "  '/console/api/calls/' + arguments[0] + '/claim',"
        "  {method: 'POST', headers: {'X-CSRF-Token': me.csrf}})).then(r => done(r.status));",
        call_id,
    )


def test_agent_console_in_chromium(tmp_path, catalogue, chromium, fast_hashing):
    settings = make_settings(tmp_path)
    add_agents(settings)
    services = make_services(settings, catalogue)
    now = time.time()
    with ServerThread(create_app(settings, services), free_port()) as server:
        # -- bo (KFF) is logged in when a TMF call and a KFF call are routed ------------
        log_in(chromium, server.url, "bo")
        assert chromium.find_element(By.ID, "waiting-empty").is_displayed()
        chromium.execute_script("window.notReloaded = true;")
        server.run(route(services, routed_call("CA_tmf", "TMF", EVIL)))
        server.run(
            route(
                services,
                routed_call(
                    "CA_kff",
                    "KFF",
                    "jeg har mistet mit pas",
                    "passport",
                    ("mistet", "pas"),
                    created_at=now - 30,
                ),
            )
        )
        wait_for(chromium, '#waiting-list [data-call-id="CA_kff"]')
        assert chromium.execute_script("return window.notReloaded") is True
        assert not chromium.find_elements(By.CSS_SELECTOR, '[data-call-id="CA_tmf"]')
        assert (
            "min skraldespand" not in chromium.page_source and "onerror" not in chromium.page_source
        )
        assert in_page_claim(chromium, "CA_tmf") == 403
        cookies = {"vb_session": chromium.get_cookie("vb_session")["value"]}
        with httpx.Client(base_url=server.url, cookies=cookies) as api:  # the API directly
            state = api.get("/console/api/state").json()
            assert [c["call_id"] for c in state["waiting"]] == ["CA_kff"]
            csrf = api.get("/console/api/me").json()["csrf"]
            assert (
                api.post(
                    "/console/api/calls/CA_tmf/claim", headers={"X-CSRF-Token": csrf}
                ).status_code
                == 403
            )
        assert services.store.get("CA_tmf").status == "waiting"
        chromium.find_element(By.ID, "logout").click()
        wait_for(chromium, "#password")

        # -- anna (TMF) sees the TMF call; new ones arrive while she watches -------------
        log_in(chromium, server.url, "anna")
        card = wait_for(chromium, '#waiting-list [data-call-id="CA_tmf"]')
        assert card.find_element(By.CSS_SELECTOR, ".transcript").text.endswith(
            EVIL
        )  # shown as text
        assert not card.find_elements(By.CSS_SELECTOR, ".transcript img, .transcript script")
        assert card.find_element(By.CSS_SELECTOR, ".intent").text == "Affald"
        assert card.find_element(By.CSS_SELECTOR, ".confidence").text == "91 %"
        assert "skraldespand" in card.find_element(By.CSS_SELECTOR, ".chips").text
        assert not chromium.find_elements(By.CSS_SELECTOR, '[data-call-id="CA_kff"]')
        chromium.execute_script("window.notReloaded = true;")
        for record in (
            routed_call(
                "CA_fine",
                "TMF",
                "jeg vil gerne klage over en parkeringsafgift jeg fik i går",
                "parking_fine",
                ("klage", "parkeringsafgift"),
                0.87,
                created_at=now - 400,
            ),
            routed_call(
                "CA_permit",
                "TMF",
                "hvad koster en beboerlicens når jeg har fået ny bil",
                "parking_permit",
                ("beboerlicens", "bil"),
                0.58,
                created_at=now - 150,
            ),
            routed_call(
                "CA_human",
                "KONTAKTCENTER",
                "jeg vil bare tale med et menneske",
                "human_agent",
                ("tale med", "menneske"),
                0.97,
                created_at=now - 75,
            ),
        ):
            server.run(route(services, record))
        wait_for(chromium, '#waiting-list [data-call-id="CA_fine"]')
        wait_for(chromium, '#waiting-list [data-call-id="CA_human"]')
        assert chromium.execute_script("return window.notReloaded") is True
        assert chromium.execute_script("return typeof window.pwned") == "undefined"
        tile = chromium.find_element(By.CSS_SELECTOR, '.queue[data-queue="TMF"] .queue-waiting')
        assert tile.text.startswith("3")

        # -- she claims it ------------------------------------------------------------------
        chromium.find_element(By.CSS_SELECTOR, '[data-call-id="CA_tmf"] button.claim').click()
        claimed = wait_for(chromium, '#claimed-list [data-call-id="CA_tmf"]')
        assert claimed.find_element(By.CSS_SELECTOR, "button.complete").text == "Afslut"
        assert services.store.get("CA_tmf").claimed_by == "anna"
        chromium.execute_script("window.scrollTo(0, 0)")
        time.sleep(1.7)  # let the arrival highlight fade for the picture
        chromium.save_screenshot(str(tmp_path / "console.png"))

        claimed.find_element(By.CSS_SELECTOR, "button.complete").click()
        WebDriverWait(chromium, 10).until(
            lambda d: not d.find_elements(By.CSS_SELECTOR, '#claimed-list [data-call-id="CA_tmf"]')
        )
        assert services.store.get("CA_tmf").status == "done"
        chromium.quit()  # close the live stream before the server stops


def test_the_browser_is_driven_by_the_system_chromedriver_offline(chromium):
    assert chromium.service.path == "/usr/bin/chromedriver"
    assert os.environ["SE_OFFLINE"] == "true"
    assert chromium.capabilities["browserName"] in ("chrome", "chromium")


def test_a_call_id_with_a_slash_is_claimed_from_the_page(
    tmp_path, catalogue, chromium, fast_hashing
):
    settings = make_settings(tmp_path)
    add_agents(settings)
    services = make_services(settings, catalogue)
    with ServerThread(create_app(settings, services), free_port()) as server:
        log_in(chromium, server.url, "anna")
        server.run(route(services, routed_call("CA/1a", "TMF")))
        card = wait_for(chromium, '#waiting-list [data-call-id="CA/1a"]')
        card.find_element(By.CSS_SELECTOR, "button.claim").click()
        wait_for(chromium, '#claimed-list [data-call-id="CA/1a"]')
        assert services.store.get("CA/1a").claimed_by == "anna"
        chromium.quit()  # close the live stream before the server stops
