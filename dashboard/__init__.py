"""The live dashboard: FastAPI app, websocket live feed, page, users and audit log.

The service constructs a :class:`LiveFeed` (fed after each commit and with the alert engine's
events) and runs a :class:`DashboardServer` on it; see ``docs/dashboard.md``.
"""

from dashboard.config import DashboardConfig, parse_http
from dashboard.desk import AlertDesk
from dashboard.driver import EngineDriver
from dashboard.feed import LiveFeed
from dashboard.server import DashboardServer

__all__ = [
    "AlertDesk",
    "DashboardConfig",
    "DashboardServer",
    "EngineDriver",
    "LiveFeed",
    "parse_http",
]
