"""The post-deploy checks fail, naming the service and the numbers, when the host is wrong: a
broken API key. (A stopped service: test_monitoring's drill, which stops one anyway; a service
that restarted: test_drills' kill drills.)"""

from __future__ import annotations

from lab_guest import LAYOUT, DeployRun, failed_checks, on_guest


def test_a_broken_api_key_fails_the_chat_check(converged: DeployRun) -> None:
    key_file = LAYOUT.api_key_env
    # The file now holds a key the running services do not know (owner and mode kept).
    on_guest(f"cp -p {key_file} {key_file}.orig")
    on_guest(f"sed -i 's/^VLLM_API_KEY=.*/VLLM_API_KEY=not-the-deployed-key/' {key_file}")
    try:
        out = failed_checks("chat and not without_key")
    finally:
        # The file as it was, modification time included: a newer key file restarts the
        # services on the next deploy.
        on_guest(f"mv {key_file}.orig {key_file}")
    assert "coder" in out and "general" in out
    assert "401" in out
