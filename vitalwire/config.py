"""Service configuration: one frozen dataclass per component, loaded from TOML.

Every key has a named default, so an empty file (or none) is a working local setup. Unknown
sections or keys, and values of the wrong type, fail at start with the file, the key and what
was expected. See ``examples/vitalwire.toml`` for a commented sample.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.ble.config import BleConfig, load_ble_config
from gateway.config import MqttConfig
from gateway.errors import ConfigError
from gateway.formats.router import DEFAULT_ROUTES, Route
from pipeline.batcher import BatchConfig
from pipeline.fhir.config import FhirConfig, load_fhir_config
from pipeline.normalize import NormalizeConfig
from pipeline.store import DEFAULT_DB_PATH, StoreConfig

__all__ = ["ServiceConfig", "load_config"]

DEFAULT_DB = DEFAULT_DB_PATH

INTAKE_MODES = ("process", "inline")
"""Values of ``[service].intake``."""


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """Everything ``vitalwire run`` needs.

    Attributes:
        mqtt: Broker connection of the gateway.
        store: DuckDB file and checkpoint policy.
        batch: When micro-batches close.
        normalize: Time limits of normalization.
        routes: Topic template -> payload format; first match wins.
        profile_dirs: Extra folders of device profiles (``*.toml``), besides the shipped ones.
        progress_s: Seconds between progress lines in the log (0 = none).
        store_lock_wait_s: At start, how long to wait for another process (a CLI command) to
            release the database file before giving up.
        fhir: FHIR export to the EHR (endpoint, auth, bundle size, per-metric policy).
        ble: BLE devices to connect (none by default) and the BLE backend.
        intake: Where MQTT receive, decoding and batching run: ``process`` (a child process,
            so they use a second CPU core; see :mod:`vitalwire.intake`) or ``inline`` (in the
            service process). With BLE devices configured the intake is always inline.
    """

    mqtt: MqttConfig = field(default_factory=MqttConfig)
    store: StoreConfig = field(default_factory=lambda: StoreConfig(path=DEFAULT_DB))
    batch: BatchConfig = field(default_factory=BatchConfig)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    routes: tuple[Route, ...] = DEFAULT_ROUTES
    profile_dirs: tuple[Path, ...] = ()
    progress_s: float = 5.0
    store_lock_wait_s: float = 10.0
    fhir: FhirConfig = field(default_factory=FhirConfig)
    ble: BleConfig = field(default_factory=BleConfig)
    intake: str = "process"

    def __post_init__(self) -> None:
        if self.intake not in INTAKE_MODES:
            raise ConfigError(
                f"intake: {self.intake!r} is not one of {', '.join(INTAKE_MODES)}"
            )

    def with_overrides(self, **changes: Any) -> ServiceConfig:
        """A copy with some sub-configs replaced (``mqtt=...``, ``store=...``)."""
        return dataclasses.replace(self, **changes)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if hint is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a path string, got {value!r}")
        return Path(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint in (int, str, bool):
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
        return value
    return value


def _section(cls: type, table: Any, where: str, **fixed: Any) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = dict(fixed)
    for key, value in table.items():
        if key not in names:
            raise ConfigError(
                f"{where}: unknown key {key!r} (expected one of: {', '.join(sorted(names))})"
            )
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}")
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def load_config(path: Path | None) -> ServiceConfig:
    """Read a service config; ``None`` gives the embedded defaults."""
    if path is None:
        return ServiceConfig()
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    known = {"mqtt", "store", "batch", "normalize", "routes", "profiles", "service", "fhir", "ble"}
    for key in data:
        if key not in known:
            raise ConfigError(
                f"{path}: unknown section [{key}] (expected: {', '.join(sorted(known))})"
            )
    base = ServiceConfig()
    mqtt = _section(MqttConfig, data.get("mqtt", {}), f"{path}: [mqtt]")
    store_table = dict(data.get("store", {}))
    store_path = Path(store_table.pop("path", str(base.store.path)))
    store = _section(StoreConfig, store_table, f"{path}: [store]", path=store_path)
    batch = _section(BatchConfig, data.get("batch", {}), f"{path}: [batch]")
    normalize = _section(NormalizeConfig, data.get("normalize", {}), f"{path}: [normalize]")
    routes = base.routes
    if "routes" in data:
        raw = data["routes"]
        if not isinstance(raw, list):
            raise ConfigError(f"{path}: [[routes]] must be an array of tables")
        routes = tuple(_section(Route, item, f"{path}: routes[{i}]") for i, item in enumerate(raw))
    profiles = data.get("profiles", {})
    if not isinstance(profiles, dict) or set(profiles) - {"dirs"}:
        raise ConfigError(f"{path}: [profiles] takes only 'dirs' (a list of folders)")
    dirs = profiles.get("dirs", [])
    if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
        raise ConfigError(f"{path}: [profiles].dirs must be a list of folder paths")
    base_dir = Path(path).parent
    profile_dirs = tuple((base_dir / d).resolve() for d in dirs)
    for d in profile_dirs:
        if not d.is_dir():
            raise ConfigError(f"{path}: [profiles].dirs: {d} is not a folder")
    service = data.get("service", {})
    service_keys = {"progress_s", "store_lock_wait_s", "intake"}
    if not isinstance(service, dict) or set(service) - service_keys:
        raise ConfigError(
            f"{path}: [service] takes only {', '.join(repr(k) for k in sorted(service_keys))}"
        )
    intake = service.get("intake", base.intake)
    if intake not in INTAKE_MODES:
        raise ConfigError(
            f"{path}: [service].intake: expected one of {', '.join(INTAKE_MODES)}, got {intake!r}"
        )
    progress = _coerce(
        service.get("progress_s", base.progress_s), float, f"{path}: [service].progress_s"
    )
    lock_wait = _coerce(
        service.get("store_lock_wait_s", base.store_lock_wait_s),
        float,
        f"{path}: [service].store_lock_wait_s",
    )
    fhir = load_fhir_config(data.get("fhir", {}), f"{path}: [fhir]", Path(path).parent)
    ble = load_ble_config(data.get("ble", {}), f"{path}: [ble]", Path(path).parent)
    return ServiceConfig(
        mqtt, store, batch, normalize, routes, profile_dirs, progress, lock_wait, fhir, ble, intake
    )
