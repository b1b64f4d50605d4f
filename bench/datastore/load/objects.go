package main

import (
	"fmt"
	"math/rand/v2"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// The values written are shaped like kube-apiserver's protobuf storage
// encoding: the 4-byte magic "k8s\x00" followed by a runtime.Unknown message
// {typeMeta{apiVersion, kind}, raw, contentEncoding, contentType} whose raw
// bytes are the object's own message (ObjectMeta first, then spec/data).
// Field numbers follow the generated.proto files of k8s.io/api and
// k8s.io/apimachinery; the contents are made up but of the usual kinds (names,
// UIDs, timestamps, a managedFields entry with its JSON field set), so their
// size and compressibility are close to real objects.

var k8sMagic = []byte("k8s\x00")

func appendString(b []byte, field protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, field, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendBytes(b []byte, field protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, field, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func appendVarint(b []byte, field protowire.Number, v uint64) []byte {
	b = protowire.AppendTag(b, field, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

// timeMsg is metav1.Time / MicroTime: {seconds = 1, nanos = 2}.
func timeMsg(t time.Time, micro bool) []byte {
	var b []byte
	b = appendVarint(b, 1, uint64(t.Unix()))
	if micro {
		b = appendVarint(b, 2, uint64(t.Nanosecond()/1000*1000))
	}
	return b
}

// uid returns a stable RFC 4122-looking UID for a name.
func uid(name string) string {
	r := rand.New(rand.NewPCG(hash(name), 0x9e3779b97f4a7c15))
	return fmt.Sprintf("%08x-%04x-4%03x-%04x-%012x", r.Uint32(), r.Uint32()&0xffff, r.Uint32()&0xfff, 0x8000|r.Uint32()&0x3fff, r.Uint64()&0xffffffffffff)
}

func hash(s string) uint64 {
	var h uint64 = 14695981039346656037
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// filler returns n bytes of text like the free-form parts of real objects:
// words, paths and hex digests, different for every seed.
func filler(n int, seed uint64) []byte {
	words := []string{"kubernetes", "node", "app", "config", "true", "false", "enabled", "/etc/", "/var/lib/",
		"image", "registry", "default", "server", "port", "timeout", "level", "info", "replicas", "name:", "value:",
		"\n", "\n  ", "=", ": ", "-", "_", ".", "v1", "{", "}", "\"", ","}
	r := rand.New(rand.NewPCG(seed, 0x2545f4914f6cdd1d))
	b := make([]byte, 0, n+16)
	for len(b) < n {
		if r.IntN(6) == 0 {
			b = fmt.Appendf(b, "%08x", r.Uint32())
		} else {
			b = append(b, words[r.IntN(len(words))]...)
		}
	}
	return b[:n]
}

// objectMeta is metav1.ObjectMeta with a managedFields entry whose fieldsV1
// JSON is padded so that the whole object comes to about size bytes.
func objectMeta(namespace, name, manager string, created, changed time.Time, labels map[string]string, fields []byte) []byte {
	var m []byte
	m = appendString(m, 1, name)
	m = appendString(m, 3, namespace)
	m = appendString(m, 5, uid(namespace+"/"+name))
	m = appendVarint(m, 7, 1)
	m = appendBytes(m, 8, timeMsg(created, false))
	for k, v := range labels {
		var e []byte
		e = appendString(e, 1, k)
		e = appendString(e, 2, v)
		m = appendBytes(m, 11, e)
	}
	var mf []byte
	mf = appendString(mf, 1, manager)
	mf = appendString(mf, 2, "Update")
	mf = appendString(mf, 3, "v1")
	mf = appendBytes(mf, 4, timeMsg(changed, false))
	mf = appendString(mf, 6, "FieldsV1")
	mf = appendBytes(mf, 7, appendBytes(nil, 1, fields))
	m = appendBytes(m, 17, mf)
	return m
}

// unknown wraps raw in runtime.Unknown behind the storage magic.
func unknown(apiVersion, kind string, raw []byte) []byte {
	var tm []byte
	tm = appendString(tm, 1, apiVersion)
	tm = appendString(tm, 2, kind)
	b := append([]byte(nil), k8sMagic...)
	b = appendBytes(b, 1, tm)
	b = appendBytes(b, 2, raw)
	b = appendString(b, 3, "")
	b = appendString(b, 4, "")
	return b
}

// leaseObject is a coordination.k8s.io/v1 Lease of a node, renewed at now:
// about 400 bytes.
func leaseObject(node string, created, now time.Time) []byte {
	fields := []byte(`{"f:metadata":{"f:ownerReferences":{".":{},"k:{\"uid\":\"` + uid(node) + `\"}":{}}},"f:spec":{"f:holderIdentity":{},"f:leaseDurationSeconds":{},"f:renewTime":{}}}`)
	meta := objectMeta("kube-node-lease", node, "kubelet", created, now, nil, fields)
	// ownerReferences (13): the Node.
	var or []byte
	or = appendString(or, 5, "v1")
	or = appendString(or, 1, "Node")
	or = appendString(or, 3, node)
	or = appendString(or, 4, uid(node))
	meta = appendBytes(meta, 13, or)
	var spec []byte
	spec = appendString(spec, 1, node)
	spec = appendVarint(spec, 2, 40)
	spec = appendBytes(spec, 4, timeMsg(now, true))
	var raw []byte
	raw = appendBytes(raw, 1, meta)
	raw = appendBytes(raw, 2, spec)
	return unknown("coordination.k8s.io/v1", "Lease", raw)
}

// configMapObject is a v1 ConfigMap of about size bytes.
func configMapObject(namespace, name string, now time.Time, size int, seed uint64) []byte {
	fields := []byte(`{"f:data":{".":{},"f:config.yaml":{}},"f:metadata":{"f:labels":{".":{},"f:app":{}}}}`)
	meta := objectMeta(namespace, name, "kubectl-create", now, now, map[string]string{"app": "bench"}, fields)
	var raw []byte
	raw = appendBytes(raw, 1, meta)
	head := len(unknown("v1", "ConfigMap", raw)) + 32
	var e []byte
	e = appendString(e, 1, "config.yaml")
	e = appendBytes(e, 2, filler(max(size-head, 16), seed))
	raw = appendBytes(raw, 2, e)
	return unknown("v1", "ConfigMap", raw)
}

// podObject is a v1 Pod of about size bytes: metadata, a one-container spec
// and a status with its conditions' free text as padding.
func podObject(namespace, name string, now time.Time, size int, seed uint64) []byte {
	fields := []byte(`{"f:metadata":{"f:labels":{".":{},"f:app":{}}},"f:spec":{"f:containers":{"k:{\"name\":\"app\"}":{".":{},"f:image":{},"f:name":{}}}}}`)
	meta := objectMeta(namespace, name, "kube-controller-manager", now, now, map[string]string{"app": "bench", "pod-template-hash": "5d8f7c9b6"}, fields)
	var c []byte
	c = appendString(c, 1, "app")
	c = appendString(c, 2, "registry.k8s.io/pause:3.10")
	var spec []byte
	spec = appendBytes(spec, 2, c)
	spec = appendString(spec, 3, "Always")
	spec = appendString(spec, 11, "node-"+fmt.Sprint(seed%100))
	var raw []byte
	raw = appendBytes(raw, 1, meta)
	raw = appendBytes(raw, 2, spec)
	head := len(unknown("v1", "Pod", raw)) + 32
	var status []byte
	status = appendString(status, 1, "Running")
	status = appendBytes(status, 3, filler(max(size-head, 16), seed))
	raw = appendBytes(raw, 3, status)
	return unknown("v1", "Pod", raw)
}
