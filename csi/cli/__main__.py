"""`python -m csi.cli`, the same as the `lustre-csi` command."""

import sys

from csi.cli.main import main

sys.exit(main())
