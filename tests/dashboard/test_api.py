"""REST API against the real app under uvicorn on a loopback port."""

from __future__ import annotations

import time

import pytest

from tests.dashboard.support import Stack, logged_in

pytestmark = pytest.mark.integration

S = 1_000_000


def desaturation(patient: str, now: int,
                 value: float = 84.0) -> list[tuple[str, str, float, int]]:
    """25 readings one second apart ending now: holds past the rule's 20 s."""
    return [(patient, "spo2", value, now - (24 - i) * S) for i in range(25)]


async def test_public_and_protected_routes(stack: Stack) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=stack.url) as c:
        assert (await c.get("/api/health")).json()["status"] == "ok"
        assert (await c.get("/")).status_code == 200
        assert (await c.get("/static/js/main.js")).status_code == 200
        for path in ("/api/patients", "/api/alerts", "/api/audit", "/api/devices",
                     "/api/users", "/api/auth/me", "/api/live/stats"):
            r = await c.get(path)
            assert r.status_code == 401, path
        spec = (await c.get("/api/openapi.json")).json()
        paths = spec["paths"]
        assert "/api/alerts/acknowledge" in paths
        assert "/api/patients/{patient_id}/care-plan" in paths
        public = {"/api/auth/login", "/api/health"}
        for path, ops in paths.items():
            for op in ops.values():
                secured = bool(op.get("security"))
                assert secured == (path not in public), (path, op.get("security"))


async def test_login_wrong_password_and_throttle(stack: Stack) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=stack.url) as c:
        for _ in range(5):
            r = await c.post("/api/auth/login", json={"username": "nurse", "password": "nope-nope"})
            assert r.status_code == 401
            assert r.json()["detail"] == "login: unknown user or wrong password"
        r = await c.post("/api/auth/login", json={"username": "nurse",
                                                  "password": "nurse-password"})
        assert r.status_code == 429
        r = await c.post("/api/auth/login", json={"username": "ghost", "password": "whatever1"})
        assert r.status_code == 401


async def test_acknowledge_needs_csrf_with_cookie_and_is_audited(stack: Stack) -> None:
    now = time.time_ns() // 1000
    await stack.push(desaturation("P001", now))
    async with logged_in(stack.url, "nurse") as (c, csrf):
        alerts = (await c.get("/api/alerts", params={"patient_id": "P001"})).json()["alerts"]
        spo2 = [a for a in alerts if a["rule_id"] == "spo2"]
        assert len(spo2) == 1 and spo2[0]["priority"] == "high" and spo2[0]["state"] == "active"
        assert (spo2[0]["trigger_value"], spo2[0]["trigger_limit"]) == (84.0, 87.0)
        aid = spo2[0]["alert_id"]
        r = await c.post("/api/alerts/acknowledge", json={"alert_id": aid})
        assert r.status_code == 403 and "X-CSRF-Token" in r.json()["detail"]
        r = await c.post("/api/alerts/acknowledge", json={"alert_id": aid, "note": "seen"},
                         headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200
        assert r.json()["event"]["kind"] == "acknowledged"
        assert r.json()["event"]["actor"] == "nurse"
        entries = (await c.get("/api/audit", params={"action": "acknowledge"})).json()["entries"]
        assert [(e["username"], e["role"], e["target"], e["patient_id"]) for e in entries] == [
            ("nurse", "clinician", aid, "P001")]
        again = await c.post("/api/alerts/acknowledge", json={"alert_id": aid},
                             headers={"X-CSRF-Token": csrf})
        assert again.status_code == 409
        items = (await c.get("/api/patients/P001/timeline")).json()["items"]
        kinds = [(i["source"], i["kind"]) for i in items]
        assert ("alert", "opened") in kinds and ("alert", "acknowledged") in kinds
        assert ("audit", "acknowledge") in kinds
        missing = await c.post("/api/alerts/acknowledge", json={"alert_id": "P001/x/low/1"},
                               headers={"X-CSRF-Token": csrf})
        assert missing.status_code == 404


async def test_bearer_token_needs_no_csrf_and_snooze_rules(stack: Stack) -> None:
    now = time.time_ns() // 1000
    await stack.push(desaturation("P002", now))
    async with logged_in(stack.url, "nurse", token=True) as (c, _):
        aid = next(a["alert_id"] for a in (await c.get("/api/alerts")).json()["alerts"]
                   if a["patient_id"] == "P002" and a["rule_id"] == "spo2")
        r = await c.post("/api/alerts/snooze", json={"alert_id": aid, "duration_s": 3600,
                                                     "reason": "x"})
        assert r.status_code == 422 and "1800" in r.text  # cap for high priority
        r = await c.post("/api/alerts/snooze", json={"alert_id": aid, "duration_s": 1200})
        assert r.status_code == 422 and "reason" in r.text
        r = await c.post("/api/alerts/snooze", json={"duration_s": 60})
        assert r.status_code == 422
        r = await c.post("/api/alerts/snooze", json={"alert_id": aid, "duration_s": 300})
        assert r.status_code == 200 and r.json()["event"]["kind"] == "snoozed"
        r = await c.post("/api/alerts/resolve", json={"alert_id": aid})
        assert r.status_code == 409 and "not cleared" in r.json()["detail"]
        entries = (await c.get("/api/audit", params={"action": "snooze"})).json()["entries"]
        assert [(e["username"], e["detail"]) for e in entries] == [("nurse", "300 s")]


async def test_roles(stack: Stack) -> None:
    doc = {"rule": [{"id": "hr", "kind": "threshold", "metric": "heart_rate", "high": 100}]}
    async with logged_in(stack.url, "nurse", token=True) as (c, _):
        r = await c.put("/api/patients/P001/care-plan", json={"document": doc, "reason": "x"})
        assert r.status_code == 403
        assert (await c.get("/api/users")).status_code == 403
        r = await c.post("/api/devices", json={"device_id": "X1"})
        assert r.status_code == 403
    async with logged_in(stack.url, "coord", token=True) as (c, _):
        r = await c.put("/api/patients/P001/care-plan", json={"document": doc, "reason": "x"})
        assert r.status_code == 200 and r.json()["version"] == 2
        assert (await c.get("/api/users")).status_code == 403
    async with logged_in(stack.url, "boss", token=True) as (c, _):
        r = await c.post("/api/users", json={"username": "newbie", "role": "clinician",
                                             "password": "newbie-password"})
        assert r.status_code == 200
        names = [u["username"] for u in (await c.get("/api/users")).json()["users"]]
        assert names == ["boss", "coord", "newbie", "nurse"]
        r = await c.post("/api/users", json={"username": "newbie", "role": "clinician",
                                             "password": "newbie-password"})
        assert r.status_code == 422 and "already exists" in r.text
        r = await c.post("/api/assignments", json={"device_id": "D-P001", "patient_id": "P009"})
        assert r.status_code == 422 and "overlaps" in r.text


async def test_care_plan_validation_names_the_field_and_next_reading_uses_it(
    stack: Stack,
) -> None:
    async with logged_in(stack.url, "coord", token=True) as (c, _):
        bad = {"rule": [{"id": "hr", "kind": "threshold", "metric": "heart_rate",
                         "high": "fast"}]}
        r = await c.put("/api/patients/P003/care-plan", json={"document": bad, "reason": "x"})
        assert r.status_code == 422
        detail = r.json()["detail"][0]
        assert "rule 'hr'" in detail["msg"] and "high: expected a number" in detail["msg"]
        assert detail["loc"][-1] == "high"
        weird = {"rule": [{"id": "hr", "kind": "threshold", "metric": "heart_rate",
                           "priority": {"x": 1}, "high": 100}]}
        r = await c.put("/api/patients/P003/care-plan", json={"document": weird, "reason": "x"})
        assert r.status_code == 422
        plan = (await c.get("/api/patients/P003/care-plan")).json()
        assert plan["version"] == 1
        doc = {"plan": plan["plan"], "rule": plan["rule"]}
        for rule in doc["rule"]:
            if rule["id"] == "hr":
                rule["high"] = 100
        r = await c.put("/api/patients/P003/care-plan", json={"document": doc,
                                                               "reason": "tachycardia watch"})
        assert r.status_code == 200 and r.json()["version"] == 2
        history = (await c.get("/api/patients/P003/care-plan/history")).json()["versions"]
        assert [(v["version"], v["author"], v["reason"]) for v in history] == [
            (1, "setup", "admitted"), (2, "coord", "tachycardia watch")]
        now = time.time_ns() // 1000
        await stack.push([("P003", "heart_rate", 110.0, now - (24 - i) * S) for i in range(25)])
        alerts = (await c.get("/api/alerts", params={"patient_id": "P003"})).json()["alerts"]
        hr = [a for a in alerts if a["rule_id"] == "hr"]
        assert [(a["plan_version"], a["trigger_limit"], a["priority"]) for a in hr] == [
            (2, 100.0, "medium")]
        audit = (await c.get("/api/audit", params={"patient_id": "P003"})).json()["entries"]
        assert [(e["action"], e["target"]) for e in audit] == [("care_plan.set", "P003 v2")]


async def test_history_is_time_bounded_and_downsampled(stack: Stack) -> None:
    now = time.time_ns() // 1000
    rows = [("P001", "heart_rate", 60.0 + i % 10, now - (999 - i) * S) for i in range(1000)]
    await stack.push(rows)
    async with logged_in(stack.url, "nurse", token=True) as (c, _):
        start, end = now - 999 * S, now
        raw = (await c.get("/api/patients/P001/readings", params={
            "metric": "heart_rate", "start_us": now - 9 * S, "end_us": end})).json()
        assert raw["downsampled"] is False
        assert [p[1] for p in raw["points"]] == [60.0 + i % 10 for i in range(990, 1000)]
        down = (await c.get("/api/patients/P001/readings", params={
            "metric": "heart_rate", "start_us": start, "end_us": end, "max_points": 100})).json()
        assert down["downsampled"] is True and len(down["points"]) <= 100
        assert sum(p[4] for p in down["points"]) == 1000
        assert min(p[2] for p in down["points"]) == 60.0
        assert max(p[3] for p in down["points"]) == 69.0
        r = await c.get("/api/patients/P001/readings", params={"metric": "blood_ph"})
        assert r.status_code == 422 and "unknown metric" in r.text
        r = await c.get("/api/patients/P001/readings", params={
            "metric": "heart_rate", "start_us": end, "end_us": start})
        assert r.status_code == 422


async def test_patients_in_ward_order(stack: Stack) -> None:
    now = time.time_ns() // 1000
    await stack.push([("P001", "heart_rate", 70.0, now), ("P002", "heart_rate", 70.0, now - 50 * S),
                      ("P003", "heart_rate", 70.0, now - 10 * S)])
    await stack.push(desaturation("P003", now))
    async with logged_in(stack.url, "nurse", token=True) as (c, _):
        body = (await c.get("/api/patients")).json()
        # P003 has a high alert; then the stalest first among equals (P002 50 s, P001 now).
        assert [p["patient_id"] for p in body["patients"]] == ["P003", "P002", "P001"]
        assert body["patients"][0]["vitals"]["spo2"]["value"] == 84.0
