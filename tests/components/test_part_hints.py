"""The "not computed yet" hints name commands and Python calls that exist."""

from __future__ import annotations

import re

from components.data import PART_HINTS
from core.cli.main import build_parser
from core.pipeline.stages import ALL_STAGES


def test_every_hint_names_a_real_command_and_a_real_stage() -> None:
    commands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    for part, hint in PART_HINTS.items():
        command = re.search(r"python -m core (\w+) BUNDLE", hint)
        stage = re.search(r'core\.run_stage\("(\w+)", BUNDLE\)', hint)
        assert command and command.group(1) in commands, part
        assert stage and stage.group(1) in ALL_STAGES, part
