"""Topic routing: which payload format decodes a message, and the device id in its topic.

A :class:`Route` pairs a topic template (``medsys/bedside/{device_id}/vitals``, where ``{name}``
captures one level) with a format: ``vitalwire``, ``openmhealth`` or ``profile:<name>``. The
:class:`Router` tries routes in order; the first match wins. :meth:`Router.decode` never raises
for bad input: every failure becomes a :class:`~gateway.records.Rejection`. Shipped formats and
loaded profiles also have a shortcut (:data:`~gateway.formats.base.FastDecoder`) for the
well-formed common case; whatever it declines is decoded by the format's own decoder.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ConfigError, DecodeError
from gateway.formats import ble, openmhealth, vitalwire_json
from gateway.formats.base import DecodeContext, Decoder, DecodeResult, FastDecoder
from gateway.formats.profile_fast import compile_profile
from gateway.formats.profiles import DeviceProfile, load_profiles
from gateway.records import RawMessage, Rejection

__all__ = [
    "BUILTIN_FORMATS",
    "DEFAULT_PROFILE_DIR",
    "DEFAULT_ROUTES",
    "TOPIC_CACHE_SIZE",
    "Route",
    "Router",
    "load_default_profiles",
]

DEFAULT_PROFILE_DIR = Path(__file__).resolve().parent.parent / "profiles"
"""The shipped device profiles (``gateway/profiles/*.toml``)."""

TOPIC_CACHE_SIZE = 65_536
"""Topics remembered by a router; the oldest entry is dropped beyond this."""

_CAPTURE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}\Z")


@dataclass(frozen=True, slots=True)
class Route:
    """A topic template and the format of the payloads published on it.

    Attributes:
        topic: Template such as ``medsys/bedside/{device_id}/vitals``; ``{name}`` captures
            exactly one non-empty level. ``{device_id}`` becomes the decoder's device id.
        format: ``vitalwire``, ``openmhealth`` or ``profile:<name>``.
    """

    topic: str
    format: str


DEFAULT_ROUTES: tuple[Route, ...] = (
    Route("pulsewear/{device_id}/telemetry", "profile:pulsewear-watch"),
    Route("medsys/bedside/{device_id}/vitals", "profile:medsys-bedside"),
    Route("glucoflow/{device_id}/egv", "profile:glucoflow-cgm"),
    Route(vitalwire_json.DEFAULT_TOPIC, vitalwire_json.FORMAT),
    Route(openmhealth.DEFAULT_TOPIC, openmhealth.FORMAT),
    Route(ble.DEFAULT_TOPIC, ble.FORMAT),
)
"""The topics of the simulated device kinds, with their formats."""

BUILTIN_FORMATS: dict[str, Decoder] = {
    vitalwire_json.FORMAT: vitalwire_json.decode_vitalwire,
    openmhealth.FORMAT: openmhealth.decode_openmhealth,
    ble.FORMAT: ble.decode_ble,
}
"""Format name -> decoder, for the formats that need no profile."""

_FAST_BUILTINS: tuple[tuple[Decoder, FastDecoder], ...] = (
    (vitalwire_json.decode_vitalwire, vitalwire_json.decode_vitalwire_fast),
)


def _fast_for(decoder: Decoder) -> FastDecoder | None:
    """The shortcut of a shipped decoder or of a loaded profile's ``decode``, else ``None``."""
    for careful, fast in _FAST_BUILTINS:
        if decoder is careful:
            return fast
    profile = getattr(decoder, "__self__", None)
    method = getattr(decoder, "__func__", None)
    if type(profile) is DeviceProfile and method is DeviceProfile.decode:
        return compile_profile(profile)
    return None


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A route split into levels: literal strings, or capture names (``None`` for literals)."""

    route: Route
    literals: tuple[str | None, ...]
    captures: tuple[str | None, ...]
    decoder: Decoder
    fast: FastDecoder | None

    @property
    def mqtt_filter(self) -> str:
        """The MQTT subscription filter: each capture becomes ``+``."""
        return "/".join("+" if lit is None else lit for lit in self.literals)

    def match(self, levels: list[str]) -> dict[str, str] | None:
        if len(levels) != len(self.literals):
            return None
        found: dict[str, str] = {}
        for level, literal, capture in zip(levels, self.literals, self.captures, strict=True):
            if capture is not None:
                if not level:
                    return None
                found[capture] = level
            elif level != literal:
                return None
        return found


def _compile(index: int, route: Route, decoders: Mapping[str, Decoder]) -> _Compiled:
    where = f"routes[{index}] ({route.topic!r})"
    decoder = decoders.get(route.format)
    if decoder is None:
        profiles = sorted(k for k in decoders if k.startswith("profile:"))
        raise ConfigError(
            f"{where}: format: unknown format {route.format!r} (expected vitalwire, "
            f"openmhealth or profile:<name> of a loaded profile: {', '.join(profiles) or 'none'})"
        )
    if not route.topic:
        raise ConfigError(f"{where}: topic: expected a topic template, got ''")
    literals: list[str | None] = []
    captures: list[str | None] = []
    for level in route.topic.split("/"):
        m = _CAPTURE.match(level)
        if m is not None:
            if m.group(1) in captures:
                raise ConfigError(f"{where}: topic: capture {{{m.group(1)}}} appears twice")
            literals.append(None)
            captures.append(m.group(1))
        elif any(c in level for c in "{}+#"):
            raise ConfigError(
                f"{where}: topic: level {level!r} must be literal or one whole {{name}} capture "
                "(no MQTT wildcards, no partial captures)"
            )
        else:
            literals.append(level)
            captures.append(None)
    return _Compiled(route, tuple(literals), tuple(captures), decoder, _fast_for(decoder))


class Router:
    """Decodes raw messages by topic. Build once; :meth:`decode` is called per message."""

    def __init__(self, routes: Sequence[Route], profiles: Mapping[str, DeviceProfile]) -> None:
        """Compile ``routes``.

        Raises:
            ConfigError: A route names an unknown format or profile, or a bad topic template.
        """
        decoders = dict(BUILTIN_FORMATS)
        decoders.update({f"profile:{name}": p.decode for name, p in profiles.items()})
        self._routes = tuple(_compile(i, r, decoders) for i, r in enumerate(routes))
        self._cache: dict[str, tuple[_Compiled, str | None] | None] = {}

    @property
    def routes(self) -> tuple[Route, ...]:
        """The routes, in matching order."""
        return tuple(c.route for c in self._routes)

    def subscriptions(self) -> list[str]:
        """MQTT topic filters covering every route (captures as ``+``), deduplicated."""
        return list(dict.fromkeys(r.mqtt_filter for r in self._routes))

    def _lookup(self, topic: str) -> tuple[_Compiled, str | None] | None:
        """First matching route and its ``device_id`` capture, cached per topic."""
        try:
            return self._cache[topic]
        except KeyError:
            pass
        levels = topic.split("/")
        hit: tuple[_Compiled, str | None] | None = None
        for compiled in self._routes:
            captures = compiled.match(levels)
            if captures is not None:
                hit = (compiled, captures.get("device_id"))
                break
        if len(self._cache) >= TOPIC_CACHE_SIZE:
            del self._cache[next(iter(self._cache))]
        self._cache[topic] = hit
        return hit

    def decode(self, msg: RawMessage) -> DecodeResult:
        """Decode one message; never raises for bad input (failures become rejections)."""
        hit = self._lookup(msg.topic)
        if hit is None:
            return DecodeResult(
                [],
                [Rejection("unknown_topic", "", f"topic {msg.topic!r} matches no route")],
            )
        compiled, device_id = hit
        if compiled.fast is not None:
            try:
                result = compiled.fast(msg.payload, device_id)
            except Exception:  # the careful decoder below decides
                result = None
            if result is not None:
                return result
        try:
            return compiled.decoder(
                msg.payload, DecodeContext(msg.topic, device_id, msg.received_at_us)
            )
        except DecodeError as exc:
            rejection = Rejection(exc.reason_code, exc.field, str(exc), device_id or "")
        except Exception as exc:  # a decoder bug must not stop the gateway
            rejection = Rejection(
                "decoder_error",
                "",
                f"{compiled.route.format} decoder failed: {type(exc).__name__}: {exc}",
                device_id or "",
            )
        return DecodeResult([], [rejection])


def load_default_profiles(known_metrics: Collection[str]) -> dict[str, DeviceProfile]:
    """The shipped profiles in ``gateway/profiles/``, validated against ``known_metrics``."""
    return load_profiles(DEFAULT_PROFILE_DIR, known_metrics)
