"""RACP sync state: the highest committed glucose record sequence number per device.

Kept in a small JSON file (``{"GM-P001": 42}``), rewritten atomically (temporary file, then
rename) whenever a committed batch raises a device's number. A glucose meter is then asked
only for records after it: ``RACP report records, sequence >= last + 1``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from gateway.errors import ConfigError

__all__ = ["SyncState"]

log = logging.getLogger(__name__)


class SyncState:
    """Highest stored glucose record per device, persisted in ``path`` (``None``: memory only).

    Raises:
        ConfigError: The file exists but is not a JSON object of device id -> integer.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._last: dict[str, int] = {}
        if path is not None and path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise ConfigError(f"{path}: cannot read BLE sync state: {exc}") from exc
            if not isinstance(data, dict) or not all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
                for k, v in data.items()
            ):
                raise ConfigError(f"{path}: expected a JSON object of device id -> integer")
            self._last = dict(data)

    def last(self, device_id: str) -> int | None:
        """The highest committed sequence number of ``device_id``, ``None`` if none yet."""
        return self._last.get(device_id)

    def commit(self, items: Iterable[tuple[str, int]]) -> bool:
        """Raise devices' numbers to the given ones; save when anything changed."""
        changed = False
        for device_id, seq in items:
            if seq > self._last.get(device_id, -1):
                self._last[device_id] = seq
                changed = True
        if changed:
            self.save()
        return changed

    def save(self) -> None:
        """Write the file atomically (no-op without a path)."""
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self._last, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)
