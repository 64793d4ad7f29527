"""Outside effects on this machine, each behind a small protocol: commands (argv, never a
shell), the mount table and bind mounts, file-system calls with deadlines, atomic files,
per-key locks, and Kubernetes API credentials.
"""
