"""llmhost.progress: one line per phase and host, when the host moves on or disconnects."""

from __future__ import annotations

import logging
import re
from types import SimpleNamespace

import pytest

from llmhost.progress import PhaseTimes, phase_of

OPS = {
    "a": "llmhost | System: user, directories, packages | Group vllm",
    "b": "llmhost | System: user, directories, packages | Service user vllm",
    "c": "llmhost | Python env: pinned vLLM release | Install vllm==0.33.0",
    "d": "server.shell (commands=['true'])",
}


class FakeState:
    def get_op_meta(self, op_hash: str) -> SimpleNamespace:
        return SimpleNamespace(names={OPS[op_hash]})


def test_phase_is_the_middle_part_of_a_packaged_deploys_name() -> None:
    assert phase_of(FakeState(), "c") == "Python env: pinned vLLM release"  # type: ignore[arg-type]
    assert phase_of(FakeState(), "d") is None  # type: ignore[arg-type]


def test_each_phase_is_logged_once_per_host(caplog: pytest.LogCaptureFixture) -> None:
    times, state = PhaseTimes(), FakeState()
    gpu1, gpu2 = SimpleNamespace(name="gpu-01"), SimpleNamespace(name="gpu-02")
    with caplog.at_level(logging.INFO, logger="pyinfra"):
        for op in "abc":
            times.operation_host_start(state, gpu1, op)  # type: ignore[arg-type]
        times.operation_host_start(state, gpu2, "a")  # type: ignore[arg-type]
        times.operation_host_start(state, gpu1, "d")  # type: ignore[arg-type]
        times.host_disconnect(state, gpu1)  # type: ignore[arg-type]
        times.host_disconnect(state, gpu2)  # type: ignore[arg-type]
    # Durations vary; what is logged, for whom and in which order does not.
    lines = [re.sub(r"\d+\.\d s$", "N s", r.getMessage()) for r in caplog.records]
    assert lines == [
        "[gpu-01] System: user, directories, packages: N s",
        "[gpu-01] Python env: pinned vLLM release: N s",
        "[gpu-01] llmhost phases done in N s",
        "[gpu-02] System: user, directories, packages: N s",
        "[gpu-02] llmhost phases done in N s",
    ]
