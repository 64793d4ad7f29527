"""The controller: volumes as directories with project quotas in file systems a provider serves.

`servicer` answers the CSI Controller service; `volumes.VolumeService` creates, finds, grows
and deletes volumes; `catalog` holds their records beside the data; `parameters` reads
StorageClass parameters; `mounts` is the controller's own client mount of each file system.
The file systems come from a `csi.server_sets.ServerSetProvider`.
"""
