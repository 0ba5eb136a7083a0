"""Secrets and environment: offline mode on, secret files private, the key never in the clear."""

from __future__ import annotations

from targets import HostTarget, ServiceTarget, fail_on


def _private_file_problems(target: HostTarget, path: str) -> list[str]:
    f = target.host.file(path)
    if not f.exists:
        return [f"{target.name}: {path} is missing; run the deploy"]
    if f.mode != 0o600 or f.user != target.settings.user:
        return [
            f"{target.name}: {path} is mode {f.mode:04o} owned by {f.user}, want 0600 owned by "
            f"{target.settings.user} (llmhost_user); run the deploy"
        ]
    return []


def test_env_file(service: ServiceTarget) -> None:
    fail_on(_private_file_problems(service.target, service.env_file))


def test_secret_files(target: HostTarget) -> None:
    paths = [target.api_key_file]
    hf_token = f"{target.settings.config_dir}/hf_token"
    if target.host.file(hf_token).exists:
        paths.append(hf_token)
    fail_on([p for path in paths for p in _private_file_problems(target, path)])


def test_offline(service: ServiceTarget) -> None:
    pid = service.main_pid()
    value = service.probe("environ", pid=pid, names=["HF_HUB_OFFLINE"])["HF_HUB_OFFLINE"]
    if value != "1":
        fail_on(
            [
                f"{service.where}: its process (PID {pid}) runs with HF_HUB_OFFLINE={value!r}, "
                f"want '1' from {service.env_file}; the unit must read that file "
                "(EnvironmentFile=) and be restarted"
            ]
        )


def test_key_not_exposed(service: ServiceTarget) -> None:
    props = service.show()
    paths = [props["FragmentPath"], *props["DropInPaths"].split()]
    paths += [f"/proc/{pid}/cmdline" for pid in service.pids()]
    hits = service.probe("files_containing_key", key_file=service.target.api_key_file, paths=paths)
    if hits:
        fail_on(
            [
                f"{service.where}: the API key is readable in {', '.join(hits)}; pass it only as "
                f"VLLM_API_KEY in {service.env_file} (a key in a unit or on a command line "
                "shows in ps)"
            ]
        )
