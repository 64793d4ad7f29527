"""The harness: the kube_cluster fixture is a real control plane as our tests use it.

RBAC is enforced, its apply serves a CRD before the objects that follow it, the TokenRequest
API issues tokens that authenticate, a ServiceAccount's kubeconfig is that account, and the
controller manager runs controllers. What Kubernetes itself does is not tested here.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.support.kube import SERVICE_ACCOUNT_ISSUER, LocalKubeCluster

pytestmark = pytest.mark.kube

T = TypeVar("T")

GROUP = "test.lustre-csi.io"
WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"widgets.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {"size": {"type": "integer"}},
                            },
                        },
                    }
                },
            }
        ],
    },
}


def eventually(fn: Callable[[], T], timeout: float = 15.0) -> T:
    """fn's result once it stops raising (RBAC and discovery follow writes within moments)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except (ApiException, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def forbidden(call: Callable[[], object]) -> ApiException:
    with pytest.raises(ApiException) as info:
        call()
    assert info.value.status == 403, info.value
    return info.value


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


def test_harness_enforces_rbac_on_an_unbound_service_account_until_bound(
    kube_cluster: LocalKubeCluster,
) -> None:
    namespace, name = "rbac-test", "pod-lister"
    core = client.CoreV1Api(kube_cluster.service_account_client(namespace, name))

    err = forbidden(lambda: core.list_namespaced_pod(namespace))
    assert f"system:serviceaccount:{namespace}:{name}" in str(err.body)
    forbidden(lambda: core.list_pod_for_all_namespaces())

    kube_cluster.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "test-pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "test-pod-reader"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "test-pod-reader",
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    )

    pods = eventually(lambda: core.list_namespaced_pod(namespace))
    assert pods.items == []
    core.list_pod_for_all_namespaces()
    # Only what the ClusterRole grants: no secrets, no writes.
    forbidden(lambda: core.list_namespaced_secret(namespace))
    forbidden(
        lambda: core.create_namespaced_config_map(
            namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="nope"))
        )
    )


def test_harness_issues_service_account_tokens_that_authenticate(
    kube_cluster: LocalKubeCluster,
) -> None:
    namespace, name = "token-test", "robot"
    token = kube_cluster.service_account_token(namespace, name, expiration_seconds=600)

    claims = jwt_claims(token)
    assert claims["iss"] == SERVICE_ACCOUNT_ISSUER
    assert claims["sub"] == f"system:serviceaccount:{namespace}:{name}"
    assert 0 < claims["exp"] - claims["iat"] <= 600

    review = client.AuthenticationV1Api(kube_cluster.admin_client()).create_token_review(
        client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token))
    )
    assert review.status is not None and review.status.user is not None
    assert review.status.authenticated is True
    assert review.status.user.username == f"system:serviceaccount:{namespace}:{name}"

    # A client built from the token is that identity.
    whoami = client.AuthenticationV1Api(kube_cluster.client_for_token(token))
    self_review = whoami.create_self_subject_review(client.V1SelfSubjectReview())
    assert self_review.status is not None and self_review.status.user_info is not None
    assert self_review.status.user_info.username == f"system:serviceaccount:{namespace}:{name}"

    # A token for another audience is not accepted by the apiserver itself.
    other = kube_cluster.service_account_token(namespace, name, audiences=["lustre-csi-test"])
    assert jwt_claims(other)["aud"] == ["lustre-csi-test"]
    with pytest.raises(ApiException) as info:
        client.CoreV1Api(kube_cluster.client_for_token(other)).list_namespaced_pod(namespace)
    assert info.value.status == 401

    # A garbage token is rejected.
    with pytest.raises(ApiException) as info:
        client.CoreV1Api(kube_cluster.client_for_token("not-a-token")).list_namespace()
    assert info.value.status == 401


def test_harness_apply_serves_a_crd_before_the_objects_that_follow_it(
    kube_cluster: LocalKubeCluster,
) -> None:
    namespace = "crd-test"
    kube_cluster.ensure_namespace(namespace)
    # The CRD and one of its objects in one call: apply waits for the CRD to be established.
    applied = kube_cluster.apply(
        WIDGET_CRD,
        {
            "apiVersion": f"{GROUP}/v1",
            "kind": "Widget",
            "metadata": {"name": "first", "namespace": namespace},
            "spec": {"size": 3},
        },
    )
    assert applied[1].spec.size == 3
    objects = client.CustomObjectsApi(kube_cluster.admin_client())
    stored: dict[str, Any] = objects.get_namespaced_custom_object(  # type: ignore[assignment]
        GROUP, "v1", namespace, "widgets", "first"
    )
    assert stored["spec"] == {"size": 3}


def test_harness_kubeconfig_of_a_service_account_is_that_account_in_kubectl(
    kube_cluster: LocalKubeCluster, tmp_path: Path
) -> None:
    namespace, name = "kubectl-test", "viewer"
    sa = kube_cluster.service_account_client(namespace, name)
    kubeconfig = kube_cluster.kubeconfig_for(sa, tmp_path / "kubeconfig", namespace=namespace)

    whoami = kube_cluster.kubectl(
        "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}", kubeconfig=kubeconfig
    )
    assert whoami.stdout == f"system:serviceaccount:{namespace}:{name}"

    denied = kube_cluster.kubectl("get", "pods", kubeconfig=kubeconfig, check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()

    admin = kube_cluster.kubectl("get", "namespace", namespace, "-o", "name")
    assert admin.stdout.strip() == f"namespace/{namespace}"


def test_harness_controller_manager_runs_controllers(
    kube_cluster_with_controllers: LocalKubeCluster,
) -> None:
    cluster = kube_cluster_with_controllers
    namespace = "kcm-test"
    cluster.ensure_namespace(namespace)
    core = client.CoreV1Api(cluster.admin_client())
    # The root-ca-cert-publisher controller fills every namespace with kube-root-ca.crt.
    ca = eventually(lambda: core.read_namespaced_config_map("kube-root-ca.crt", namespace), 60)
    assert ca.data is not None and "BEGIN CERTIFICATE" in ca.data["ca.crt"]
    # The namespace controller finishes deletions.
    core.delete_namespace(namespace)

    def gone() -> None:
        try:
            ns = core.read_namespace(namespace)
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        raise AssertionError(f"namespace still there: {ns.status and ns.status.phase}")

    eventually(gone, 60)
