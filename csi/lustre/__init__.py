"""The Lustre client boundary: mount options, `mount -t lustre` / `lfs` / `lctl` argv, and parsers.

`mount_options` decides which options a CSI user may ask for; `client.LustreClient` turns
requests into argv lists run through a `csi.host.command.CommandRunner`; `parsers` reads what
`lfs df`, `lfs quota` and `lctl get_param health_check` print. Nothing here runs a shell.
"""
