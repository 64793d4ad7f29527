"""What the Lustre tool stand-in prints: `lfs df`, `lfs quota -p` and `lfs getstripe -d` in
Lustre 2.17's formats (tests/fixtures/lustre-2.17; the layout formats from 2.17's
liblustreapi.c), split from the stand-in (provisioner.local_lustre), which decides what the
figures are.
"""

from __future__ import annotations

# Lustre 2.17's file-system default, LOV_DESC_STRIPE_SIZE_DEFAULT (lustre_idl.h: 4 MiB), as its
# `lctl get_param lov.*.stripesize` and `lfs getstripe` showed in the real-Lustre tier.
DEFAULT_STRIPE_SIZE = 4 << 20


def df_report(fsname: str, ledger: dict, mountpoint: str, *, used_bytes: int, used_files: int,
              inodes: bool) -> str:
    """`lfs df [-i] <mountpoint>` as Lustre 2.17 prints it, for a server set's ledger and what
    its tree uses: one row per MDT and OST (an inactive OST as `inactive device`), then the
    summary."""
    active = [ost for ost in ledger["osts"] if ost["state"] == "active"]
    header = "UUID                      Inodes       IUsed       IFree IUse%  Mounted on"
    if not inodes:
        header = "UUID                   1K-blocks        Used   Available Use%  Mounted on"
    rows = [header]
    mdt_kib = ledger["template"].get("mdt_size_bytes", 64 << 30) // 1024
    # An MDT holds about one inode per 2 KiB on ldiskfs; OSTs one object per 16 KiB or so.
    mdt_total = mdt_kib // 2 if inodes else mdt_kib
    mdt_used = used_files if inodes else min(mdt_kib, 4 * (used_files + 1))
    rows.append(_df_row(f"{fsname}-MDT0000_UUID", mdt_total, mdt_used, mountpoint, "MDT:0"))
    totals = [0, 0]
    ost_free_inodes = 0
    for ost in ledger["osts"]:
        name = f"{fsname}-OST{ost['index']:04x}_UUID"
        if ost["state"] != "active":
            rows.append(f"OST{ost['index']:04x}             : inactive device")
            continue
        ost_kib = ost["size_bytes"] // 1024
        total = ost_kib // 16 if inodes else ost_kib
        share = (used_files if inodes else used_bytes // 1024) // max(1, len(active))
        rows.append(_df_row(name, total, share, mountpoint, f"OST:{ost['index']}"))
        totals[0] += total
        totals[1] += share
        ost_free_inodes += max(0, total - share)
    if inodes:
        # Files are counted on the MDTs, but each needs an OST object too: lfs reports
        # the MDTs' used inodes and the smaller of the two free counts (2.17:
        # 309 used + min(419123, 130770) free = 131079 files).
        free = min(max(0, mdt_total - mdt_used), ost_free_inodes)
        totals = [mdt_used + free, mdt_used]
    rows.append("")
    rows.append(_df_row("filesystem_summary:", totals[0], totals[1], mountpoint, None))
    rows.append("")  # lfs ends each file system's block with a blank line
    return "\n".join(rows) + "\n"


def getstripe_directory_report(layout: dict | None) -> str:
    """`lfs getstripe -d <directory>` as Lustre 2.17 prints it (lov_dump_user_lmm_header and
    lov_dump_comp_v1 in liblustreapi.c): a plain layout on one line, fields separated by
    one space; a progressive one as `lcm_*`, then per component `lcme_*` lines and its
    fields on one line, each preceded by the six-space indent. No layout: the file system's
    default (count 1, DEFAULT_STRIPE_SIZE, pattern 0)."""
    if layout is None:
        return f"stripe_count:  1 stripe_size:   {DEFAULT_STRIPE_SIZE} pattern:       0 " \
               "stripe_offset: -1\n\n"

    def fields(part: dict, space: str) -> str:
        shown = [
            f"{space}stripe_count:  {part.get('stripe_count', 1)}",
            f"{space}stripe_size:   {part.get('stripe_size', DEFAULT_STRIPE_SIZE)}",
            f"{space}pattern:       raid0",
            f"{space}stripe_offset: -1",
        ]
        if part.get("pool"):
            shown.append(f"{space}pool:          {part['pool']}")
        return " ".join(shown) + "\n\n"

    components = layout.get("components")
    if not components:
        return fields(layout, "")
    lines = [
        "  lcm_layout_gen:    0",
        "  lcm_mirror_count:  1",
        f"  lcm_entry_count:   {len(components)}",
    ]
    text = "\n".join(lines) + "\n"
    start = 0
    for component in components:
        end = component["end"]
        text += (
            "    lcme_id:             N/A\n"
            "    lcme_mirror_id:      N/A\n"
            "    lcme_flags:          0\n"
            f"    lcme_extent.e_start: {start}\n"
            f"    lcme_extent.e_end:   {'EOF' if end is None else end}\n"
        )
        text += fields(component, "      ")
        start = end if end is not None else start
    return text


def project_quota_report(
    project_id: int,
    mountpoint: str,
    *,
    used_kib: int,
    block_limits: tuple[int, int],
    files: int,
    inode_limits: tuple[int, int],
) -> str:
    """`lfs quota -p <id> <mountpoint>` as Lustre 2.17 prints it (tests/fixtures/lustre-2.17).

    Limits are (soft, hard), 0 for none. The stand-in knows no project names, so the title
    says `<unknown>` as Lustre does for an id missing from /etc/projid; no grace timers run.
    """

    def usage(value: int, limits: tuple[int, int]) -> str:
        # '*' right after the figure once it is over a limit (lfs's `%7s%c`).
        soft, hard = limits
        over = (soft and value > soft) or (hard and value > hard)
        return f" {value:>7}{'*' if over else ' '}{limits[0]:>7}{limits[1]:>8}{'-':>8}"

    # print_quota(): a mount point wider than its 15 columns gets a line of its own.
    place = f"{mountpoint}\n{'':15}" if len(mountpoint) > 15 else f"{mountpoint:>15}"
    return (
        f"Disk quotas for prj <unknown> (pid {project_id}):\n"
        "     Filesystem  kbytes  bquota  blimit  bgrace   files  iquota  ilimit  igrace \n"
        f"{place}{usage(used_kib, block_limits)}{usage(files, inode_limits)} \n"
    )


def _df_row(name: str, total: int, used: int, mountpoint: str, target: str | None) -> str:
    # showdf() in 2.17: "%-20s %11s %11s %11s %4s  %s" (two spaces before the mount point).
    available = max(0, total - used)
    percent = f"{(100 * used + total - 1) // total if total else 0}%"
    suffix = f"[{target}]" if target else ""
    return f"{name:<20} {total:>11} {used:>11} {available:>11} {percent:>4}  {mountpoint}{suffix}"
