"""lustre-csi: the CSI driver (identity, controller and node services) for Lustre."""
