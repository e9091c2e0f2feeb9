"""`labdeck secrets` and `engine.secrets`: a private KEY=VALUE file, names listed, values never printed."""

from __future__ import annotations

import io
import os
import stat
import sys

import pytest

from cli.main import main
from engine import secrets

VALUE = "sk-test-9f8e7d6c5b4a"


def run(capsys, monkeypatch, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_set_from_stdin_creates_a_private_file_and_ls_lists_names_only(home, capsys, monkeypatch) -> None:
    code, out, err = run(capsys, monkeypatch, "secrets", "set", "OPENAI_API_KEY", stdin=VALUE + "\n")
    assert code == 0 and VALUE not in out + err
    path = home / "secrets.env"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert secrets.load(home) == {"OPENAI_API_KEY": VALUE}  # the trailing newline of `echo` is not part of it
    run(capsys, monkeypatch, "secrets", "set", "HF_TOKEN", stdin="hf_abcdefgh")
    code, out, err = run(capsys, monkeypatch, "secrets", "ls")
    assert code == 0 and out.split() == ["HF_TOKEN", "OPENAI_API_KEY"]
    assert VALUE not in out + err and "hf_abcdefgh" not in out + err
    code, _, err = run(capsys, monkeypatch, "secrets", "set", "HF_TOKEN", stdin="hf_zzzzzzzz")
    assert code == 0 and "replaced" in err
    assert secrets.load(home)["HF_TOKEN"] == "hf_zzzzzzzz"
    code, _, _ = run(capsys, monkeypatch, "secrets", "rm", "HF_TOKEN")
    assert code == 0 and secrets.names(home) == ["OPENAI_API_KEY"]
    code, _, err = run(capsys, monkeypatch, "secrets", "rm", "HF_TOKEN")
    assert code == 2 and err.strip() == "labdeck: HF_TOKEN: no such secret"
    assert not [p for p in home.iterdir() if p.name.endswith(".tmp")]


def test_rewriting_keeps_comments_and_other_keys(home) -> None:
    home.mkdir(mode=0o700, exist_ok=True)
    path = home / "secrets.env"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"# my keys\nexport A_KEY='alpha value'\n\nB_KEY = \"beta\"\n")
    os.close(fd)
    assert secrets.load(home) == {"A_KEY": "alpha value", "B_KEY": "beta"}
    secrets.set_secret(home, "A_KEY", "new")
    assert path.read_text() == '# my keys\n\nB_KEY = "beta"\nA_KEY=new\n'
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620])
def test_a_file_others_can_read_or_write_is_refused_with_one_line(home, capsys, monkeypatch, mode: int) -> None:
    run(capsys, monkeypatch, "secrets", "set", "OPENAI_API_KEY", stdin=VALUE)
    os.chmod(home / "secrets.env", mode)
    for args, stdin in ((("secrets", "ls"), None), (("secrets", "set", "X_KEY"), "value")):
        code, out, err = run(capsys, monkeypatch, *args, stdin=stdin)
        assert code == 2 and out == ""
        assert len(err.strip().splitlines()) == 1
        assert f"mode {mode:04o}" in err and "chmod 600" in err and VALUE not in err
    with pytest.raises(secrets.SecretsError, match="readable or writable by others"):
        secrets.load(home)
    assert "X_KEY" not in (home / "secrets.env").read_text()  # nothing written to a refused file


@pytest.mark.skipif(os.getuid() != 0, reason="changing a file's owner needs root")
def test_a_file_owned_by_someone_else_is_refused(home) -> None:
    secrets.set_secret(home, "A_KEY", VALUE)
    os.chown(home / "secrets.env", 54321, -1)
    with pytest.raises(secrets.SecretsError, match="owned by uid 54321"):
        secrets.load(home)


def test_a_link_is_refused(home, tmp_path) -> None:
    home.mkdir(mode=0o700, exist_ok=True)
    target = tmp_path / "elsewhere.env"
    target.write_text("A=b\n")
    os.chmod(target, 0o600)
    (home / "secrets.env").symlink_to(target)
    with pytest.raises(secrets.SecretsError, match="not a link"):
        secrets.load(home)


def test_a_malformed_line_names_the_line_not_its_value(home) -> None:
    home.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(home / "secrets.env", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, f"GOOD=1\n{VALUE}\n".encode())
    os.close(fd)
    with pytest.raises(secrets.SecretsError) as e:
        secrets.load(home)
    assert "line 2" in str(e.value) and VALUE not in str(e.value)


@pytest.mark.parametrize("key", ["1ABC", "A-B", "LABDECK_HOME", ""])
def test_bad_names_and_values_are_refused(home, capsys, monkeypatch, key: str) -> None:
    code, _, err = run(capsys, monkeypatch, "secrets", "set", key, stdin="value") if key else \
        run(capsys, monkeypatch, "secrets", "set")
    assert code == 2 and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, monkeypatch, "secrets", "set", "GOOD", stdin="two\nlines")
    assert code == 2 and "one line" in err
    assert not (home / "secrets.env").exists()


def test_redact_masks_values_longest_first_and_leaves_short_ones() -> None:
    vals = {"A": VALUE, "B": VALUE[:8], "C": "ab"}
    text = f"key={VALUE} prefix={VALUE[:8]} tab ab"
    assert secrets.redact(text, vals) == "key=*** prefix=*** tab ab"


def test_on_a_terminal_the_value_is_asked_for_without_echo(home) -> None:
    import pty
    import subprocess
    import time
    from pathlib import Path

    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    p = subprocess.Popen([sys.executable, "-m", "cli", "--home", str(home), "secrets", "set", "TTY_KEY"],
                         stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 60
    while b"TTY_KEY: " not in out:  # the prompt
        assert time.monotonic() < deadline and p.poll() is None, out
        out += os.read(master, 1024)
    os.write(master, VALUE.encode() + b"\n")
    assert p.wait(60) == 0
    try:
        while chunk := os.read(master, 1024):
            out += chunk
    except OSError:  # the other end closed
        pass
    os.close(master)
    assert secrets.load(home) == {"TTY_KEY": VALUE}
    assert VALUE.encode() not in out and b"TTY_KEY set" in out
