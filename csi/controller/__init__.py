"""The controller: volumes as directories with project quotas in file systems a provider serves.

`servicer` answers the CSI Controller service; `volumes.VolumeService` creates, finds and grows
volumes, and hands deletions to `deletion` (DeleteVolume and the background removal); both
reach a file system's records through `file_systems`; `records` is the volume records' layout
beside the data, `catalog` their index, `record_loading` which of them a load trusts and
`project_claims` the project ids they hold; `parameters` reads StorageClass parameters;
`mounts` is the controller's own client mount of each file system.
The file systems come from a `csi.server_sets.ServerSetProvider`.
"""
