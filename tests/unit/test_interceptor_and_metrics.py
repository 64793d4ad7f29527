"""The one place errors become status codes: mapping, logging without secrets, metrics."""

from __future__ import annotations

import logging
import threading
import urllib.request
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from csi.errors import InProgress, InvalidArgument, NotFound
from csi.interceptor import STRIPPED, ErrorMappingInterceptor, sanitized, thread_budgets
from csi.metrics import RpcMetrics, serve_metrics
from csi.rpc import csi_pb2, csi_pb2_grpc


class ScriptedIdentity(csi_pb2_grpc.IdentityServicer):
    """Raises whatever the test puts in `failure`, to see how the interceptor answers."""

    failure: Exception | None = None

    def GetPluginInfo(self, request, context):
        if self.failure is not None:
            raise self.failure
        return csi_pb2.GetPluginInfoResponse(name="x", vendor_version="1")


@pytest.fixture
def served(tmp_path) -> Iterator[tuple[ScriptedIdentity, csi_pb2_grpc.IdentityStub, RpcMetrics]]:
    metrics = RpcMetrics()
    server = grpc.server(
        futures.ThreadPoolExecutor(2), interceptors=[ErrorMappingInterceptor(metrics)]
    )
    servicer = ScriptedIdentity()
    csi_pb2_grpc.add_IdentityServicer_to_server(servicer, server)
    server.add_insecure_port(f"unix://{tmp_path}/s.sock")
    server.start()
    channel = grpc.insecure_channel(f"unix://{tmp_path}/s.sock")
    yield servicer, csi_pb2_grpc.IdentityStub(channel), metrics
    channel.close()
    server.stop(0)


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (InvalidArgument("name is required"), grpc.StatusCode.INVALID_ARGUMENT),
        (NotFound("volume x does not exist"), grpc.StatusCode.NOT_FOUND),
        (InProgress("file system booting"), grpc.StatusCode.UNAVAILABLE),
        (RuntimeError("bug"), grpc.StatusCode.INTERNAL),
    ],
)
def test_domain_errors_map_to_codes_with_their_message(
    served: tuple[ScriptedIdentity, csi_pb2_grpc.IdentityStub, RpcMetrics],
    failure: Exception,
    code: grpc.StatusCode,
) -> None:
    servicer, stub, metrics = served
    servicer.failure = failure
    with pytest.raises(grpc.RpcError) as raised:
        stub.GetPluginInfo(csi_pb2.GetPluginInfoRequest())
    assert raised.value.code() == code
    assert str(failure) in (raised.value.details() or "")
    assert f'method="GetPluginInfo",code="{code.name}"}} 1' in metrics.exposition()


def test_secrets_never_reach_the_log(caplog: pytest.LogCaptureFixture) -> None:
    # Nested messages (a capability, a repeated list of them) are walked too.
    capability = csi_pb2.VolumeCapability(
        mount=csi_pb2.VolumeCapability.MountVolume(mount_flags=["flock"])
    )
    request = csi_pb2.NodeStageVolumeRequest(
        volume_id="v",
        secrets={"password": "hunter2"},
        volume_context={"fsname": "fs"},
        volume_capability=capability,
    )
    create = csi_pb2.CreateVolumeRequest(
        name="n", secrets={"token": "s3cr3t"}, volume_capabilities=[capability, capability]
    )
    text = sanitized(request) + sanitized(create)
    assert "hunter2" not in text and "s3cr3t" not in text
    assert STRIPPED in text and "fsname" in text and "flock" in text
    assert request.secrets["password"] == "hunter2"  # the request itself is untouched


def test_each_call_is_logged_with_method_code_and_duration(
    served: tuple[ScriptedIdentity, csi_pb2_grpc.IdentityStub, RpcMetrics],
    caplog: pytest.LogCaptureFixture,
) -> None:
    servicer, stub, _ = served
    servicer.failure = NotFound("volume v1:shared:fs:x does not exist")
    with caplog.at_level(logging.INFO, logger="csi.rpc"), pytest.raises(grpc.RpcError):
        stub.GetPluginInfo(csi_pb2.GetPluginInfoRequest())
    messages = [record.getMessage() for record in caplog.records]
    assert any("GetPluginInfo -> NOT_FOUND in" in m and "does not exist" in m for m in messages)


def test_metrics_are_served_over_http(
    served: tuple[ScriptedIdentity, csi_pb2_grpc.IdentityStub, RpcMetrics],
) -> None:
    _, stub, metrics = served
    stub.GetPluginInfo(csi_pb2.GetPluginInfoRequest())
    server = serve_metrics(metrics, "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
        body = urllib.request.urlopen(url, timeout=5).read().decode()
    finally:
        server.shutdown()
    assert 'lustre_csi_rpc_total{method="GetPluginInfo",code="OK"} 1' in body
    assert 'lustre_csi_rpc_duration_seconds_count{method="GetPluginInfo"} 1' in body


class HangingNode(csi_pb2_grpc.NodeServicer):
    """NodeGetInfo blocks until released, as a call into a dead Lustre mount would."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)

    def NodeGetInfo(self, request, context):
        self.entered.release()
        self.release.wait(30)
        return csi_pb2.NodeGetInfoResponse(node_id="n1")


class HangingController(csi_pb2_grpc.ControllerServicer):
    """ControllerGetCapabilities blocks, as a call stuck on a dead file system would."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)

    def ControllerGetCapabilities(self, request, context):
        self.entered.release()
        self.release.wait(30)
        return csi_pb2.ControllerGetCapabilitiesResponse()


class ReadyIdentity(csi_pb2_grpc.IdentityServicer):
    def Probe(self, request, context):
        return csi_pb2.ProbeResponse()


def test_thread_budgets_leave_two_workers_for_identity_and_split_the_rest() -> None:
    assert thread_budgets(16, ["Controller", "Node"]) == {"Controller": 7, "Node": 7}
    assert thread_budgets(16, ["Node"]) == {"Node": 14}
    assert thread_budgets(5, ["Controller", "Node"]) == {"Controller": 2, "Node": 1}
    assert thread_budgets(2, ["Controller", "Node"]) == {"Controller": 1, "Node": 1}


def test_probe_and_node_calls_still_answer_when_hung_controller_calls_fill_their_budget(
    tmp_path,
) -> None:
    budgets = {"Controller": 2, "Node": 2}
    server = grpc.server(
        futures.ThreadPoolExecutor(6),
        interceptors=[ErrorMappingInterceptor(RpcMetrics(), budgets=budgets)],
    )
    node, controller = HangingNode(), HangingController()
    node.release.set()  # node calls answer at once; only the controller hangs
    csi_pb2_grpc.add_NodeServicer_to_server(node, server)
    csi_pb2_grpc.add_ControllerServicer_to_server(controller, server)
    csi_pb2_grpc.add_IdentityServicer_to_server(ReadyIdentity(), server)
    server.add_insecure_port(f"unix://{tmp_path}/s.sock")
    server.start()
    channel = grpc.insecure_channel(f"unix://{tmp_path}/s.sock")
    controller_stub = csi_pb2_grpc.ControllerStub(channel)
    request = csi_pb2.ControllerGetCapabilitiesRequest()
    try:
        hung = [controller_stub.ControllerGetCapabilities.future(request) for _ in range(2)]
        for _ in range(2):
            assert controller.entered.acquire(timeout=10)
        with pytest.raises(grpc.RpcError) as raised:
            controller_stub.ControllerGetCapabilities(request, timeout=10)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "every worker this service may use is busy" in (raised.value.details() or "")
        # kubelet's calls have a budget of their own, and Identity is never capped.
        node_stub = csi_pb2_grpc.NodeStub(channel)
        for _ in range(3):
            assert node_stub.NodeGetInfo(csi_pb2.NodeGetInfoRequest(), timeout=10).node_id == "n1"
            csi_pb2_grpc.IdentityStub(channel).Probe(csi_pb2.ProbeRequest(), timeout=10)
        controller.release.set()
        for call in hung:
            call.result(timeout=10)
        # The slots come back: a controller call is served again.
        controller_stub.ControllerGetCapabilities(request, timeout=10)
    finally:
        controller.release.set()
        channel.close()
        server.stop(0)


def test_probe_still_answers_when_hung_volume_calls_hold_every_worker_they_may(
    tmp_path,
) -> None:
    workers, max_busy = 4, 2
    server = grpc.server(
        futures.ThreadPoolExecutor(workers),
        interceptors=[ErrorMappingInterceptor(RpcMetrics(), budgets={"Node": max_busy})],
    )
    node = HangingNode()
    csi_pb2_grpc.add_NodeServicer_to_server(node, server)
    csi_pb2_grpc.add_IdentityServicer_to_server(ReadyIdentity(), server)
    server.add_insecure_port(f"unix://{tmp_path}/s.sock")
    server.start()
    channel = grpc.insecure_channel(f"unix://{tmp_path}/s.sock")
    node_stub = csi_pb2_grpc.NodeStub(channel)
    try:
        hung = [node_stub.NodeGetInfo.future(csi_pb2.NodeGetInfoRequest()) for _ in range(max_busy)]
        for _ in range(max_busy):
            assert node.entered.acquire(timeout=10)
        with pytest.raises(grpc.RpcError) as raised:
            node_stub.NodeGetInfo(csi_pb2.NodeGetInfoRequest(), timeout=10)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        for _ in range(3):  # Identity is never capped
            csi_pb2_grpc.IdentityStub(channel).Probe(csi_pb2.ProbeRequest(), timeout=10)
        node.release.set()
        assert all(call.result(timeout=10).node_id == "n1" for call in hung)
        # The slots come back: a volume call is served again.
        assert node_stub.NodeGetInfo(csi_pb2.NodeGetInfoRequest(), timeout=10).node_id == "n1"
    finally:
        node.release.set()
        channel.close()
        server.stop(0)


def test_debug_logging_of_requests_never_fails_a_call(
    served: tuple[ScriptedIdentity, csi_pb2_grpc.IdentityStub, RpcMetrics],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, stub, _ = served

    def broken(message: object) -> str:
        raise RuntimeError("cannot render")

    monkeypatch.setattr("csi.interceptor.sanitized", broken)
    with caplog.at_level(logging.DEBUG, logger="csi.rpc"):
        assert stub.GetPluginInfo(csi_pb2.GetPluginInfoRequest()).name == "x"
    assert any("request not logged: cannot render" in r.getMessage() for r in caplog.records)
