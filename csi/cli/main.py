"""`lustre-csi`: serve the driver, call it, or walk through a volume's life on this machine."""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from csi.cli.client import CsiClient, mount_capability
from csi.errors import DriverError
from csi.identity import DRIVER_NAME, DRIVER_VERSION
from csi.quantity import parse_quantity
from csi.rpc import csi_pb2

log = logging.getLogger("lustre-csi")


def _key_values(items: Sequence[str], flag: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"{flag} takes KEY=VALUE, got {item!r}")
        pairs[key] = value
    return pairs


def _as_dict(message: Message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _print(message: Message) -> None:
    print(json.dumps(_as_dict(message), indent=2))


def _add_serve(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="run the CSI driver")
    serve.add_argument("--mode", choices=("controller", "node", "all"), default="all")
    serve.add_argument("--endpoint", default="unix:///csi/csi.sock")
    serve.add_argument("--node-id", default=socket.gethostname())
    serve.add_argument("--state-dir", type=Path, default=Path("/var/lib/lustre-csi"))
    serve.add_argument(
        "--kubelet-dir",
        action="append",
        dest="kubelet_dirs",
        help="directory staging/target paths must lie in (repeatable; default /var/lib/kubelet)",
    )
    serve.add_argument("--default-fsname", default="lustre")
    from csi.backends import LUSTRE_TOOLS

    serve.add_argument(
        "--lustre-tools",
        choices=tuple(LUSTRE_TOOLS),
        default="local",
        help="local: the embedded server set and its Lustre stand-in; "
        "kernel: the real mount.lustre and lfs",
    )
    serve.add_argument(
        "--standin-dir",
        default="",
        help="data directory of the local server sets and their stand-in (default: --state-dir)",
    )
    serve.add_argument(
        "--metrics-address",
        default="",
        help="[host]:port for /metrics (off if empty; no host means 127.0.0.1, so give "
        "0.0.0.0:PORT to open them to the network)",
    )
    serve.add_argument("--workers", type=int, default=16)
    serve.add_argument(
        "--report-node-condition",
        action="store_true",
        help="node mode: set the Node's LustreClientReady condition (in-cluster credentials)",
    )
    serve.add_argument("--kubeconfig", default="", help="kubeconfig file (default: in-cluster)")
    serve.add_argument(
        "--server-sets",
        choices=("local", "kubevirt"),
        default="local",
        help="who runs the Lustre servers: the embedded local server sets, or KubeVirt VMs "
        "reconciled from LustreFileSystem resources by the embedded provisioner",
    )
    serve.add_argument(
        "--namespace",
        default="lustre-csi",
        help="the driver's namespace: the provisioner's Lease and address claims",
    )
    serve.add_argument(
        "--server-namespace",
        default="lustre-servers",
        help="namespace of the Lustre server VMs, their disks, cloud-init Secrets and pods",
    )


def _add_client(commands: argparse._SubParsersAction) -> None:
    client = commands.add_parser("client", help="call CSI RPCs on an endpoint")
    client.add_argument("--endpoint", default="unix:///csi/csi.sock")
    client.add_argument("--timeout", type=float, default=30.0,
                        help="seconds each call may take (default 30)")
    calls = client.add_subparsers(dest="call", required=True)
    calls.add_parser("info", help="GetPluginInfo + capabilities")
    calls.add_parser("probe")
    create = calls.add_parser("create", help="CreateVolume")
    create.add_argument("name")
    create.add_argument("--size", default="1Gi")
    create.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    delete = calls.add_parser("delete", help="DeleteVolume")
    delete.add_argument("volume_id")
    listing = calls.add_parser("list", help="ListVolumes")
    listing.add_argument("--max-entries", type=int, default=0)
    listing.add_argument("--starting-token", default="")
    get = calls.add_parser("get", help="ControllerGetVolume")
    get.add_argument("volume_id")
    capacity = calls.add_parser("capacity", help="GetCapacity")
    capacity.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    expand = calls.add_parser("expand", help="ControllerExpandVolume")
    expand.add_argument("volume_id")
    expand.add_argument("--size", required=True)
    modify = calls.add_parser("modify", help="ControllerModifyVolume (a VolumeAttributesClass)")
    modify.add_argument("volume_id")
    modify.add_argument("--param", action="append", required=True, metavar="KEY=VALUE",
                        help="a mutable parameter: stripeCount, stripeSize, ostPool, "
                        "progressiveLayout, inodeLimit")
    for name in ("stage", "publish"):
        call = calls.add_parser(name, help=f"Node{name.capitalize()}Volume")
        call.add_argument("volume_id")
        call.add_argument("--staging-path", required=True)
        call.add_argument("--context", action="append", default=[], metavar="KEY=VALUE")
        if name == "publish":
            call.add_argument("--target-path", required=True)
            call.add_argument("--readonly", action="store_true")
    unstage = calls.add_parser("unstage", help="NodeUnstageVolume")
    unstage.add_argument("volume_id")
    unstage.add_argument("--staging-path", required=True)
    unpublish = calls.add_parser("unpublish", help="NodeUnpublishVolume")
    unpublish.add_argument("volume_id")
    unpublish.add_argument("--target-path", required=True)
    stats = calls.add_parser("stats", help="NodeGetVolumeStats")
    stats.add_argument("volume_id")
    stats.add_argument("--path", required=True)
    calls.add_parser("node-info", help="NodeGetInfo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lustre-csi", description=__doc__)
    parser.add_argument(
        "--version", action="version", version=f"lustre-csi {DRIVER_NAME} {DRIVER_VERSION}"
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("LUSTRE_CSI_LOG_LEVEL"),
        help="debug, info, warning... (default: info; warning for the demo, to keep it readable)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _add_serve(commands)
    _add_client(commands)
    demo = commands.add_parser(
        "demo", help="serve on the embedded default and walk a volume's life"
    )
    demo.add_argument("--state-dir", type=Path, default=None)
    return parser


def run_client(args: argparse.Namespace) -> int:
    with CsiClient(args.endpoint, timeout=args.timeout) as client:
        timeout = client.timeout
        match args.call:
            case "info":
                info = client.identity.GetPluginInfo(
                    csi_pb2.GetPluginInfoRequest(), timeout=timeout
                )
                capabilities = client.identity.GetPluginCapabilities(
                    csi_pb2.GetPluginCapabilitiesRequest(), timeout=timeout
                )
                document = _as_dict(info)
                document["capabilities"] = _as_dict(capabilities).get("capabilities", [])
                print(json.dumps(document, indent=2))
            case "probe":
                print("ready" if client.probe() else "not ready")
            case "create":
                _print(
                    client.create_volume(
                        args.name,
                        parse_quantity("--size", args.size),
                        _key_values(args.param, "--param"),
                    )
                )
            case "delete":
                client.delete_volume(args.volume_id)
                print(f"deleted {args.volume_id}")
            case "list":
                _print(client.list_volumes(args.max_entries, args.starting_token))
            case "get":
                _print(
                    client.controller.ControllerGetVolume(
                        csi_pb2.ControllerGetVolumeRequest(volume_id=args.volume_id),
                        timeout=timeout,
                    )
                )
            case "capacity":
                _print(
                    client.controller.GetCapacity(
                        csi_pb2.GetCapacityRequest(
                            parameters=_key_values(args.param, "--param"),
                            volume_capabilities=[mount_capability()],
                        ),
                        timeout=timeout,
                    )
                )
            case "expand":
                size = client.expand_volume(args.volume_id, parse_quantity("--size", args.size))
                print(f"{args.volume_id} is now {size} bytes")
            case "modify":
                client.controller.ControllerModifyVolume(
                    csi_pb2.ControllerModifyVolumeRequest(
                        volume_id=args.volume_id,
                        mutable_parameters=_key_values(args.param, "--param"),
                    ),
                    timeout=timeout,
                )
                print(f"modified {args.volume_id}")
            case "stage":
                client.stage(
                    args.volume_id, args.staging_path, _key_values(args.context, "--context")
                )
                print(f"staged {args.volume_id} at {args.staging_path}")
            case "publish":
                client.publish(
                    args.volume_id,
                    args.staging_path,
                    args.target_path,
                    _key_values(args.context, "--context"),
                    readonly=args.readonly,
                )
                print(f"published {args.volume_id} at {args.target_path}")
            case "unpublish":
                client.unpublish(args.volume_id, args.target_path)
                print(f"unpublished {args.volume_id} from {args.target_path}")
            case "unstage":
                client.unstage(args.volume_id, args.staging_path)
                print(f"unstaged {args.volume_id} from {args.staging_path}")
            case "stats":
                _print(client.volume_stats(args.volume_id, args.path))
            case "node-info":
                _print(client.node.NodeGetInfo(csi_pb2.NodeGetInfoRequest(), timeout=timeout))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = args.log_level or ("warning" if args.command == "demo" else "info")
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    try:
        if args.command == "serve":
            from csi.server import Driver, DriverConfig

            # `kill -USR1` prints every thread's stack to stderr (the pod's log, the journal):
            # what a call that hangs in a file system is waiting for, without a debugger.
            faulthandler.register(signal.SIGUSR1, all_threads=True)

            Driver(
                DriverConfig(
                    mode=args.mode,
                    endpoint=args.endpoint,
                    node_id=args.node_id,
                    state_dir=args.state_dir,
                    kubelet_dirs=args.kubelet_dirs or ["/var/lib/kubelet"],
                    default_fsname=args.default_fsname,
                    lustre_tools=args.lustre_tools,
                    metrics_address=args.metrics_address,
                    workers=args.workers,
                    report_node_condition=args.report_node_condition,
                    kubeconfig=args.kubeconfig,
                    server_sets=args.server_sets,
                    standin_dir=args.standin_dir,
                    namespace=args.namespace,
                    server_namespace=args.server_namespace,
                )
            ).serve_until_signalled()
            return 0
        if args.command == "client":
            return run_client(args)
        from csi.cli.demo import run_demo

        return run_demo(args.state_dir)
    except DriverError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except grpc.RpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
