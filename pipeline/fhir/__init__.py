"""FHIR R4 export to the EHR: mapping, outbox, exporter, operator commands.

::

    store.write (one transaction) ──> readings + fhir_outbox   (OutboxWriter, a transaction hook)
    FhirExporter worker: fhir_outbox ──> to_fhir_observations ──> rules ──> transaction Bundles
        ──> FHIR server ──> fhir_delivered | fhir_dead_letter

See ``docs/fhir.md``.
"""

from pipeline.fhir.config import AuthConfig, FhirConfig, MetricPolicy, RetryPolicy, load_fhir_config
from pipeline.fhir.exporter import ExporterStats, FhirExporter
from pipeline.fhir.mapping import MappingResult, to_fhir_observations
from pipeline.fhir.ranges import NoReferenceRanges, ReferenceRangeProvider, TableReferenceRanges

__all__ = [
    "AuthConfig",
    "ExporterStats",
    "FhirConfig",
    "FhirExporter",
    "MappingResult",
    "MetricPolicy",
    "NoReferenceRanges",
    "ReferenceRangeProvider",
    "RetryPolicy",
    "TableReferenceRanges",
    "load_fhir_config",
    "to_fhir_observations",
]
