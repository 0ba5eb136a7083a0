"""The OpenAI-compatible endpoints, requested from the host itself (services bind 127.0.0.1)."""

from __future__ import annotations

import json
from typing import Any

from targets import ServiceTarget, fail_on

from llmhost.observe.checks import listener_problems
from llmhost.remote.agent import chat_text


def _answer(result: dict[str, Any]) -> str:
    return result["error"] or f"HTTP {result['status']}: {result['body'][:300]}"


def test_listening(service: ServiceTarget) -> None:
    listeners = service.probe("listening", pids=service.pids())
    planned = service.planned
    fail_on(
        listener_problems(
            service.where,
            [(addr, port) for addr, port in listeners],
            planned.bind_host,
            planned.port,
            wildcard_firewalled=service.target.settings.vllm_tcpstore_firewalled,
        )
    )


def test_health(service: ServiceTarget) -> None:
    url = service.url("/health")
    result = service.probe("http", url=url, timeout=10)
    if result["status"] != 200:
        fail_on([f"{service.where}: GET {url} answered {_answer(result)}"])


def test_models(service: ServiceTarget) -> None:
    url = service.url("/v1/models")
    result = service.probe("http", url=url, key_file=service.target.api_key_file, timeout=10)
    if result["status"] != 200:
        fail_on([f"{service.where}: GET {url} with the key answered {_answer(result)}"])
    served = [model["id"] for model in json.loads(result["body"])["data"]]
    # The served name, then its aliases (vLLM's --served-model-name takes them all).
    want = [service.planned.served_model_name, *service.spec.aliases]
    if served != want:
        fail_on([f"{service.where}: {url} lists {served}, want exactly {want}"])


def test_chat(service: ServiceTarget, request_timeout: float) -> None:
    url = service.url("/v1/chat/completions")
    result = service.probe(
        "http",
        url=url,
        key_file=service.target.api_key_file,
        body=service.chat_body(),
        timeout=request_timeout,
    )
    if result["status"] != 200:
        fail_on(
            [
                f"{service.where}: POST {url} with the key answered {_answer(result)} after "
                f"{result['seconds']:.1f} s (timeout {request_timeout:.0f} s)"
            ]
        )
    if not chat_text(result["body"]).strip():
        fail_on([f"{service.where}: the chat completion returned no text: {result['body'][:300]}"])


def test_chat_without_key(service: ServiceTarget, request_timeout: float) -> None:
    url = service.url("/v1/chat/completions")
    result = service.probe("http", url=url, body=service.chat_body(), timeout=request_timeout)
    if result["status"] != 401:
        fail_on(
            [
                f"{service.where}: POST {url} without the key answered {_answer(result)}, want "
                "401; is VLLM_API_KEY set in the env file?"
            ]
        )
