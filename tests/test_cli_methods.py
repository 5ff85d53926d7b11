"""`privsynth methods` and CLI errors on a machine without an optional extra (torch blocked from importing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# Run the real CLI in a fresh interpreter where torch and opacus cannot be imported, as on an install without the
# deep extra; this venv has them, so they are blocked by an import hook rather than uninstalled.
_WITHOUT_DEEP = """
import sys

class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "opacus"):
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
from privsynth.cli import main
sys.argv = ["privsynth", *sys.argv[1:]]
main()
"""


def _without_deep(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT_DEEP, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"COLUMNS": "200", "PATH": "", "HOME": str(cwd)},
        timeout=300,
    )


def test_methods_lists_the_methods_whose_extra_is_missing_with_the_install_command(tmp_path: Path) -> None:
    result = _without_deep("methods", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") >= 3}
    assert {"copula", "deep", "dp-deep"} <= set(rows)
    for method in ("deep", "dp-deep"):
        assert "pip install 'privsynth[deep]'" in rows[method]
    assert "not installed" in rows["deep"] and "not installed" not in rows["copula"]


def test_cli_errors_keep_square_brackets(tmp_path: Path) -> None:
    result = _without_deep("generate", "nassCDS", "--method", "deep", "--rows", "10", "-o", "out.csv", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "error:" in result.stderr
    assert "pip install 'privsynth[deep]'" in " ".join(result.stderr.split())
    assert not (tmp_path / "out.csv").exists()


def test_rebalance_without_the_deep_extra_names_the_methods_and_the_install(tmp_path: Path) -> None:
    args = ("generate", "nassCDS", "--method", "copula", "--rebalance", "dead", "--rows", "10", "-o", "out.csv")
    result = _without_deep(*args, cwd=tmp_path)
    message = " ".join(result.stderr.split())
    assert result.returncode == 2, result.stderr
    assert "()" not in message
    assert "(deep and dp-deep, which need pip install 'privsynth[deep]')" in message
