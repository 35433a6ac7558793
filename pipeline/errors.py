"""Pipeline errors.

::

    PipelineError
    ├── ConfigError (also a gateway.errors.ConfigError)   bad catalogue or pipeline config
    ├── SchemaMismatch                                    a frame does not have the fixed schema
    └── StoreError                                        the DuckDB store failed
        ├── RetryableStoreError                           transient (I/O hiccup); retry the batch
        └── PermanentStoreError                           corrupt file, schema conflict; stop
            └── StoreLocked                               another process holds the file

``duckdb`` exceptions are translated inside ``pipeline.store`` and chained with ``from``.
"""

from __future__ import annotations

from gateway.errors import ConfigError as GatewayConfigError

__all__ = [
    "ConfigError",
    "PermanentStoreError",
    "PipelineError",
    "RetryableStoreError",
    "SchemaMismatch",
    "StoreError",
    "StoreLocked",
]


class PipelineError(Exception):
    """Base of every pipeline error."""


class ConfigError(PipelineError, GatewayConfigError):
    """The catalogue or a pipeline setting is invalid."""


class SchemaMismatch(PipelineError):
    """A frame's columns or types differ from the fixed schema."""


class StoreError(PipelineError):
    """The store could not complete an operation."""


class RetryableStoreError(StoreError):
    """Transient failure; the same batch may be written again."""


class PermanentStoreError(StoreError):
    """The store cannot go on (locked by another process, corrupt, incompatible)."""


class StoreLocked(PermanentStoreError):
    """Another process holds the database file (DuckDB allows one writer process)."""
