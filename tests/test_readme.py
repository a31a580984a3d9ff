"""The README's promises that code can check: its first two commands and the exit-code table."""

import re
from pathlib import Path

from common.exitcodes import ExitCode

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_starts_with_the_two_setup_commands_and_ci_runs_the_second():
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert len(first_block) == 2
    demo, tests = first_block
    assert demo.endswith(".venv/bin/python -m jobs.evaluate --demo") and "'.[eval]'" in demo
    assert tests == "bash tests/run.sh"
    assert "bash tests/run.sh" in (ROOT / ".ci" / "run").read_text()


def test_exit_code_table_matches_the_enum():
    rows = dict(re.findall(r"^\| (\d+) \| `([A-Z_]+)` \|", README, re.M))
    assert rows == {str(int(code)): code.name for code in ExitCode}
