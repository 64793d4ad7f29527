"""The embedded provisioner: runs Lustre server sets (MGS/MDT, OSS/OSTs) and grows them.

The adapters of the core's port (`csi.server_sets.ServerSetProvider`): `local` (the embedded
default, a ledger and a tree on this machine), `local_lustre` (the Lustre tool stand-in that
serves it) and `kubevirt` (LustreFileSystem resources reconciled into VMs). They import
`csi/`; `csi/` imports them only from its composition root (`csi/backends.py`).
"""
