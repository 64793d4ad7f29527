#!/usr/bin/env python3
"""Generate the CSI Python stubs in csi/rpc/ from proto/csi.proto.

Usage (from any directory):

    python hack/generate_stubs.py           # (re)write csi/rpc/csi_pb2*.py[i]
    python hack/generate_stubs.py --check   # exit 1 if the committed stubs are stale

Generation runs protoc through the ``grpc_tools`` Python module (no system
protoc), using the ``google/protobuf/*.proto`` files bundled with grpc_tools.
The proto directory is mapped onto the virtual import path ``csi/rpc`` so the
generated gRPC module imports the message module as
``from csi.rpc import csi_pb2``.
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.resources
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = REPO_ROOT / "proto"
PROTO_FILE = PROTO_DIR / "csi.proto"
# Virtual location of csi.proto on protoc's import path; it decides both the
# output location (relative to the output root) and the Python import path.
VIRTUAL_DIR = "csi/rpc"
OUTPUT_NAMES = ("csi_pb2.py", "csi_pb2_grpc.py", "csi_pb2.pyi")
STUB_DIR = REPO_ROOT / VIRTUAL_DIR


class StubGenerationError(RuntimeError):
    """protoc failed to generate the stubs."""


class StaleStubsError(AssertionError):
    """The committed stubs differ from what proto/csi.proto generates."""


def _protoc_include_dir() -> Path:
    """Directory holding google/protobuf/*.proto as shipped with grpc_tools."""
    include = importlib.resources.files("grpc_tools") / "_proto"
    path = Path(str(include))
    if not (path / "google" / "protobuf" / "descriptor.proto").is_file():
        raise StubGenerationError(f"grpc_tools include dir not found or incomplete: {path}")
    return path


def generate(out_root: Path) -> list[Path]:
    """Run protoc, writing the stubs under ``out_root/csi/rpc``.

    Returns the paths of the generated files.
    """
    from grpc_tools import protoc  # type: ignore[import-untyped]  # dev-only dependency

    out_root = Path(out_root)
    (out_root / VIRTUAL_DIR).mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{_protoc_include_dir()}",
        f"-I{VIRTUAL_DIR}={PROTO_DIR}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"{VIRTUAL_DIR}/{PROTO_FILE.name}",
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise StubGenerationError(f"protoc exited with status {rc} for {PROTO_FILE}")
    generated = [out_root / VIRTUAL_DIR / name for name in OUTPUT_NAMES]
    missing = [str(p) for p in generated if not p.is_file()]
    if missing:
        raise StubGenerationError(f"protoc did not produce: {', '.join(missing)}")
    return generated


def stale_stubs() -> list[str]:
    """Return the committed stub files (repo-relative) that differ from a fresh run.

    An empty list means csi/rpc is up to date with proto/csi.proto.
    """
    with tempfile.TemporaryDirectory(prefix="csi-stubs-") as tmp:
        fresh_dir = Path(tmp) / VIRTUAL_DIR
        generate(Path(tmp))
        stale = []
        for name in OUTPUT_NAMES:
            committed = STUB_DIR / name
            fresh = fresh_dir / name
            if not committed.is_file() or not filecmp.cmp(committed, fresh, shallow=False):
                stale.append(f"{VIRTUAL_DIR}/{name}")
        return stale


def check() -> None:
    """Raise StaleStubsError (an AssertionError) naming the stale files, if any."""
    stale = stale_stubs()
    if stale:
        raise StaleStubsError(
            f"stale generated stubs: {', '.join(stale)}; "
            "run `python hack/generate_stubs.py` and commit the result"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write anything; fail if the committed stubs differ from a fresh run",
    )
    opts = parser.parse_args(argv)

    try:
        if opts.check:
            stale = stale_stubs()
            if stale:
                print(
                    "generate_stubs: stale generated stubs (differ from proto/csi.proto): "
                    + ", ".join(stale)
                    + "\nrun `python hack/generate_stubs.py` and commit the result",
                    file=sys.stderr,
                )
                return 1
            print("generate_stubs: csi/rpc stubs are up to date")
            return 0
        for path in generate(REPO_ROOT):
            print(f"generate_stubs: wrote {path.relative_to(REPO_ROOT)}")
    except StubGenerationError as exc:
        print(f"generate_stubs: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
