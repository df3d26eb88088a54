"""The `embedtune` command (`embedtune.tools.cli:main`): `embedtune remote dagshub` in a small
git + DVC repository, its one-line errors, and the installed console script."""

from __future__ import annotations

import io
import secrets
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from embedtune.tools import cli
from tests.helpers import ROOT, cli_env
from tests.helpers.remote import git_remote_url, make_small_repo

TOKEN = f"FAKE-dagshub-token-{secrets.token_hex(8)}"


@pytest.fixture
def small_repo(tmp_path, monkeypatch) -> Path:
    """A git repository with a bare `.dvc/`; the cwd for the test, with no terminal."""
    repo = make_small_repo(tmp_path / "repo")
    monkeypatch.chdir(repo)
    monkeypatch.setattr(sys, "stdin", io.StringIO())  # not a terminal: never prompt
    monkeypatch.delenv("DAGSHUB_TOKEN", raising=False)
    return repo


def one_line_error(capsys) -> str:
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1, err
    return err.strip()


def test_command_sets_both_remotes_and_keeps_token_local(small_repo, monkeypatch, capsys):
    monkeypatch.setenv("DAGSHUB_TOKEN", TOKEN)
    assert cli.main(["remote", "dagshub", "alice/r"]) == 0
    out, err = capsys.readouterr()
    assert TOKEN not in out + err
    assert out.startswith("git remote origin: https://dagshub.com/alice/r.git\n")
    assert "git push -u origin main" in out
    assert git_remote_url(small_repo) == "https://dagshub.com/alice/r.git"

    shared = (small_repo / ".dvc/config").read_text()
    assert TOKEN not in shared
    assert "endpointurl = https://dagshub.com/alice/r.s3" in shared
    assert "verify = true" in shared
    assert "remote = origin" in shared
    local = small_repo / ".dvc/config.local"
    assert local.read_text().count(TOKEN) == 2
    assert stat.S_IMODE(local.stat().st_mode) == 0o600

    from dvc.config import Config

    merged = Config(str(small_repo / ".dvc"))
    assert merged["core"]["remote"] == "origin"
    origin = merged["remote"]["origin"]
    assert (origin["url"], origin["verify"], origin["access_key_id"]) == ("s3://dvc", True, TOKEN)
    assert origin["endpointurl"] == "https://dagshub.com/alice/r.s3"


def test_command_repoints_remotes_and_repairs_a_stale_local_section(small_repo, monkeypatch):
    subprocess.run(["git", "remote", "add", "origin", "/old/place.git"], check=True)
    # A local section with no url: every dvc command fails on it until it is repaired.
    (small_repo / ".dvc/config.local").write_text("['remote \"origin\"']\n    access_key_id = x\n")
    monkeypatch.setenv("DAGSHUB_TOKEN", TOKEN)
    cli.main(["remote", "dagshub", "bob/r2", "--host", "http://127.0.0.1:1"])
    assert git_remote_url(small_repo) == "http://127.0.0.1:1/bob/r2.git"
    local = (small_repo / ".dvc/config.local").read_text()
    assert "url = s3://dvc" in local
    assert "endpointurl = http://127.0.0.1:1/bob/r2.s3" in local
    assert "access_key_id = x" not in local


def test_command_with_git_and_endpoint_overrides(small_repo, monkeypatch, capsys):
    monkeypatch.setenv("DAGSHUB_TOKEN", TOKEN)
    args = ["--git-url", "/srv/r.git", "--endpoint-url", "http://127.0.0.1:9/"]
    assert cli.main(["remote", "dagshub", "a/r", *args]) == 0
    assert git_remote_url(small_repo) == "/srv/r.git"
    assert "endpointurl = http://127.0.0.1:9\n" in (small_repo / ".dvc/config").read_text()
    assert "s3://dvc at http://127.0.0.1:9, verify true" in capsys.readouterr().out


def test_bad_repo_name_exits_2_with_one_line(small_repo, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["remote", "dagshub", "not-a-repo"])
    assert exit_.value.code == 2
    assert one_line_error(capsys).startswith("embedtune remote dagshub: error: expected OWNER/REPO")


def test_bad_url_is_refused_before_asking_for_a_token(small_repo, monkeypatch, capsys):
    def no_prompt(text):
        raise AssertionError("asked for a token")

    monkeypatch.setattr("getpass.getpass", no_prompt)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["remote", "dagshub", "a/r", "--host", "dagshub.com"])
    assert exit_.value.code == 2
    assert "--host must be an http:// or https:// URL" in one_line_error(capsys)


def test_token_prompted_in_a_terminal(small_repo, monkeypatch, capsys):
    asked = []
    monkeypatch.setattr("getpass.getpass", lambda text: asked.append(text) or TOKEN)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    assert cli.main(["remote", "dagshub", "alice/r"]) == 0
    assert asked == ["DagsHub token (input hidden): "]
    assert (small_repo / ".dvc/config.local").read_text().count(TOKEN) == 2
    out, err = capsys.readouterr()
    assert TOKEN not in out + err


def test_no_token_and_no_terminal_exits_2_and_changes_nothing(small_repo, capsys):
    config_before = (small_repo / ".dvc/config").read_text()
    with pytest.raises(SystemExit) as exit_:
        cli.main(["remote", "dagshub", "alice/r"])
    assert exit_.value.code == 2
    assert "DAGSHUB_TOKEN" in one_line_error(capsys)
    assert (small_repo / ".dvc/config").read_text() == config_before
    assert not (small_repo / ".dvc/config.local").exists()
    assert git_remote_url(small_repo) == ""


def test_refuses_when_config_local_is_not_ignored(small_repo, monkeypatch, capsys):
    (small_repo / ".dvc/.gitignore").write_text("/tmp\n/cache\n")
    monkeypatch.setenv("DAGSHUB_TOKEN", TOKEN)
    with pytest.raises(SystemExit):
        cli.main(["remote", "dagshub", "alice/r"])
    assert "not ignored by git" in one_line_error(capsys)
    assert not (small_repo / ".dvc/config.local").exists()


def test_outside_a_dvc_repo(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGSHUB_TOKEN", TOKEN)
    with pytest.raises(SystemExit):
        cli.main(["remote", "dagshub", "alice/r"])
    assert "not inside a DVC repository" in one_line_error(capsys)


@pytest.mark.parametrize(
    "argv", [[], ["remote"], ["remote", "github", "a/r"], ["remote", "dagshub"]]
)
def test_incomplete_command_is_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("usage: embedtune")


def test_help_describes_the_token(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["remote", "dagshub", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "OWNER/REPO" in out
    assert "$DAGSHUB_TOKEN" in out
    assert ".dvc/config.local only" in out
    assert "default: https://dagshub.com" in out


def test_console_script(tmp_path):
    """The installed `embedtune` command runs embedtune.tools.cli:main."""
    exe = shutil.which("embedtune", path=str(Path(sys.executable).parent))
    assert exe is not None, "the project's console script is not installed (pip install -e .)"
    env = {k: v for k, v in cli_env(ROOT / "src").items() if k != "DAGSHUB_TOKEN"}
    proc = subprocess.run(
        [exe, "remote", "dagshub", "alice/r"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("embedtune remote dagshub: error: no DagsHub token: set DAG")
    assert len(proc.stderr.splitlines()) == 1
    proc = subprocess.run([exe, "--help"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: embedtune")
    assert "remote" in proc.stdout


def test_entry_point_is_declared():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"embedtune": "embedtune.tools.cli:main"}
