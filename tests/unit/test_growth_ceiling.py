"""The growth ceiling (FileSystemCapacity.max_total_bytes) counts OST pools' OSTs.

One rule for the embedded local server sets, the KubeVirt provider and GetCapacity before a
file system exists: maxOsts bounds the default OSTs only, a pool's OSTs are room on top. The
controller skips a record larger than this ceiling, so a smaller one hides real volumes.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from csi.server_sets import ServerSetTemplate, growth_ceiling_bytes, template_ceiling_bytes
from provisioner.local import LocalServerSets

GiB = 1 << 30
WITH_FLASH = replace(ServerSetTemplate(), ost_size_bytes=GiB, min_osts=1, max_osts=2,
                     growth_threshold=0.75, ost_pools="flash:2")


def test_the_ceiling_adds_the_default_osts_max_osts_still_allows_to_every_ost_allocated() -> None:
    # 1 default + 4 pool OSTs of 1 GiB allocated, maxOsts 2: one more default OST may come.
    assert growth_ceiling_bytes(allocated_bytes=5 * GiB, default_osts=1, max_osts=2,
                                ost_size_bytes=GiB) == 6 * GiB
    # Past maxOsts (a lowered spec) nothing more may come, and nothing allocated is lost.
    assert growth_ceiling_bytes(allocated_bytes=5 * GiB, default_osts=3, max_osts=2,
                                ost_size_bytes=GiB) == 5 * GiB
    assert growth_ceiling_bytes(allocated_bytes=5 * GiB, default_osts=1, max_osts=2,
                                ost_size_bytes=GiB, max_size_bytes=4 * GiB) == 4 * GiB


def test_a_template_ceiling_counts_its_pools_osts() -> None:
    assert template_ceiling_bytes(WITH_FLASH) == 4 * GiB  # maxOsts 2 + 2 flash OSTs
    assert template_ceiling_bytes(replace(WITH_FLASH, ost_pools="")) == 2 * GiB
    assert template_ceiling_bytes(replace(WITH_FLASH, ost_pools="flash:2,disk:3")) == 7 * GiB


def test_a_local_file_system_ceiling_rises_as_its_pool_grows(tmp_path: Path) -> None:
    sets = LocalServerSets(tmp_path)
    sets.ensure_file_system("fs1", WITH_FLASH)
    assert sets.capacity("fs1").max_total_bytes == template_ceiling_bytes(WITH_FLASH)
    sets.ensure_pool_capacity("fs1", "flash", 3 * GiB)  # 4 flash OSTs at 0.75
    assert sets.capacity("fs1").max_total_bytes == 6 * GiB  # 1 default + 4 flash + 1 to come
