"""FHIR export benchmark: Observations mapped per second, and delivered per second to a real
FHIR server (sekmet-fhir on loopback) with transaction Bundles of 1, 50 and 500 Observations.

Run from the repository root: ``.venv/bin/python benchmarks/fhir.py [--quick]``. Prints one
line per measurement; nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.fhir.bundle import build_bundle
from pipeline.fhir.config import FhirConfig, RetryPolicy
from pipeline.fhir.exporter import FhirExporter
from pipeline.fhir.mapping import to_fhir_observations
from pipeline.readings import (
    MESSAGE_SCHEMA,
    QUARANTINE_SCHEMA,
    READING_SCHEMA,
    ReadingBatch,
)
from pipeline.store import DuckDbStore, StoreConfig
from tests.fhir.server import SekmetServer

VITALS = [("heart_rate", 72.0, "/min"), ("respiratory_rate", 16.0, "/min"), ("spo2", 96.0, "%"),
          ("body_temperature", 37.1, "Cel"), ("glucose", 101.0, "mg/dL")]  # fmt: skip


def readings(n: int, start: datetime) -> pl.DataFrame:
    """``n`` single-value readings (no BP, so one Observation each) over 10 devices."""
    rows = []
    for i in range(n):
        metric, value, unit = VITALS[i % len(VITALS)]
        when = start + timedelta(seconds=i // len(VITALS))
        device = f"DEV-{i % 10}"
        rows.append(
            (f"P{i % 10}", device, "mqtt", metric, value + (i % 3), unit, when, when, i, 0, 0)
        )
    return pl.DataFrame(rows, schema=READING_SCHEMA, orient="row")


def bench_mapping(n: int) -> None:
    frame = readings(n, datetime.now(UTC) - timedelta(days=1))
    config = FhirConfig()
    t0 = time.perf_counter()
    result = to_fhir_observations(frame, config)
    t1 = time.perf_counter()
    for start in range(0, len(result.observations), 50):
        build_bundle(result.observations[start : start + 50], config)
    t2 = time.perf_counter()
    print(
        f"fhir mapping: {len(result.observations)} Observations mapped in {t1 - t0:.2f} s"
        f" = {len(result.observations) / (t1 - t0):,.0f} Observations/s;"
        f" with bundles of 50: {len(result.observations) / (t2 - t0):,.0f} Observations/s"
    )


async def bench_delivery(bundle_size: int, n: int, workdir: Path) -> None:
    server = SekmetServer(workdir / f"sekmet-{bundle_size}")
    server.start()
    try:
        config = FhirConfig(
            url=server.base_url,
            bundle_size=bundle_size,
            poll_s=0.01,
            retry=RetryPolicy(initial_s=0.1, max_s=1.0),
        )
        store_cfg = StoreConfig(path=workdir / f"vw-{bundle_size}.duckdb", idle_checkpoint_s=0)
        async with DuckDbStore(store_cfg) as store:
            exporter = FhirExporter(config, store)
            exporter._run = _idle  # type: ignore[method-assign]  # drive it here, timed
            async with exporter:
                batch = ReadingBatch(
                    readings(n, datetime.now(UTC) - timedelta(days=1)),
                    pl.DataFrame(schema=MESSAGE_SCHEMA),
                    pl.DataFrame(schema=QUARANTINE_SCHEMA),
                )
                await store.write(batch)
                t0 = time.perf_counter()
                while await exporter.export_once():
                    pass
                elapsed = time.perf_counter() - t0
        stats = exporter.stats
        print(
            f"fhir delivery, bundle size {bundle_size:>3}: {stats.delivered} Observations in"
            f" {stats.bundles} Bundles, {elapsed:.2f} s = {stats.delivered / elapsed:,.0f}"
            f" Observations/s"
        )
    finally:
        server.stop()


async def _idle() -> None:
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs")
    args = parser.parse_args()
    scale = 0.2 if args.quick else 1.0
    bench_mapping(int(100_000 * scale))
    with tempfile.TemporaryDirectory() as tmp:
        for size, n in ((1, 300), (50, 5_000), (500, 10_000)):
            asyncio.run(bench_delivery(size, max(int(n * scale), size), Path(tmp)))


if __name__ == "__main__":
    main()
