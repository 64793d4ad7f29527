"""`lustre-csi`: serve the driver (`main`), call it (`client`), or walk through a volume's
life on this machine (`demo`); and `kubectl lustre`, the file systems it runs as an admin
sees them (`kubectl_lustre`)."""
