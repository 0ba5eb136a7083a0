"""Host facts in pyinfra-testing style (folders beside this module)."""

from pathlib import Path

from pyinfra_testing.facts import make_fact_tests

HERE = Path(__file__).parent

TestFreeDiskBytes = make_fact_tests(
    "llmhost", "facts.host.FreeDiskBytes", HERE / "host.FreeDiskBytes"
)
TestPythonVersion = make_fact_tests(
    "llmhost", "facts.host.PythonVersion", HERE / "host.PythonVersion"
)
TestUnitState = make_fact_tests("llmhost", "facts.host.UnitState", HERE / "host.UnitState")
TestPasswdAccount = make_fact_tests(
    "llmhost", "facts.host.PasswdAccount", HERE / "host.PasswdAccount"
)
TestResolvedAddresses = make_fact_tests(
    "llmhost", "facts.host.ResolvedAddresses", HERE / "host.ResolvedAddresses"
)
TestSnapshotDirs = make_fact_tests("llmhost", "facts.host.SnapshotDirs", HERE / "host.SnapshotDirs")
TestListeners = make_fact_tests("llmhost", "facts.host.Listeners", HERE / "host.Listeners")
