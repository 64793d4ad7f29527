"""Credentials of the test control plane: the service-account signing key, the admin's static
token, kubeconfig files for subprocesses, and the bearer token an ApiClient carries."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes.client
import yaml


def write_service_account_key(key: Path) -> None:
    """An EC key that signs (and verifies) ServiceAccount tokens; kept if already there."""
    if key.exists():
        return
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is needed to make the service account key")
    subprocess.run(
        [openssl, "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key)],
        check=True,
        capture_output=True,
    )
    key.chmod(0o600)


def write_token_file(path: Path, token: str, user: str, group: str) -> None:
    """kube-apiserver's --token-auth-file: one static bearer token for `user` in `group`."""
    path.write_text(f'{token},{user},{user},"{group}"\n')
    path.chmod(0o600)


def write_kubeconfig(
    path: Path, *, server: str, ca_file: Path, token: str, namespace: str | None = None,
    tls_server_name: str = "", embed_ca: bool = False,
) -> Path:
    """A kubeconfig (0600) that reaches `server` with a bearer token.

    `embed_ca`: carry the CA itself (for a machine that cannot read `ca_file`);
    `tls_server_name`: the name to verify the serving certificate against, when `server` is
    an address the certificate does not name (the API server seen through a relay).
    """
    context: dict[str, Any] = {"cluster": "local", "user": "user"}
    if namespace:
        context["namespace"] = namespace
    cluster: dict[str, str] = {"server": server}
    if embed_ca:
        cluster["certificate-authority-data"] = base64.b64encode(ca_file.read_bytes()).decode()
    else:
        cluster["certificate-authority"] = str(ca_file)
    if tls_server_name:
        cluster["tls-server-name"] = tls_server_name
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": "user", "user": {"token": token}}],
        "contexts": [{"name": "local", "context": context}],
        "current-context": "local",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        yaml.safe_dump(config, out, sort_keys=False)
    return path


def token_of(api_client: kubernetes.client.ApiClient) -> str:
    """The bearer token an ApiClient authenticates with."""
    configuration = api_client.configuration
    value = (configuration.api_key or {}).get("authorization") or ""
    prefix = (configuration.api_key_prefix or {}).get("authorization")
    if prefix and not value.startswith(prefix):
        value = f"{prefix} {value}"
    if not value.startswith("Bearer "):
        raise ValueError("api_client has no bearer token")
    return value[len("Bearer ") :]
