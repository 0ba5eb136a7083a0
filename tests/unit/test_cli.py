"""The ``llmhost`` command line as the README writes it."""

from __future__ import annotations

import pytest

from llmhost.cli import main as cli
from llmhost.cli.common import Exit
from llmhost_lab import cli as lab_cli
from llmhost_lab import lab


def test_lab_ssh_takes_the_command_after_the_name() -> None:
    args = lab_cli.parser().parse_args(["ssh", "--name", "it", "--", "ls", "-la", "/"])
    assert (args.action, args.name, args.command) == ("ssh", "it", ["ls", "-la", "/"])


def test_lab_ssh_without_a_command_opens_a_shell() -> None:
    args = lab_cli.parser().parse_args(["ssh"])
    assert (args.name, args.command) == ("default", [])


def test_lab_ssh_to_a_guest_that_is_not_up_names_the_fix(
    tmp_path, monkeypatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(lab, "STATE_DIR", tmp_path)
    assert cli.main(["lab", "ssh", "--name", "nowhere", "--", "true"]) == Exit.ERROR
    assert "no lab guest 'nowhere' is up; run `llmhost lab up`" in capsys.readouterr().err


def test_lab_reboot_of_a_guest_that_is_not_up_names_the_fix(
    tmp_path, monkeypatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(lab, "STATE_DIR", tmp_path)
    assert cli.main(["lab", "reboot", "--name", "nowhere"]) == Exit.ERROR
    err = capsys.readouterr().err
    assert "no lab guest 'nowhere' is up; run `llmhost lab up --name nowhere`" in err
