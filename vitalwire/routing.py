"""The router of a service configuration: shipped and configured device profiles, and routes."""

from __future__ import annotations

from gateway.formats.profiles import load_profiles
from gateway.formats.router import Router, load_default_profiles
from pipeline.catalogue import catalogue
from vitalwire.config import ServiceConfig

__all__ = ["build_router"]


def build_router(config: ServiceConfig) -> Router:
    """Routes and device profiles (shipped plus configured folders), validated.

    Raises:
        ConfigError: A route or profile is invalid.
    """
    known = catalogue().names
    profiles = dict(load_default_profiles(known))
    for folder in config.profile_dirs:
        profiles.update(load_profiles(folder, known))
    return Router(config.routes, profiles)
