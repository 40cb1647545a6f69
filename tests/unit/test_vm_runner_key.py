"""The runner's key into each VM and the cloud-init instance id it boots under
(river_runner/vm_ssh.py, VmBackend._runner_key): real files, real keys, no VM."""

from __future__ import annotations

from pathlib import Path

import paramiko
import pytest

from river_runner import vm_ssh
from river_runner.backends.vm import VmBackend, mac_address, seed_files

VPS = "254788367315632128"


def test_a_new_vm_gets_a_private_key_and_its_own_instance_id(tmp_path: Path) -> None:
    public, instance = VmBackend._runner_key(tmp_path, VPS)
    key = tmp_path / vm_ssh.KEY_FILE
    assert key.stat().st_mode & 0o777 == 0o600
    loaded = paramiko.Ed25519Key.from_private_key_file(str(key))
    assert public.split()[:2] == [loaded.get_name(), loaded.get_base64()]
    assert instance == f"river-{VPS}"
    assert VmBackend._runner_key(tmp_path, VPS) == (public, instance)  # kept, not remade
    user_data = seed_files("h", "ssh-ed25519 AAAAowner o\n" + public, instance, mac_address(VPS))
    assert f"  - {public}" in user_data["user-data"] and "AAAAowner" in user_data["user-data"]


def test_a_vm_from_before_the_key_gets_it_under_a_new_instance_id_once(tmp_path: Path) -> None:
    (tmp_path / "disk.qcow2").write_bytes(b"")  # its disk exists, its key does not
    assert not vm_ssh.has_key(tmp_path)
    public, instance = VmBackend._runner_key(tmp_path, VPS)
    assert vm_ssh.has_key(tmp_path) and public.startswith("ssh-ed25519 ")
    assert instance == f"river-{VPS}-runner-key"  # cloud-init applies the seed's keys again
    assert VmBackend._runner_key(tmp_path, VPS) == (public, instance)  # and later boots keep it


def test_a_vm_without_its_key_is_refused_with_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(vm_ssh.VmExecRefused, match="predates terminal support.*restart it"):
        vm_ssh.connect(tmp_path, 1)
