"""The Lustre client boundary: mount options, `mount -t lustre` / `lfs` / `lctl` argv, and parsers.

`mount_options` decides which options a CSI user may ask for; `client.LustreClient` turns
requests into argv lists run through a `csi.host.command.CommandRunner`; `df` reads what
`lfs df` prints and `parsers` what `lfs quota`, `lfs project` and `lctl get_param
health_check` print; `fsname` is the one definition of a file system name; `recognizers` tell
a Lustre mount in the mount table. Nothing here runs a shell.
"""
