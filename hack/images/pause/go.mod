module lustre-csi/hack/images/pause

go 1.26.0
