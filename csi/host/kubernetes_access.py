"""Kubernetes API credentials: in-cluster when running in a pod, else a kubeconfig file."""

from __future__ import annotations

from kubernetes import client, config


def api_client(kubeconfig: str = "") -> client.ApiClient:
    if kubeconfig:
        return config.new_client_from_config(config_file=kubeconfig)
    config.load_incluster_config()
    return client.ApiClient()
