"""Which of vLLM's flags a service's ``extra_args`` may carry (pure: no pyinfra).

The deploy plans or owns some flags; a copy in ``extra_args`` would override the plan (vLLM
takes the last one) and move a service off its planned port or memory. Secrets must never be on
a command line. vLLM's parser (``FlexibleArgumentParser``, argparse with ``allow_abbrev``) also
takes ``_`` for ``-``, ``--flag=value`` and any unambiguous prefix, so all of those are matched.
"""

from __future__ import annotations

import re

# Set by the deploy for every service, whether or not this host's plan emits them.
OWNED = frozenset(
    {
        "--model",
        "--host",
        "--port",
        "--served-model-name",
        "--gpu-memory-utilization",
        "--tensor-parallel-size",
        "--max-model-len",
        "--max-num-seqs",
        "--max-num-batched-tokens",
        "--kv-cache-dtype",
        "--enforce-eager",
        "--enable-force-include-usage",
    }
)
# Reads any flag from a YAML file, around every rule here.
CONFIG = "--config"
# vLLM's short spellings of flags the deploy may plan.
SHORT = {"-q": "--quantization", "-tp": "--tensor-parallel-size"}
SECRET = frozenset({"--api-key", "--hf-token"})
# Removed from vLLM: `vllm serve` exits at start on them (FACTS.md).
REMOVED = frozenset({"--disable-log-requests", "--swap-space"})
# Hub tokens and OpenAI-style keys, wherever they appear in a value.
TOKEN_RE = re.compile(r"\bhf_[A-Za-z0-9]{30,}|\bsk-[A-Za-z0-9_-]{20,}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def flag_name(arg: str) -> str | None:
    """The long flag ``arg`` spells, as vLLM reads it (``--max_model_len=9`` ->
    ``--max-model-len``); None for a value."""
    if arg in SHORT:
        return SHORT[arg]
    if not arg.startswith("--") or arg == "--":
        return None
    return "--" + arg[2:].split("=", 1)[0].split(".", 1)[0].replace("_", "-")


def problems(extra_args: list[str], planned: set[str]) -> list[str]:
    """What is wrong with ``extra_args``, one line each; ``planned`` are the flags this
    host's plan emits for the service."""
    owned = OWNED | planned
    found = []
    for arg in extra_args:
        if _CONTROL_RE.search(arg):
            found.append(f"{arg!r} holds a control character (newline, tab, ...); remove it")
            continue
        if TOKEN_RE.search(arg):
            found.append("an argument holds what looks like a token; secrets go in 0600 files")
            continue
        flag = flag_name(arg)
        if flag is None:
            continue
        if any(flag.startswith(s) or s.startswith(flag) for s in SECRET):
            found.append(
                f"{flag} puts a secret on the command line and in the unit file; the API key "
                "comes from llmhost_api_key_file, the HF token from llmhost_hf_token_file"
            )
        elif flag == CONFIG:
            found.append(
                f"{CONFIG} reads flags from a file, past these checks; put each flag in "
                "extra_args instead"
            )
        elif matches := sorted(o for o in owned if o.startswith(flag)):
            given = arg.split("=", 1)[0]
            what = given if matches == [given] else f"{given} (read as {', '.join(matches)})"
            found.append(
                f"{what} is planned by the deploy; set the service's own key instead (port, "
                "max_model_len, max_num_seqs, ...) or remove it"
            )
        elif flag in REMOVED:
            found.append(f"{flag} was removed from vLLM and makes it exit at start; remove it")
    return found
