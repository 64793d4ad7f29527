"""`lustre-csi serve` for csi-sanity: kubelet's path layouts plus the two csi-sanity uses.

csi-sanity cannot give kubelet's layouts: it stages at `--csi.stagingdir` itself, for every
volume, and publishes at `<--csi.mountdir>/target` and `<--csi.mountdir>/other_target`. This
launcher, for the conformance run only, adds those two shapes (below the same kubelet root,
with every other check unchanged); the driver as shipped accepts kubelet's layouts alone.
"""

from __future__ import annotations

import functools
import sys

import csi.server
from csi.cli.main import main
from csi.node.paths import KUBELET_LAYOUTS, NAME, STAGING, TARGET, PathLayout, PathPolicy

SANITY_DIR = "csi-sanity"
SANITY_LAYOUTS = (
    PathLayout(STAGING, (SANITY_DIR, "staging")),
    PathLayout(TARGET, (SANITY_DIR, "mount", NAME)),
)

if __name__ == "__main__":
    csi.server.PathPolicy = functools.partial(  # type: ignore[misc]
        PathPolicy, layouts=KUBELET_LAYOUTS + SANITY_LAYOUTS
    )
    sys.exit(main())
