// Package mvcc implements etcd's data model over a storage engine:
// revisions, conditional transactions, watches with history, leases and
// compaction. It knows nothing of gRPC (package server) or of how bytes
// reach the disk (package engine/...), and imports no Kubernetes code.
//
// Revision semantics: every transaction that writes gets the next
// revision; all its changes share it. Reads at revision 0 are served at
// the engine's current durable revision. Compaction to revision C keeps,
// for every key, the newest version at or below C unless it is a
// tombstone, and every version above C.
//
// Watchers each run their own loop over a shared in-memory ring of recent
// events (hub) and fall back to the engine's log when they lag, so one
// slow watcher never delays the others.
package mvcc
