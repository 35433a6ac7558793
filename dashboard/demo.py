"""Demo users for ``vitalwire demo`` (documented in ``docs/dashboard.md``; never for real use).

=============  ===============  ===========
user           password         role
=============  ===============  ===========
clinician      clinician-demo   clinician
coordinator    coordinator-demo coordinator
admin          admin-demo       admin
=============  ===============  ===========
"""

from __future__ import annotations

import asyncio

from dashboard import schema
from dashboard.users import add_user, get_user, hash_password
from pipeline.store import DuckDbStore

__all__ = ["DEMO_USERS", "create_demo_users"]

DEMO_USERS: tuple[tuple[str, str, str], ...] = (
    ("clinician", "clinician-demo", "clinician"),
    ("coordinator", "coordinator-demo", "coordinator"),
    ("admin", "admin-demo", "admin"),
)
"""``(username, password, role)`` of the demo users."""


async def create_demo_users(store: DuckDbStore) -> list[str]:
    """Create the demo users that do not exist yet; returns the names created."""
    await store.call(schema.migrate)
    made = []
    for username, password, role in DEMO_USERS:
        if await store.call(get_user, username) is None:
            digest = await asyncio.to_thread(hash_password, password)
            await store.call(add_user, username, role, digest)
            made.append(username)
    return made
