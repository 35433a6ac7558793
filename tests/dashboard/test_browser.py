"""The page in a real browser (Debian's Chromium through Playwright) against the whole service:
mosquitto -> Service -> store -> alert engine -> live feed -> websocket -> page.

Screenshots go to ``test-artifacts/dashboard/``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from playwright.async_api import Page, async_playwright, expect

from alerts.engine import AlertEngine
from alerts.plan_store import CarePlans
from dashboard import schema
from dashboard.config import DashboardConfig
from dashboard.driver import EngineDriver
from dashboard.feed import LiveFeed
from dashboard.server import DashboardServer
from dashboard.users import add_user
from gateway.config import MqttConfig
from pipeline import registry
from pipeline.store import StoreConfig
from simulators import FleetConfig, plan_fleet
from simulators.fleet import generate
from tests.dashboard.support import USERS, _hash, iso
from tests.support.mqtt import Publisher
from vitalwire.broker import MosquittoBroker
from vitalwire.config import ServiceConfig
from vitalwire.service import Service

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
S = 1_000_000
SCENARIO = """
[scenario]
name = "desaturation"
duration = "20m"

[[event]]
kind = "desaturation"
patient = "P001"
at = "15s"
ramp = "5s"
plateau = "15m"
recovery = "1m"
target = 82
"""


@dataclass
class Ward:
    svc: Service
    feed: LiveFeed
    server: DashboardServer
    broker: MosquittoBroker
    fleet: FleetConfig
    engine: AlertEngine


@pytest.fixture
async def ward(mosquitto: MosquittoBroker, tmp_path: Path) -> AsyncIterator[Ward]:
    scenario = tmp_path / "desat.toml"
    scenario.write_text(SCENARIO)
    fleet = FleetConfig(patients=3, seed=7, scenario=scenario, kinds=("bedside_monitor",),
                        duration_s=1200.0, port=mosquitto.port)
    config = ServiceConfig(mqtt=MqttConfig(port=mosquitto.port, client_id="vw-dashboard"),
                           store=StoreConfig(path=tmp_path / "ward.duckdb"))
    async with Service(config) as svc:
        store = svc.store
        for device in plan_fleet(fleet).devices:
            await store.call(registry.assign, device.device_id, device.patient_id, iso(0))
        await svc.refresh_assignments()
        engine = await AlertEngine.from_store(store)
        for pid in ("P001", "P002", "P003"):
            await CarePlans(store).apply_template(pid, "adult-ward", author="setup",
                                                  reason="admitted")
        await engine.sync(store, time.time_ns() // 1000)
        await store.call(schema.migrate)
        for name, (role, password) in USERS.items():
            await store.call(add_user, name, role, _hash(password))
        feed = LiveFeed(DashboardConfig(heartbeat_s=2.0))
        dash = DashboardConfig(port=0, heartbeat_s=2.0)
        async with DashboardServer(dash, store=store, engine=engine, feed=feed,
                                   registry_changed=svc.refresh_assignments) as server:
            async with EngineDriver(server.context.desk, tick_s=0.5) as driver:
                svc.add_batch_listener(driver.on_batch)
                assert svc.receiver is not None and await svc.receiver.wait_connected(15)
                yield Ward(svc, feed, server, mosquitto, fleet, engine)
            await server.stop()


def simulate(w: Ward, seconds: float, patient: str) -> int:
    """Publish the last ``seconds`` (device times up to now) of one simulated patient."""
    now = time.time_ns() // 1000
    items = []
    for msg in generate(w.fleet, now - round(seconds * S)):
        if msg.ts_us > now:
            break
        if msg.patient_id == patient:
            items.append((msg.topic, msg.payload))
    with Publisher(w.broker.port, "vw-sim") as pub:
        return pub.publish(items)


def publish_hr(w: Ward, patient: str, value: float, count: int) -> None:
    """``count`` heart-rate readings one second apart, ending now, from the patient's monitor."""
    device = next(d.device_id for d in plan_fleet(w.fleet).devices if d.patient_id == patient)
    now = time.time_ns() // 1000
    items = [(f"vitalwire/v1/devices/{device}/readings", orjson.dumps({
        "device_id": device, "metric": "heart_rate", "value": value, "unit": "/min",
        "ts": iso(now - (count - 1 - i) * S).isoformat(), "seq": 900_000 + i}))
        for i in range(count)]
    with Publisher(w.broker.port, "vw-hr") as pub:
        pub.publish(items)


async def log_in(page: Page, url: str, user: str) -> None:
    await page.goto(url)
    await page.fill("#login-user", user)
    await page.fill("#login-password", USERS[user][1])
    await page.click("#login-submit")
    await expect(page.locator("#whoami")).to_contain_text(user)


async def test_ward_alert_ack_plan_edit_and_reconnect(ward: Ward) -> None:
    assert CHROMIUM.exists(), "Debian's chromium is missing: apt-get install chromium"
    SHOTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        page = await browser.new_page(viewport={"width": 1280, "height": 820})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        url = ward.server.url

        # Log in; the simulated fleet's desaturation of P001 becomes a high-priority tile.
        await log_in(page, url, "nurse")
        assert simulate(ward, 90.0, "P001") > 0
        tile = page.locator('.tile[data-patient="P001"]')
        await expect(tile.locator(".alert-line.prio-high")).to_contain_text("SpO2", timeout=30_000)
        await expect(tile).to_have_class("tile alarm-high")
        assert await page.locator(".tile").first.get_attribute("data-patient") == "P001"
        await page.screenshot(path=str(SHOTS / "01-ward-desaturation.png"))

        # Acknowledge it on the patient page; the audit log shows who.
        await tile.click()
        await expect(page.locator(".chart svg").first).to_be_visible()
        alert = page.locator('#patient-alerts [data-alert*="/spo2/low/"]')
        await alert.locator('[data-action="ack"]').click()
        await expect(alert.locator(".alert-line")).to_contain_text("acknowledged")
        await page.screenshot(path=str(SHOTS / "02-patient-acknowledged.png"), full_page=True)
        await page.click('a[data-nav="audit"]')
        row = page.locator('#audit tr[data-action="acknowledge"]')
        await expect(row).to_contain_text("nurse")
        await expect(row).to_contain_text("P001")
        await page.screenshot(path=str(SHOTS / "03-audit.png"))

        # A coordinator lowers P002's heart-rate limit; the next readings are scored with v2.
        await page.click("#logout")
        await log_in(page, url, "coord")
        await page.goto(f"{url}/#/plans/P002")
        await page.fill('input[data-rule="hr"][data-field="high"]', "100")
        await page.fill("#plan-reason", "post-op tachycardia watch")
        await page.click("#plan-save")
        await expect(page.locator("#plan-ok")).to_contain_text("version 2")
        await expect(page.locator('#plan-history tr[data-version="2"]')).to_contain_text("coord")
        await page.screenshot(path=str(SHOTS / "04-care-plan-v2.png"), full_page=True)
        bad = page.locator('input[data-rule="hr"][data-field="high"]')
        await bad.fill("30")
        await page.fill("#plan-reason", "typo")
        await page.click("#plan-save")
        await expect(page.locator("#plan-error")).to_contain_text("hr")
        publish_hr(ward, "P002", 110.0, 25)
        await page.goto(f"{url}/#/ward")
        p2 = page.locator('.tile[data-patient="P002"] .alert-line')
        await expect(p2).to_contain_text("HR 110 ≥ 100", timeout=30_000)
        await expect(p2).to_contain_text("v2")
        await page.screenshot(path=str(SHOTS / "05-scored-with-v2.png"))

        # The server goes away: the banner shows; it comes back: the page recovers by itself.
        port = ward.server.port
        await ward.server.stop()
        await expect(page.locator("#banner-link")).to_be_visible(timeout=30_000)
        await page.screenshot(path=str(SHOTS / "06-connection-lost.png"))
        config = DashboardConfig(port=port, heartbeat_s=2.0)
        async with DashboardServer(config, store=ward.svc.store, engine=ward.engine,
                                   feed=ward.feed) as again:
            await expect(page.locator("#banner-link")).to_be_hidden(timeout=30_000)
            publish_hr(ward, "P003", 58.0, 1)
            vital = page.locator('.tile[data-patient="P003"] [data-metric="heart_rate"] .val')
            await expect(vital).to_have_text("58", timeout=30_000)
            await page.screenshot(path=str(SHOTS / "07-recovered.png"))
            assert again.url == url
        await browser.close()
    assert errors == []
