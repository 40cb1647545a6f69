"""SSH keys made in-process (river_runner/sshkeys.py) for a VPS's `generate` mode, the
SSH proxy's own keys and the runner's VM keys: paramiko and OpenSSH read them, and none of
it needs an `ssh-keygen` binary (PATH emptied here: the host's may have none). The real
OpenSSH login with such keys through the proxy is tests/docker/test_vps_access.py."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import paramiko
import pytest

from river_runner import sshkeys
from river_server.ssh_proxy import load_or_create_key, public_line
from river_server.vps import _ssh_settings


@pytest.fixture
def no_ssh_keygen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    assert shutil.which("ssh-keygen") is None


def test_a_new_key_is_openssh_ed25519_that_paramiko_reads() -> None:
    private, public = sshkeys.new_key("river-vps-7")
    assert private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    loaded = paramiko.Ed25519Key.from_private_key(io.StringIO(private))
    assert public == f"ssh-ed25519 {loaded.get_base64()} river-vps-7"
    assert sshkeys.public_line(private, "x") == f"ssh-ed25519 {loaded.get_base64()} x"
    assert sshkeys.new_key("river-vps-7")[1] != public  # a fresh key each time


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="no OpenSSH tools to check with")
def test_openssh_reads_the_private_key_and_the_public_line(tmp_path: Path) -> None:
    keygen = shutil.which("ssh-keygen")
    public = sshkeys.write_new_key(tmp_path / "k", "c")
    derived = subprocess.run(
        [str(keygen), "-y", "-f", str(tmp_path / "k")], capture_output=True, text=True, check=True
    )
    assert derived.stdout.split()[:2] == public.split()[:2]
    (tmp_path / "k.pub").write_text(public + "\n")
    finger = subprocess.run(
        [str(keygen), "-l", "-f", str(tmp_path / "k.pub")], capture_output=True, text=True
    )
    assert finger.returncode == 0 and "(ED25519)" in finger.stdout, finger.stderr


def test_generate_mode_needs_no_ssh_keygen(no_ssh_keygen: None) -> None:
    settings, private = _ssh_settings({"ssh": "generate"}, 42)
    assert private is not None
    loaded = paramiko.Ed25519Key.from_private_key(io.StringIO(private))
    assert settings == {"ssh": "generate", "public_key": public_line(loaded, "river-vps-42")}


def test_proxy_keys_are_ed25519_0600_without_ssh_keygen_and_kept(
    tmp_path: Path, no_ssh_keygen: None
) -> None:
    path = tmp_path / "keys" / "ssh_proxy_host_key"
    key = load_or_create_key(path)
    assert isinstance(key, paramiko.Ed25519Key)  # not the RSA fallback of old
    assert path.stat().st_mode & 0o777 == 0o600
    assert paramiko.Ed25519Key.from_private_key_file(str(path)).get_base64() == key.get_base64()
    assert load_or_create_key(path).get_base64() == key.get_base64()  # reused, not remade


def test_an_older_hosts_rsa_proxy_key_is_reused(tmp_path: Path) -> None:
    path = tmp_path / "ssh_proxy_client_key"
    old = paramiko.RSAKey.generate(2048)
    old.write_private_key_file(str(path))
    again = load_or_create_key(path)
    assert isinstance(again, paramiko.RSAKey) and again.get_base64() == old.get_base64()
