"""The post-deploy checks fail, naming the service and the numbers, when the host is wrong:
a stopped service, a broken API key. (A service that restarted: test_5_drills' kill drills.)"""

from __future__ import annotations

import pytest
from conftest import HOST, LAYOUT, DeployRun, host_checks, on_guest, unit

CODER = unit("coder")
WAIT_HEALTHY = (
    f"for i in $(seq 300); do curl -fs -o /dev/null "
    f"{LAYOUT.health_url(LAYOUT.settings.service('coder'))} && exit 0; sleep 1; done; exit 1"
)


def _failures(*select: str) -> str:
    result = host_checks("-k", " or ".join(select))
    assert result.returncode != 0, f"the checks passed on a broken host:\n{result.stdout[-3000:]}"
    return result.stdout


@pytest.fixture
def restore_coder():
    yield
    on_guest(f"systemctl start {CODER}")
    on_guest(WAIT_HEALTHY)


def test_a_stopped_service_fails_its_checks(converged: DeployRun, restore_coder) -> None:
    on_guest(f"systemctl stop {CODER}")
    out = _failures("coder and (active_enabled or health)")
    assert f"{HOST}::coder: {CODER} is" in out
    assert "(want active, enabled)" in out
    assert "/health answered" in out


def test_a_broken_api_key_fails_the_chat_check(converged: DeployRun) -> None:
    key_file = LAYOUT.api_key_env
    # The file now holds a key the running services do not know (owner and mode kept).
    on_guest(f"cp -p {key_file} {key_file}.orig")
    on_guest(f"sed -i 's/^VLLM_API_KEY=.*/VLLM_API_KEY=not-the-deployed-key/' {key_file}")
    try:
        out = _failures("chat and not without_key")
    finally:
        # The file as it was, modification time included: a newer key file restarts the
        # services on the next deploy.
        on_guest(f"mv {key_file}.orig {key_file}")
    assert "coder" in out and "general" in out
    assert "401" in out
