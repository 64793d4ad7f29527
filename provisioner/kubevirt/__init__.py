"""The KubeVirt server-set provider: Lustre file systems as KubeVirt VMs, grown and healed.

Layout (a picture of the architecture):

    provider.py    KubeVirtServerSets: the ServerSetProvider the CSI controller calls, in every
                   replica. Writes desired state into LustreFileSystem objects, reads outcomes
                   from their status, answers InProgress while work is under way.
    runner.py      ProvisionerRunner: Lease election + watches + work queue + resync, in
                   threads of the controller process; only the leader reconciles.
    reconciler.py  Reconciler: one level-based pass over one LustreFileSystem.
    status.py      every status the reconciler writes, derived (pure) from spec, plan and
                   observed VMs, or from a refusal (bad spec, deletion in use), and its Events.
    fencing.py     force-deleting launcher pods on nodes known down (NodeDownClock).
    claims.py      claiming a plan's addresses in the claims ConfigMap, and releasing them.
    in_use.py      which PersistentVolumes still use a file system (deletion refusal).
    leader.py      the Lease policy (pure `decide`) and its I/O (`LeaseElector`).
    spec.py        spec parsing/validation with field-named errors; object naming.
    layout.py      the durable plan: servers, static addresses, OST table (pure).
    pool_growth.py what an OST pool needs for a reservation on it (pure).
    capacity.py    measured use (`lfs df`, `lfs df -i`), on the leader's own timer.
    addresses.py   IP pools as integer spans, allocation, fixed MACs, and the one ConfigMap
                   that holds every address claim (resourceVersion-guarded).
    manifests.py   VM / PVC / Secret builders (pure).
    cloudinit.py   the idempotent boot script and network data (pure).
    events.py      Events on LustreFileSystems.
    kube.py        the one door to the Kubernetes API (protocol + REST implementation).

Design decisions:

- Cluster-scoped CRD (`lustrefilesystems.lustre.csi.io`, v1alpha1). fsnames are unique
  cluster-wide (one client cannot mount two file systems of one name) and StorageClasses,
  which create file systems, are cluster-scoped. Every file system's VMs, PVCs and Secrets
  live in a namespace of their own (`lustre-servers`, `--server-namespace`), owned by the
  LustreFileSystem (a cluster-scoped owner of namespaced dependents is allowed), so write
  access, and fencing's `pods delete`, is confined to that namespace by a Role and can never
  reach the driver's own pods in `lustre-csi`.
- The growth request is `spec.ostCount` (desired OSTs), raised by the provider and never
  lowered; the plan that realises it (servers, addresses, OST indices, `nextOstIndex`) is
  written to status before any object is created. Both survive restarts and leader changes.
- Volumes in use (deletion refusal): the PersistentVolumes of our driver that name the file
  system (volume handle `v1:<kind>:<fsname>:...` or, for static PVs, the `fsname` volume
  attribute). PVs are the cluster's own durable record of volumes, need no bookkeeping by the
  controller that could drift, and cost one cluster-wide `list` on PVs (read-only) in RBAC.
- Hand-written loop (watches + work queue + periodic resync + one worker) rather than kopf:
  kopf's peering is not a Lease, it wants the event loop and signals of the process, and
  what we need is ~200 lines. Leader election is a coordination.k8s.io/v1 Lease.
- Events about LustreFileSystems are core/v1 Events in namespace `default`: the only
  namespace the API server accepts for Events about cluster-scoped objects.
"""
