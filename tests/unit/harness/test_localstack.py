"""The local stack's context manager: a SIGTERM still runs the code that stops it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from harness.localstack import stopping_on_sigterm

    marker = Path(sys.argv[1])
    with stopping_on_sigterm():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            signal.pause()  # not reached: the handler raised already
        finally:
            marker.write_text("stopped")
    """
)


def killed(script: str, marker: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-c", script, str(marker)],
        cwd=Path(__file__).resolve().parents[3],
        capture_output=True,
        timeout=30,
        check=False,
    )


def test_sigterm_unwinds_the_block_so_the_stack_is_stopped(tmp_path: Path) -> None:
    done = killed(SCRIPT, tmp_path / "marker")
    assert done.returncode == 143, done.stderr
    assert (tmp_path / "marker").read_text() == "stopped"


def test_outside_the_block_sigterm_keeps_its_default(tmp_path: Path) -> None:
    script = SCRIPT.replace("with stopping_on_sigterm():", "if True:")
    assert script != SCRIPT
    done = killed(script, tmp_path / "marker")
    assert done.returncode == -15  # killed by the signal: no finally ran
    assert not (tmp_path / "marker").exists()
