"""extra_args: no flag the deploy plans, no secret, no flag that makes vLLM exit."""

from __future__ import annotations

import pytest

from llmhost.service import vllm_args

PLANNED = {"--quantization"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "9000"], "--port is planned by the deploy; set the service's own key"),
        (["--port=9000"], "--port is planned by the deploy"),
        (["--max_model_len", "4096"], "--max_model_len (read as --max-model-len) is planned"),
        (["--max-model", "4096"], "--max-model (read as --max-model-len)"),
        (["--max-num", "4"], "(read as --max-num-batched-tokens, --max-num-seqs)"),
        (["--gpu-memory-utilization", "0.9"], "--gpu-memory-utilization is planned"),
        (["-q", "fp8"], "-q (read as --quantization) is planned"),
        (["--config", "x.yaml"], "--config reads flags from a file"),
        (["--host=0.0.0.0"], "--host is planned"),
        (["--api-key", "abc"], "--api-key puts a secret on the command line"),
        (["--api", "abc"], "--api puts a secret on the command line"),
        (["--hf-token=abc"], "--hf-token puts a secret"),
        (["--served-model-name", "x"], "--served-model-name is planned"),
        (["--hf-overrides", "hf_" + "a" * 34], "looks like a token"),
        (["--disable-log-requests"], "was removed from vLLM and makes it exit at start"),
        (["--swap-space", "4"], "was removed from vLLM"),
        (["--seed", "1\nExecStartPre=/bin/sh"], "holds a control character"),
    ],
)
def test_refused(args: list[str], message: str) -> None:
    found = vllm_args.problems(args, PLANNED)
    assert len(found) == 1 and message in found[0], found


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--seed", "1", "--dtype=half"],
        ["--hf-overrides", '{"rope_scaling": null}'],
        ["--model-impl", "vllm"],
        ["--enable-prefix-caching", "--tokenizer-mode", "auto"],
    ],
)
def test_accepted(args: list[str]) -> None:
    assert vllm_args.problems(args, PLANNED) == []


def test_quantization_is_free_where_the_plan_sets_none() -> None:
    assert vllm_args.problems(["--quantization", "fp8"], set()) == []
