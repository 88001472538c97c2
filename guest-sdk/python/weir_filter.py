"""Weir's guest SDK for Python filters, built with componentize-py.

A filter is a class with ``__init__(self, config: str)`` (raise to refuse
the config) and ``filter(self, events) -> list`` (one verdict per event, in
order); ``export`` turns it into the component's world:

    import weir_filter as weir

    class PassThrough(weir.Filter):
        def filter(self, events):
            return [weir.keep() for _ in events]

    WitWorld = weir.export(PassThrough)

The same helpers as the Rust SDK: each event's fields, its JSON body read
and edited, ``log``, ``count``, and the verdicts ``keep``, ``replace`` and
``drop``. See README.md for the rules the host enforces.
"""

import json
import uuid

from componentize_py_types import Err
from wit_world.imports import host, types

__all__ = [
    "Filter", "Event", "export", "keep", "replace", "drop", "count", "log",
    "config_json", "field",
]


def keep():
    """Pass the event on unchanged."""
    return types.Verdict_Keep()


def replace(body):
    """Pass this JSON object on instead of the event's body: a dict (or
    anything ``json.dumps`` takes), or its JSON text as bytes."""
    if not isinstance(body, (bytes, bytearray)):
        body = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    return types.Verdict_Replace(bytes(body))


def drop(reason):
    """Drop the event; the client sees part code ``filtered`` with ``reason``."""
    return types.Verdict_Drop(str(reason))


def count(name, delta=1):
    """Adds ``delta`` to the filter's counter ``name`` (a node metric)."""
    host.count(name, delta)


def _logger(level):
    return staticmethod(lambda message: host.log(level, str(message)))


class log:
    """Log lines, tagged by the host with the filter, tenant and request."""

    trace = _logger(host.Level.TRACE)
    debug = _logger(host.Level.DEBUG)
    info = _logger(host.Level.INFO)
    warn = _logger(host.Level.WARN)
    error = _logger(host.Level.ERROR)


def config_json(config, allowed):
    """The config as a JSON object ({} when empty), refusing keys not in
    ``allowed`` (a typo would otherwise be silently ignored)."""
    if not config.strip():
        return {}
    try:
        value = json.loads(config)
    except ValueError as e:
        raise ValueError(f"config is not JSON: {e}")
    if not isinstance(value, dict):
        raise ValueError("config must be a JSON object")
    for key in value:
        if key not in allowed:
            raise ValueError(f"config: unknown key '{key}' (known: {', '.join(allowed)})")
    return value


def field(body, path):
    """The value at a dotted ``path`` (``props.email``) of a parsed body, or None."""
    value = body
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


class Event:
    """One event of the batch, with the batch's shared fields."""

    __slots__ = ("_batch", "_event", "_json")

    def __init__(self, batch, event):
        self._batch = batch
        self._event = event
        self._json = None

    @property
    def id(self):
        span = self._event.id
        return self._batch.bytes[span.offset:span.offset + span.len].decode()

    @property
    def body(self):
        """The event object's JSON text (bytes), as sent or as an earlier filter replaced it."""
        span = self._event.body
        return self._batch.bytes[span.offset:span.offset + span.len]

    def json(self):
        """The body parsed (once per event)."""
        if self._json is None:
            self._json = json.loads(self.body)
        return self._json

    def get(self, path):
        """The body's value at a dotted path, or None."""
        return field(self.json(), path)

    def with_field(self, path, value):
        """The body with ``path`` set to ``value``, as a ``replace`` verdict's bytes."""
        body = json.loads(self.body)
        target = body
        parts = path.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()

    @property
    def tenant(self):
        return self._batch.tenant

    @property
    def category(self):
        return self._batch.category

    @property
    def received_at(self):
        """Upload time, milliseconds since the Unix epoch."""
        return self._batch.received_at

    @property
    def backend_id(self):
        """The server's UUIDv7 for the event, as text."""
        high, low = self._event.backend_id
        return str(uuid.UUID(int=(high << 64) | low))

    @property
    def client_ip(self):
        """The event's IP (or the client's) as text, or None."""
        ip = self._event.client_ip
        if ip is None:
            return None
        if isinstance(ip, types.IpAddress_Ipv4):
            return ".".join(str(b) for b in ip.value)
        return ":".join(f"{g:x}" for g in ip.value)

    @property
    def geo(self):
        """``{"country", "region", "city"}`` of the client IP, or None."""
        if self._event.geo is None:
            return None
        g = self._batch.geos[self._event.geo]
        return {"country": g.country, "region": g.region, "city": g.city}


class Filter:
    """Base of a filter: ``__init__(config)`` and ``filter(events)``."""

    def __init__(self, config):
        self.config = config

    def filter(self, events):
        raise NotImplementedError


def export(cls):
    """The world class componentize-py looks for (assign it to ``WitWorld``)."""

    class WitWorld:
        instance = None

        def init(self, config):
            try:
                WitWorld.instance = cls(config)
            except Exception as e:
                raise Err(str(e))

        def filter(self, batch):
            if WitWorld.instance is None:
                WitWorld.instance = cls("")
            events = [Event(batch, e) for e in batch.events]
            return WitWorld.instance.filter(events)

    return WitWorld
