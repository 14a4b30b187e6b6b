"""The suite runs on defaults whatever the caller's shell holds (issue 19, hygiene)."""

from __future__ import annotations

import os
import subprocess
import sys

from voicebot.config import PROJECT_ROOT, Settings


def test_no_voicebot_variable_from_the_callers_environment_reaches_a_test():
    assert [
        n for n in os.environ if n.startswith("VOICEBOT_") and n != "VOICEBOT_SOAK_MINUTES"
    ] == []
    assert Settings().port == Settings.model_fields["port"].default


def test_a_caller_with_voicebot_variables_set_still_gets_a_clean_run(tmp_path):
    """Runs the first test above in a pytest whose parent environment sets a bad port."""
    env = {**os.environ, "VOICEBOT_PORT": "1", "VOICEBOT_DATA_DIR": str(tmp_path / "nowhere")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"{__file__}::test_no_voicebot_variable_from_the_callers_environment_reaches_a_test"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:]
    assert "1 passed" in done.stdout
