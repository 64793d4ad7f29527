"""The node plugin: mount a volume at kubelet's staging path, bind it into pods.

`servicer` answers the CSI Node service; `volume_mounts` is what is mounted at kubelet's
paths and the checks after each stage and bind; `paths` accepts only kubelet's CSI path
layouts and holds them open; `stats` reads a volume's usage and health; `readiness` watches
whether this node can mount Lustre at all (modules, LNet).
"""
