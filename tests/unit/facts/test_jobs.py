"""The background-job fact in pyinfra-testing style (folders beside this module)."""

from pathlib import Path

from pyinfra_testing.facts import make_fact_tests

HERE = Path(__file__).parent

TestJob = make_fact_tests("llmhost", "facts.jobs.Job", HERE / "jobs.Job")
