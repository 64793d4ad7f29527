"""The embedded provisioner: runs Lustre server sets (MGS/MDT, OSS/OSTs) and grows them."""
