"""One mount as the kernel shows it: a line of /proc/self/mountinfo, or a statmount(2)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MountEntry:
    mount_id: int
    device: str  # "major:minor" of the mounted super block
    root: str  # path inside the source file system that is mounted here
    mount_point: str
    options: tuple[str, ...]
    fstype: str
    source: str

    @property
    def readonly(self) -> bool:
        return "ro" in self.options

    @property
    def source_deleted(self) -> bool:
        """The mounted directory was removed from its file system after mounting."""
        return self.root.endswith("//deleted")
