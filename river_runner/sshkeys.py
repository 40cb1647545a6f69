"""Ed25519 SSH keys in OpenSSH format, made in-process with `cryptography`.

Why one helper: the runner's key into each VM (river_runner/vm_ssh.py), a VPS's generated
key (river_server/vps.py) and the host's SSH proxy keys (river_server/ssh_proxy.py) are
the same kind of key; making them here, with the library paramiko already brings, means
no `ssh-keygen` binary on the host or the runner and one format everywhere: the private
key as `-----BEGIN OPENSSH PRIVATE KEY-----` (what ssh-keygen writes, and what paramiko's
`Ed25519Key.from_private_key_file` and OpenSSH's `ssh -i` read), the public one as an
`authorized_keys` line. The host may import it (a shared module of the runner's); it needs
`cryptography`, which the `host` and `vm` extras bring through paramiko.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def new_key(comment: str) -> tuple[str, str]:
    """(private, public): a new key's OpenSSH private key text (unencrypted) and its public
    line `ssh-ed25519 AAAA... comment`."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.OpenSSH, ser.NoEncryption())
    return private.decode(), _public_line(key, comment)


def public_line(private: str | bytes, comment: str) -> str:
    """The `authorized_keys` line of an OpenSSH private key (unencrypted)."""
    data = private.encode() if isinstance(private, str) else private
    return _public_line(ser.load_ssh_private_key(data, password=None), comment)


def write_new_key(path: Path, comment: str) -> str:
    """Make a key at `path`, created 0600 and never over an existing file (O_EXCL: a key
    already there is kept by the caller, not replaced); its public line."""
    private, public = new_key(comment)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(private)
    return public


def _public_line(key: ser.SSHPrivateKeyTypes, comment: str) -> str:
    raw = key.public_key().public_bytes(ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH)
    return f"{raw.decode()} {comment}".rstrip()
