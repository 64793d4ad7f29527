"""`lustre-csi serve` plus the test-only `--lustre-tools standin` (e2e and provisioner tiers).

There the KubeVirt stand-in plays the Lustre servers, so no real server answers a mount: the
Lustre tool stand-in mounts any NIDs, keeping each file system's data in a local tree under
`--standin-dir` as if its servers had just formatted it. The driver as shipped offers only
`local` and `kernel`.
"""

from __future__ import annotations

import functools
import sys

from csi.backends import LUSTRE_TOOLS, local_tools
from csi.cli.main import main

if __name__ == "__main__":
    LUSTRE_TOOLS["standin"] = functools.partial(local_tools, any_server=True)
    sys.exit(main())
