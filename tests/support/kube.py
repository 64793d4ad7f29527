"""A real, local Kubernetes control plane for tests: etcd + kube-apiserver (+ optionally
kube-controller-manager) as subprocesses on loopback, built by hack/install-go-tools.sh.

RBAC is enforced (``--authorization-mode=Node,RBAC``). The admin is a static token in
group ``system:masters``; every other identity is a ServiceAccount whose token comes from the
TokenRequest API, so code under test runs with exactly the permissions RBAC grants it.

    with LocalKubeCluster() as cluster:
        admin = cluster.admin_client()
        cluster.apply("deploy/rbac.yaml")
        sa = cluster.service_account_client("lustre-csi", "lustre-csi-controller")

Each component logs to ``<work_dir>/<component>.log``; a component that fails to start
raises ``KubeClusterError`` carrying the tail of its log.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import kubernetes.client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.resource import ResourceInstance

from tests.support.kube_apply import Manifest, apply_manifests
from tests.support.kube_credentials import (
    token_of,
    write_kubeconfig,
    write_service_account_key,
    write_token_file,
)
from tests.support.processes import Component, ComponentFailed, die_with_parent, free_port, tail

REPO_ROOT = Path(__file__).resolve().parents[2]
# Where hack/install-go-tools.sh puts the binaries; LUSTRE_CSI_BIN_DIR overrides it.
DEFAULT_BIN_DIR = Path(os.environ.get("LUSTRE_CSI_BIN_DIR") or REPO_ROOT / ".cache" / "bin")
SETUP_HINT = "run hack/setup.sh (or hack/install-go-tools.sh) to build them"

ADMIN_USER = "lustre-csi-test-admin"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/24"  # allocated from, never routed
FIELD_MANAGER = "lustre-csi-tests"



class KubeClusterError(ComponentFailed):
    """The local control plane could not be started or did not answer as expected."""


def required_binaries(with_controller_manager: bool = False) -> list[str]:
    names = ["etcd", "kube-apiserver"]
    if with_controller_manager:
        names.append("kube-controller-manager")
    return names


def missing_binaries(
    bin_dir: Path = DEFAULT_BIN_DIR, with_controller_manager: bool = False
) -> list[Path]:
    """Paths of the binaries LocalKubeCluster needs that are not there (or not executable)."""
    paths = [bin_dir / name for name in required_binaries(with_controller_manager)]
    return [p for p in paths if not (p.is_file() and os.access(p, os.X_OK))]


class LocalKubeCluster:
    """etcd + kube-apiserver (+ kube-controller-manager) on loopback, in a temp work dir.

    Construct, then ``start()`` (or use as a context manager); ``stop()`` ends the processes
    and removes the work dir (unless ``keep_work_dir``).
    """

    def __init__(
        self,
        *,
        bin_dir: Path | None = None,
        work_dir: Path | None = None,
        with_controller_manager: bool = False,
        keep_work_dir: bool = False,
        startup_timeout: float = 60.0,
        extra_apiserver_args: Sequence[str] = (),
        extra_controller_manager_args: Sequence[str] = (),
        verbosity: int = 1,
    ) -> None:
        self.bin_dir = bin_dir or DEFAULT_BIN_DIR
        self.with_controller_manager = with_controller_manager
        self.keep_work_dir = keep_work_dir or work_dir is not None
        self.startup_timeout = startup_timeout
        self.extra_apiserver_args = list(extra_apiserver_args)
        self.extra_controller_manager_args = list(extra_controller_manager_args)
        self.verbosity = verbosity
        self._requested_work_dir = work_dir
        self._work_dir: Path | None = None
        self._components: list[Component] = []
        self._clients: list[kubernetes.client.ApiClient] = []
        self._dynamic: DynamicClient | None = None
        self._admin: kubernetes.client.ApiClient | None = None
        self.admin_token = secrets.token_urlsafe(32)
        self.apiserver_port = 0
        self.etcd_port = 0
        self.startup_seconds = 0.0

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> LocalKubeCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def work_dir(self) -> Path:
        if self._work_dir is None:
            raise KubeClusterError("cluster not started")
        return self._work_dir

    @property
    def server(self) -> str:
        """The apiserver URL, e.g. https://127.0.0.1:41234."""
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def ca_file(self) -> Path:
        """PEM bundle that verifies the apiserver's serving certificate."""
        return self.work_dir / "apiserver-certs" / "apiserver.crt"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.work_dir / "admin.kubeconfig"

    @property
    def service_account_key_file(self) -> Path:
        return self.work_dir / "service-account.key"

    def log_path(self, component: str) -> Path:
        """Log file of "etcd", "kube-apiserver" or "kube-controller-manager"."""
        return self.work_dir / f"{component}.log"

    def start(self) -> LocalKubeCluster:
        missing = missing_binaries(self.bin_dir, self.with_controller_manager)
        if missing:
            names = ", ".join(str(p) for p in missing)
            raise KubeClusterError(f"missing Kubernetes test binaries: {names}; {SETUP_HINT}")
        began = time.monotonic()
        if self._requested_work_dir is not None:
            self._work_dir = self._requested_work_dir
            self._work_dir.mkdir(parents=True, exist_ok=True)
        else:
            self._work_dir = Path(tempfile.mkdtemp(prefix="lustre-csi-kube-"))
        try:
            self._write_credentials()
            # Ports are picked free but could be taken before the process binds: retry then.
            for attempt in range(3):
                try:
                    self._start_etcd()
                    self._start_apiserver()
                    break
                except ComponentFailed as exc:
                    self._stop_components()
                    if attempt == 2 or "address already in use" not in str(exc):
                        raise
            self._write_admin_kubeconfig()
            if self.with_controller_manager:
                self._start_controller_manager()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Stop every component (newest first), close clients, remove the work dir."""
        for client in self._clients:
            with contextlib.suppress(Exception):
                client.close()
        self._clients.clear()
        self._dynamic = None
        self._admin = None
        self._stop_components()
        if self._work_dir is not None and not self.keep_work_dir:
            shutil.rmtree(self._work_dir, ignore_errors=True)
        self._work_dir = None

    def _stop_components(self) -> None:
        for component in reversed(self._components):
            component.stop()
        self._components.clear()

    # -- process start ---------------------------------------------------------------------------

    def _spawn(
        self, name: str, args: list[str], env: dict[str, str] | None = None
    ) -> Component:
        """Start a component logging to <work_dir>/<name>.log; stopped with the cluster."""
        log_path = self.log_path(name)
        with log_path.open("a") as log:
            log.write(f"$ {' '.join(args)}\n")
            log.flush()
            process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.work_dir,
                env=env,
                preexec_fn=die_with_parent,
            )
        component = Component(name, process, log_path)
        self._components.append(component)
        return component

    def _write_credentials(self) -> None:
        write_service_account_key(self.service_account_key_file)
        write_token_file(self.work_dir / "tokens.csv", self.admin_token, ADMIN_USER,
                         "system:masters")

    def _start_etcd(self) -> None:
        self.etcd_port = free_port()
        peer_port = free_port()
        client_url = f"http://127.0.0.1:{self.etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        etcd = self._spawn(
            "etcd",
            [
                str(self.bin_dir / "etcd"),
                "--name=default",
                f"--data-dir={self.work_dir / 'etcd-data'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync=true",  # test data: speed over durability
                "--log-level=warn",
            ],
        )
        self._wait_http(etcd, f"{client_url}/health", None)

    def _start_apiserver(self) -> None:
        self.apiserver_port = free_port()
        cert_dir = self.work_dir / "apiserver-certs"
        apiserver = self._spawn(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                # No "kubernetes" Service endpoints: a loopback address is not allowed in them.
                "--endpoint-reconciler-type=none",
                f"--secure-port={self.apiserver_port}",
                f"--cert-dir={cert_dir}",  # self-signed CA + serving cert, made at start
                "--authorization-mode=Node,RBAC",
                f"--token-auth-file={self.work_dir / 'tokens.csv'}",
                "--anonymous-auth=false",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={self.service_account_key_file}",
                f"--service-account-signing-key-file={self.service_account_key_file}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--allow-privileged=true",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                f"--v={self.verbosity}",
                *self.extra_apiserver_args,
            ],
        )
        self._wait_http(apiserver, f"{self.server}/readyz", self.admin_token)

    def _start_controller_manager(self) -> None:
        port = free_port()
        manager = self._spawn(
            "kube-controller-manager",
            [
                str(self.bin_dir / "kube-controller-manager"),
                f"--kubeconfig={self.admin_kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.work_dir / 'controller-manager-certs'}",
                "--leader-elect=false",
                f"--service-account-private-key-file={self.service_account_key_file}",
                f"--root-ca-file={self.ca_file}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--profiling=false",
                f"--v={self.verbosity}",
                *self.extra_controller_manager_args,
            ],
        )
        self._wait_http(manager, f"https://127.0.0.1:{port}/healthz", None, verify=False)

    def _wait_http(
        self, component: Component, url: str, token: str | None, *, verify: bool = True
    ) -> None:
        deadline = time.monotonic() + self.startup_timeout
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        last_error = "no answer yet"
        while True:
            component.check_running()
            context: ssl.SSLContext | None = None
            if url.startswith("https:"):
                context = self._ssl_context(verify)
            if context is not None or url.startswith("http:"):
                request = urllib.request.Request(url, headers=headers)
                try:
                    with urllib.request.urlopen(request, timeout=5, context=context) as resp:
                        if resp.status == 200:
                            return
                        last_error = f"HTTP {resp.status}"
                except urllib.error.HTTPError as exc:
                    last_error = f"HTTP {exc.code}: {exc.read()[:2000].decode(errors='replace')}"
                except (OSError, ssl.SSLError) as exc:
                    last_error = str(exc)
            if time.monotonic() > deadline:
                raise KubeClusterError(
                    f"{component.name} not ready after {self.startup_timeout:.0f}s "
                    f"({url}: {last_error}); last lines of {component.log_path}:\n"
                    f"{tail(component.log_path)}"
                )
            time.sleep(0.1)

    def _ssl_context(self, verify: bool) -> ssl.SSLContext | None:
        if not verify:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        if not self.ca_file.exists():
            return None  # the apiserver has not written its certificates yet
        try:
            return ssl.create_default_context(cafile=str(self.ca_file))
        except (OSError, ssl.SSLError):
            return None  # half-written

    # -- clients ----------------------------------------------------------------------------

    def client_for_token(self, token: str) -> kubernetes.client.ApiClient:
        """An ApiClient authenticated by a bearer token (closed by ``stop()``)."""
        configuration = kubernetes.client.Configuration()
        configuration.host = self.server
        configuration.ssl_ca_cert = str(self.ca_file)
        configuration.verify_ssl = True
        configuration.api_key = {"authorization": f"Bearer {token}"}
        client = kubernetes.client.ApiClient(configuration)
        self._clients.append(client)
        return client

    def admin_client(self) -> kubernetes.client.ApiClient:
        """An ApiClient in group system:masters (RBAC does not restrict it)."""
        return self.client_for_token(self.admin_token)

    def _admin_api(self) -> kubernetes.client.ApiClient:
        """The admin client the helpers share."""
        if self._admin is None:
            self._admin = self.admin_client()
        return self._admin

    def dynamic_client(
        self, api_client: kubernetes.client.ApiClient | None = None
    ) -> DynamicClient:
        """A DynamicClient (admin unless api_client is given), discovery cached in work_dir."""
        if api_client is None:
            if self._dynamic is None:
                self._dynamic = self._new_dynamic(self._admin_api())
            return self._dynamic
        return self._new_dynamic(api_client)

    def _new_dynamic(self, api_client: kubernetes.client.ApiClient) -> DynamicClient:
        cache = self.work_dir / f"discovery-{secrets.token_hex(4)}.json"
        return DynamicClient(api_client, cache_file=str(cache))

    def ensure_namespace(self, namespace: str) -> None:
        core = kubernetes.client.CoreV1Api(self._admin_api())
        body = kubernetes.client.V1Namespace(
            metadata=kubernetes.client.V1ObjectMeta(name=namespace)
        )
        try:
            core.create_namespace(body)
        except ApiException as exc:
            if exc.status != 409:
                raise

    def ensure_service_account(self, namespace: str, name: str) -> None:
        """Create the namespace and the ServiceAccount if they do not exist."""
        self.ensure_namespace(namespace)
        core = kubernetes.client.CoreV1Api(self._admin_api())
        body = kubernetes.client.V1ServiceAccount(
            metadata=kubernetes.client.V1ObjectMeta(name=name, namespace=namespace)
        )
        try:
            core.create_namespaced_service_account(namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise

    def service_account_token(
        self,
        namespace: str,
        name: str,
        *,
        audiences: Sequence[str] | None = None,
        expiration_seconds: int = 3600,
        bound_pod: str | None = None,
    ) -> str:
        """A token for the ServiceAccount (created if missing) from the TokenRequest API.

        With ``bound_pod`` the token is bound to that pod (in ``namespace``), as kubelet's
        projected tokens are: the API server then puts the pod's node in the token's user
        info (``authentication.kubernetes.io/node-name``).
        """
        self.ensure_service_account(namespace, name)
        core = kubernetes.client.CoreV1Api(self._admin_api())
        bound = None
        if bound_pod is not None:
            pod = core.read_namespaced_pod(bound_pod, namespace)
            bound = kubernetes.client.V1BoundObjectReference(
                api_version="v1", kind="Pod", name=bound_pod, uid=pod.metadata.uid
            )
        request = kubernetes.client.AuthenticationV1TokenRequest(
            spec=kubernetes.client.V1TokenRequestSpec(
                audiences=list(audiences) if audiences is not None else [],
                expiration_seconds=expiration_seconds,
                bound_object_ref=bound,
            )
        )
        response = core.create_namespaced_service_account_token(name, namespace, request)
        token = response.status.token if response.status else None
        if not token:
            raise KubeClusterError(f"TokenRequest for {namespace}/{name} returned no token")
        return str(token)

    def service_account_client(self, namespace: str, name: str) -> kubernetes.client.ApiClient:
        """An ApiClient authenticated as system:serviceaccount:NAMESPACE:NAME."""
        return self.client_for_token(self.service_account_token(namespace, name))

    def kubeconfig_for(
        self,
        credentials: kubernetes.client.ApiClient | str,
        path: Path | None = None,
        *,
        namespace: str | None = None,
    ) -> Path:
        """Write a kubeconfig (for a subprocess) authenticating with a client's or a raw token."""
        token = credentials if isinstance(credentials, str) else token_of(credentials)
        if path is None:
            path = self.work_dir / f"kubeconfig-{secrets.token_hex(6)}"
        return write_kubeconfig(
            path, server=self.server, ca_file=self.ca_file, token=token, namespace=namespace
        )

    def _write_admin_kubeconfig(self) -> None:
        self.kubeconfig_for(self.admin_token, self.admin_kubeconfig)

    def kubectl(
        self, *args: str, kubeconfig: Path | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl (admin unless kubeconfig is given); needs .cache/bin/kubectl."""
        kubectl = self.bin_dir / "kubectl"
        if not kubectl.exists():
            raise KubeClusterError(f"missing {kubectl}; {SETUP_HINT}")
        return subprocess.run(
            [str(kubectl), f"--kubeconfig={kubeconfig or self.admin_kubeconfig}", *args],
            check=check,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    # -- objects ------------------------------------------------------------------------------

    def apply(
        self,
        *manifests: Manifest | Iterable[Manifest],
        api_client: kubernetes.client.ApiClient | None = None,
        namespace: str | None = None,
        field_manager: str = FIELD_MANAGER,
        timeout: float = 30.0,
    ) -> list[ResourceInstance]:
        """Server-side apply manifests (dicts, or YAML file paths with one or more documents).

        Applies in order, as admin unless ``api_client`` is given; namespaced objects without a
        namespace go to ``namespace`` (default "default"). After a CustomResourceDefinition it
        waits for the CRD to be established, so a later document may be one of its objects.
        """
        flat: list[Manifest] = []
        for item in manifests:
            if isinstance(item, Mapping | str | os.PathLike):
                flat.append(item)
            else:
                flat.extend(item)
        return apply_manifests(
            self.dynamic_client(api_client),
            flat,
            namespace=namespace,
            field_manager=field_manager,
            timeout=timeout,
            wait_for_crd=lambda name, wait: self.wait_for_crd(name, timeout=wait),
        )

    def wait_for_crd(self, name: str, timeout: float = 30.0) -> None:
        """Wait until the CustomResourceDefinition NAME is Established (its API is served)."""
        api = kubernetes.client.ApiextensionsV1Api(self._admin_api())
        deadline = time.monotonic() + timeout
        state = "not found"
        while True:
            try:
                crd = api.read_custom_resource_definition(name)
                conditions = {
                    c.type: c.status for c in ((crd.status and crd.status.conditions) or [])
                }
                if conditions.get("Established") == "True":
                    return
                state = f"conditions {conditions}"
            except ApiException as exc:
                if exc.status != 404:
                    raise
            if time.monotonic() > deadline:
                raise KubeClusterError(f"CRD {name} not established after {timeout}s ({state})")
            time.sleep(0.1)

    def components(self) -> Iterator[tuple[str, int]]:
        """(name, pid) of each running component."""
        for component in self._components:
            if component.process.poll() is None:
                yield component.name, component.process.pid
