"""The embedded provisioner: runs Lustre server sets (MGS/MDT, OSS/OSTs) and grows them.

The adapters of the core's port (`csi.server_sets.ServerSetProvider`): `local` (the embedded
default, a ledger and a tree on this machine), `local_lustre` (the Lustre tool stand-in that
serves it), with `local_projects` (the stand-in's project quota state) and `lustre_reports`
(what the stand-in prints, in Lustre 2.17's formats), and `kubevirt` (LustreFileSystem
resources reconciled into VMs). `growth` is the one growth rule both providers plan with.
They import `csi/`; `csi/` imports them only from its composition root (`csi/backends.py`).
"""
