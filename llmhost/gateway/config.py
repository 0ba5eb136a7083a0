"""What goes into the gateway's HAProxy config and its map of client-key hashes (pure: no
pyinfra), from one host's settings and the plan the deploy applies.

HAProxy routes on the body's ``model`` only if the whole body fits in its request buffer, so the
buffer is sized from the largest ``max_model_len``: a prompt of that many tokens, each at most
``BYTES_PER_TOKEN`` bytes as JSON, plus ``BODY_SLACK_BYTES`` for the rest of the request
(sampling parameters, tool definitions, the message structure). A larger body gets a 413.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from llmhost.applied_plan import AppliedPlan
from llmhost.layout import GATEWAY_USAGE_PATH, Layout, url_host
from llmhost.settings import Settings

# A BPE token is ~4 bytes of English text and ~3 of code; CJK text written as JSON \uXXXX escapes
# takes up to ~12 bytes a token (2 characters x 6). 16 covers that with room for the JSON
# around each message.
BYTES_PER_TOKEN = 16
BODY_SLACK_BYTES = 64 * 1024
# The headers and HAProxy's header rewrites (tune.maxrewrite) share the buffer with the body;
# longer headers are refused (431) instead of eating into the body's room.
HEADER_ROOM_BYTES = 16 * 1024
MAXREWRITE_BYTES = 8 * 1024
# Each connection holds up to two buffers: maxconn x 2 x bufsize bounds the gateway's memory.
MAXCONN = 2000
TIMEOUT_S = 600
# The token counters llmhost/gateway/gateway.lua serves (labels client, model), by what they count.
USAGE_METRICS = {
    "requests": "llmhost_gateway_requests_total",
    "prompt": "llmhost_gateway_prompt_tokens_total",
    "completion": "llmhost_gateway_completion_tokens_total",
}
# Only these reach a service; vLLM answers them all under /v1 with its API key.
API_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")


@dataclass(frozen=True)
class Server:
    """One unit of a service (a replica) as the gateway reaches it."""

    name: str
    address: str
    port: int


@dataclass(frozen=True)
class Backend:
    name: str
    served_model_name: str
    # The service's units: one, or each of its replicas (balanced by least connections).
    servers: tuple[Server, ...]
    # Every name the model answers to (served name first), its cap on requests in flight and
    # the 429 body beyond it.
    names: tuple[str, ...]
    max_in_flight: int | None
    busy: str


@dataclass(frozen=True)
class ClientRules:
    """What the gateway holds one client to (the key's hash is in the clients map)."""

    name: str
    rpm: int | None
    concurrency: int | None
    # The model names it may ask for, every alias of its services included (empty: all), its
    # own GET /v1/models and its 403 body.
    allowed: tuple[str, ...] = ()
    models_json: str = ""
    forbidden: str = ""


def max_body_bytes(largest_max_model_len: int) -> int:
    """The largest request body the gateway reads whole (and routes), in bytes."""
    return largest_max_model_len * BYTES_PER_TOKEN + BODY_SLACK_BYTES


def bufsize(largest_max_model_len: int) -> int:
    """HAProxy's ``tune.bufsize``: the body, the headers and the rewrite room, in 16 KiB steps."""
    need = max_body_bytes(largest_max_model_len) + HEADER_ROOM_BYTES + MAXREWRITE_BYTES
    step = 16 * 1024
    return -(-need // step) * step


def key_hash(key: str) -> str:
    """What the clients map holds for a key: the sha256 HAProxy computes (``sha2(256),hex``)."""
    return hashlib.sha256(key.encode()).hexdigest()


def clients_map(hashes: dict[str, str]) -> str:
    """The map file HAProxy looks a key's hash up in: ``<hash> <client>``, sorted by client."""
    return "".join(f"{hashes[name]} {name}\n" for name in sorted(hashes))


def _error(message: str, kind: str, code: str | None = None, param: str | None = None) -> str:
    """An OpenAI-style error body (what the openai client parses into its exceptions)."""
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return json.dumps(body, separators=(",", ":"))


def models_json(plan: AppliedPlan, names: dict[str, tuple[str, ...]]) -> str:
    """``GET /v1/models``: each model name, aliases included, as vLLM lists its own; ``names``
    holds each service's names to list (a client's allow-list: only its services)."""
    data = [
        {
            "id": name,
            "object": "model",
            "owned_by": "llmhost",
            "max_model_len": units[0].max_model_len,
        }
        for service, units in plan.by_service().items()
        for name in names.get(service, ())
    ]
    return json.dumps({"object": "list", "data": data}, separators=(",", ":"))


def _messages(names: list[str], max_body: int) -> dict[str, str]:
    served = ", ".join(names)
    return {
        "not_found": _error("No such path on this gateway.", "invalid_request_error", "not_found"),
        "unauthorized": _error(
            "Missing or unknown API key: send the header Authorization: Bearer KEY.",
            "invalid_request_error",
            "invalid_api_key",
        ),
        "too_many": _error("Rate limit reached for this client.", "requests", "rate_limit"),
        "too_many_in_flight": _error(
            "This client has its most requests in flight; retry when one has finished.",
            "requests",
            "rate_limit",
        ),
        "bad_method": _error("Method not allowed on this path.", "invalid_request_error"),
        "headers_too_large": _error(
            f"Request headers over {HEADER_ROOM_BYTES} bytes.",
            "invalid_request_error",
            "request_header_fields_too_large",
        ),
        "too_large": _error(
            f"Request body over {max_body} bytes.", "invalid_request_error", "request_too_large"
        ),
        # lf-string: HAProxy fills in the model asked for, escaped as a JSON string.
        "unknown_model": _error(
            "The model `%[var(txn.model),json(utf8s)]` does not exist here; served models: "
            f"{served}.",
            "invalid_request_error",
            "model_not_found",
            "model",
        ),
    }


def _health(backends: list[Backend]) -> tuple[str, str]:
    """``/health``'s body (each model's servers that pass their check) and its 200 condition."""
    up = ",".join(f'"{b.served_model_name}":%[nbsrv({b.name})]' for b in backends)
    condition = " ".join(f"{{ nbsrv({b.name}) gt 0 }}" for b in backends)
    return '{"up":{' + up + "}}", condition


def _busy(served: str, cap: int) -> str:
    return _error(
        f"The model `{served}` has its most requests in flight ({cap}); retry shortly.",
        "requests",
        "model_busy",
    )


def _clients(
    settings: Settings, plan: AppliedPlan, names: dict[str, tuple[str, ...]]
) -> list[ClientRules]:
    rules = []
    for name, client in sorted(settings.clients.items()):
        rpm = client.rpm or settings.gateway_rate_limit
        if client.models is None:
            rules.append(ClientRules(name, rpm, client.concurrency))
            continue
        # A model allowed by any of its names is allowed by all of them.
        mine = {svc: ns for svc, ns in names.items() if set(ns) & set(client.models)}
        allowed = tuple(n for ns in mine.values() for n in ns)
        forbidden = _error(
            "This key may not use the model `%[var(txn.model),json(utf8s)]`; its models: "
            f"{', '.join(allowed)}.",
            "invalid_request_error",
            "model_not_allowed",
            "model",
        )
        listed = models_json(plan, mine)
        rules.append(ClientRules(name, rpm, client.concurrency, allowed, listed, forbidden))
    return rules


def _backends(settings: Settings, plan: AppliedPlan) -> list[Backend]:
    """One backend per service, a server per unit: the cap is the model's, whichever replica
    serves."""
    backends = []
    for name, units in plan.by_service().items():
        spec = settings.service(name)
        cap = spec.gateway_max_in_flight
        servers = tuple(Server(u.name, url_host(u.bind_host), u.port) for u in units)
        busy = _busy(spec.served_model_name, cap) if cap else ""
        names = tuple(spec.model_names)
        backends.append(Backend(name, spec.served_model_name, servers, names, cap, busy))
    return backends


def context(settings: Settings, plan: AppliedPlan) -> dict[str, Any]:
    """The variables ``haproxy.cfg.j2`` is rendered with."""
    layout = Layout(settings)
    backends = _backends(settings, plan)
    names = {b.name: b.names for b in backends}
    clients = _clients(settings, plan, names)
    largest = max(svc.max_model_len for svc in plan.services.values())
    max_body = max_body_bytes(largest)
    health_ok, all_up = _health(backends)
    g = {
        "tls": settings.gateway_tls,
        # HAProxy splits address and port at the last ':', IPv6 included; "::" takes IPv4 too.
        "bind": settings.gateway_bind,
        "bind_opts": " v4v6" if settings.gateway_bind == "::" else "",
        "port": settings.gateway_port,
        "pem": layout.gateway_pem,
        "clients_map": layout.gateway_clients_map,
        "lua": layout.gateway_lua,
        "usage_path": GATEWAY_USAGE_PATH,
        "metrics_port": settings.gateway_metrics_port,
        "clients": clients,
        # A client's requests per minute and in flight are counted in one table, keyed by name.
        "track_clients": any(c.rpm or c.concurrency for c in clients),
        "capped": any(b.max_in_flight for b in backends),
        "maxconn": MAXCONN,
        "timeout_s": TIMEOUT_S,
        "max_model_len": largest,
        "bytes_per_token": BYTES_PER_TOKEN,
        "body_slack_bytes": BODY_SLACK_BYTES,
        "max_body_bytes": max_body,
        "max_header_bytes": HEADER_ROOM_BYTES,
        "bufsize": bufsize(largest),
        "maxrewrite": MAXREWRITE_BYTES,
        "api_paths": API_PATHS,
        "backends": backends,
        "models_json": models_json(plan, names),
        "health_ok": health_ok,
        "all_up": all_up,
        **_messages([b.served_model_name for b in backends], max_body),
    }
    return {"g": g}
