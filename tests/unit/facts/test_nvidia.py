"""NvidiaGpus and NvidiaComputeApps against nvidia-smi output captured on a real H200.

The JSON files beside this module are pyinfra-testing fact tests: ``output`` is what
nvidia-smi printed on the device machine (bench/gpu_drill/run.sh captured it), ``fact`` what
the fact must return.
Files whose ``note`` says "edited" change real rows into the rarer forms nvidia-smi prints.
"""

from pathlib import Path

import pytest
from pyinfra.api.exceptions import FactProcessError
from pyinfra_testing.facts import make_fact_tests

from llmhost.facts.nvidia import NvidiaComputeApps, NvidiaGpus

HERE = Path(__file__).parent

TestNvidiaGpus = make_fact_tests("llmhost", "facts.nvidia.NvidiaGpus", HERE / "nvidia.NvidiaGpus")
TestNvidiaComputeApps = make_fact_tests(
    "llmhost", "facts.nvidia.NvidiaComputeApps", HERE / "nvidia.NvidiaComputeApps"
)


@pytest.mark.parametrize(
    ("fact", "line"),
    [
        (NvidiaGpus(), "0, GPU-x, NVIDIA H200, 143771"),
        (NvidiaComputeApps(), "460, GPU-x"),
    ],
)
def test_short_row_is_an_error_not_a_guess(fact: NvidiaGpus | NvidiaComputeApps, line: str) -> None:
    with pytest.raises(FactProcessError, match="expected"):
        fact.process([line])
