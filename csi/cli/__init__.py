"""`lustre-csi`: serve the driver (`main`), call it (`client`), or walk through a volume's
life on this machine (`demo`)."""
