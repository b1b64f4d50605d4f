package datastore_test

// The upstream storage conformance suite (k8s.io/apiserver/pkg/storage/testing)
// run against kube-apiserver's etcd3 store pointed at our datastore, for each
// engine. Each test gets a fresh datastore: a new data dir or a new database.
//
// Not run, with the reason:
//   - RunTestWatchWithUnsafeDelete: needs etcd3's unexported corrupt-object
//     error type to fake a malformed object; it tests the apiserver's
//     decoder, not the datastore.
//   - RunTestStats with size estimation: needs the store's unexported
//     getKeys; the variant without it runs.

import (
	"context"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/kubernetes"
	"google.golang.org/grpc/grpclog"

	"k8s.io/apimachinery/pkg/api/apitesting"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apiserver/pkg/apis/example"
	examplev1 "k8s.io/apiserver/pkg/apis/example/v1"
	"k8s.io/apiserver/pkg/features"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/etcd3"
	storagetesting "k8s.io/apiserver/pkg/storage/testing"
	"k8s.io/apiserver/pkg/storage/value"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/component-base/featuregate"
	featuregatetesting "k8s.io/component-base/featuregate/testing"
	"k8s.io/utils/clock"
)

var (
	scheme = runtime.NewScheme()
	codecs = serializer.NewCodecFactory(scheme)
)

const testPrefix = "test!"

// maxLimit mirrors etcd3's page size cap, for the paging call counts.
const maxLimit = 10000

func init() {
	metav1.AddToGroupVersion(scheme, metav1.SchemeGroupVersion)
	utilruntime.Must(example.AddToScheme(scheme))
	utilruntime.Must(examplev1.AddToScheme(scheme))
	grpclog.SetLoggerV2(grpclog.NewLoggerV2(io.Discard, io.Discard, os.Stderr))
}

// swapTransformer lets the tests swap the transformer the store uses,
// as upstream's tests do through the store's private fields.
type swapTransformer struct {
	mu     sync.RWMutex
	prefix *storagetesting.PrefixTransformer
	cur    value.Transformer
}

func (s *swapTransformer) get() value.Transformer {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cur
}

func (s *swapTransformer) TransformFromStorage(ctx context.Context, data []byte, dc value.Context) ([]byte, bool, error) {
	return s.get().TransformFromStorage(ctx, data, dc)
}

func (s *swapTransformer) TransformToStorage(ctx context.Context, data []byte, dc value.Context) ([]byte, error) {
	return s.get().TransformToStorage(ctx, data, dc)
}

type testStore struct {
	storage.Interface
	tr     *swapTransformer
	client *kubernetes.Client
	codec  runtime.Codec
}

func (s *testStore) UpdatePrefixTransformer(modifier storagetesting.PrefixTransformerModifier) func() {
	copied := *s.tr.prefix
	s.tr.mu.Lock()
	s.tr.cur = modifier(&copied)
	s.tr.mu.Unlock()
	return func() {
		s.tr.mu.Lock()
		s.tr.cur = s.tr.prefix
		s.tr.mu.Unlock()
	}
}

func (s *testStore) compactRevision() int64 {
	return s.Interface.(interface{ CompactRevision() int64 }).CompactRevision()
}

func setup(t *testing.T, engine string) (context.Context, *testStore) {
	t.Helper()
	sock := startDatastore(t, engine)
	client, err := kubernetes.New(clientv3.Config{
		Endpoints:   []string{"unix://" + sock},
		DialTimeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatalf("connect to datastore: %v", err)
	}
	t.Cleanup(func() { client.Close() })
	client.KV = storagetesting.NewKVRecorder(client.KV)
	client.Kubernetes = storagetesting.NewKubernetesRecorder(client.Kubernetes)

	codec := apitesting.TestCodec(codecs, examplev1.SchemeGroupVersion)
	prefix := storagetesting.NewPrefixTransformer([]byte(testPrefix), false)
	tr := &swapTransformer{prefix: prefix, cur: prefix}
	versioner := storage.APIObjectVersioner{}
	compactor := etcd3.NewCompactor(client.Client, 0, clock.RealClock{}, nil)
	t.Cleanup(compactor.Stop)
	leaseCfg := etcd3.NewDefaultLeaseManagerConfig()
	leaseCfg.ReuseDurationSeconds = 1
	st, err := etcd3.New(client, compactor, codec, func() runtime.Object { return &example.Pod{} },
		func() runtime.Object { return &example.PodList{} }, "", "/pods/",
		schema.GroupResource{Resource: "pods"}, tr, leaseCfg, etcd3.NewDefaultDecoder(codec, versioner), versioner)
	if err != nil {
		t.Fatalf("etcd3.New: %v", err)
	}
	t.Cleanup(st.Close)
	return context.Background(), &testStore{Interface: st, tr: tr, client: client, codec: codec}
}

func checkStorageInvariants(s *testStore) storagetesting.KeyValidation {
	return func(ctx context.Context, t *testing.T, key string) {
		resp, err := s.client.KV.Get(ctx, key)
		if err != nil {
			t.Fatalf("Get(%q): %v", key, err)
		}
		if len(resp.Kvs) == 0 {
			t.Fatalf("Get(%q) found nothing", key)
		}
		obj, err := runtime.Decode(s.codec, resp.Kvs[0].Value[len(testPrefix):])
		if err != nil {
			t.Fatalf("decode %q: %v", key, err)
		}
		if pod := obj.(*example.Pod); pod.ResourceVersion != "" || pod.SelfLink != "" {
			t.Errorf("stored object has resourceVersion %q, selfLink %q; want both empty", pod.ResourceVersion, pod.SelfLink)
		}
	}
}

func checkCalls(s *testStore) storagetesting.CallsValidation {
	recorder := s.client.KV.(*storagetesting.KVRecorder)
	return func(t *testing.T, pageSize, estimatedProcessedObjects uint64) {
		if reads := s.tr.prefix.GetReadsAndReset(); reads != estimatedProcessedObjects {
			t.Errorf("transformer reads = %d, want %d", reads, estimatedProcessedObjects)
		}
		want := uint64(1)
		if pageSize != 0 {
			limit := pageSize
			for sum := uint64(1); sum < estimatedProcessedObjects; {
				limit = min(limit*2, maxLimit)
				sum += limit
				want++
			}
		}
		if reads := recorder.GetReadsAndReset(); reads != want {
			t.Fatalf("datastore reads = %d, want %d", reads, want)
		}
	}
}

func compaction(s *testStore) storagetesting.Compaction {
	return func(ctx context.Context, t *testing.T, resourceVersion string) {
		rv, err := storage.APIObjectVersioner{}.ParseResourceVersion(resourceVersion)
		if err != nil {
			t.Fatal(err)
		}
		var cur int64
		cur, _, _, err = etcd3.Compact(ctx, s.client.Client, cur, int64(rv))
		if err != nil {
			_, _, _, err = etcd3.Compact(ctx, s.client.Client, cur, int64(rv))
		}
		if err != nil {
			t.Fatalf("compact to %d: %v", rv, err)
		}
		if utilfeature.DefaultFeatureGate.Enabled(features.ListFromCacheSnapshot) {
			deadline := time.Now().Add(30 * time.Second)
			for s.compactRevision() != int64(rv) {
				if time.Now().After(deadline) {
					t.Fatalf("store never observed compaction to %d (has %d)", rv, s.compactRevision())
				}
				time.Sleep(20 * time.Millisecond) // polling with a deadline
			}
		}
	}
}

func increaseRV(s *testStore) storagetesting.IncreaseRVFunc {
	return func(ctx context.Context, t *testing.T) int64 {
		resp, err := s.client.KV.Put(ctx, "increaseRV", "ok")
		if err != nil {
			t.Fatalf("put increaseRV: %v", err)
		}
		return resp.Header.Revision
	}
}

// conformance lists every upstream function we run, by name.
var conformance = []struct {
	name  string
	gates map[featuregate.Feature]bool
	run   func(ctx context.Context, t *testing.T, s *testStore)
}{
	{name: "Create", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestCreate(ctx, t, s, checkStorageInvariants(s))
	}},
	{name: "CreateWithTTL", run: func(ctx context.Context, t *testing.T, s *testStore) { storagetesting.RunTestCreateWithTTL(ctx, t, s) }},
	{name: "CreateWithKeyExist", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestCreateWithKeyExist(ctx, t, s)
	}},
	{name: "Get", run: func(ctx context.Context, t *testing.T, s *testStore) { storagetesting.RunTestGet(ctx, t, s) }},
	{name: "UnconditionalDelete", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestUnconditionalDelete(ctx, t, s)
	}},
	{name: "ConditionalDelete", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestConditionalDelete(ctx, t, s)
	}},
	{name: "DeleteWithSuggestion", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestDeleteWithSuggestion(ctx, t, s)
	}},
	{name: "DeleteWithSuggestionAndConflict", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestDeleteWithSuggestionAndConflict(ctx, t, s)
	}},
	{name: "DeleteWithSuggestionOfDeletedObject", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestDeleteWithSuggestionOfDeletedObject(ctx, t, s)
	}},
	{name: "ValidateDeletionWithSuggestion", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestValidateDeletionWithSuggestion(ctx, t, s)
	}},
	{name: "ValidateDeletionWithOnlySuggestionValid", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestValidateDeletionWithOnlySuggestionValid(ctx, t, s)
	}},
	{name: "DeleteWithConflict", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestDeleteWithConflict(ctx, t, s)
	}},
	{name: "PreconditionalDeleteWithSuggestion", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestPreconditionalDeleteWithSuggestion(ctx, t, s)
	}},
	{name: "PreconditionalDeleteWithOnlySuggestionPass", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestPreconditionalDeleteWithOnlySuggestionPass(ctx, t, s)
	}},
	{name: "ListPaging", run: func(ctx context.Context, t *testing.T, s *testStore) { storagetesting.RunTestListPaging(ctx, t, s) }},
	{name: "GetListNonRecursive", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestGetListNonRecursive(ctx, t, increaseRV(s), s)
	}},
	{name: "GetListRecursivePrefix", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestGetListRecursivePrefix(ctx, t, s)
	}},
	{name: "KeySchema", run: func(ctx context.Context, t *testing.T, s *testStore) { storagetesting.RunTestKeySchema(ctx, t, s) }},
	{name: "GuaranteedUpdate", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestGuaranteedUpdate(ctx, t, s, checkStorageInvariants(s))
	}},
	{name: "GuaranteedUpdateWithTTL", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestGuaranteedUpdateWithTTL(ctx, t, s)
	}},
	{name: "GuaranteedUpdateChecksStoredData", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestGuaranteedUpdateChecksStoredData(ctx, t, s)
	}},
	{name: "GuaranteedUpdateWithConflict", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestGuaranteedUpdateWithConflict(ctx, t, s)
	}},
	{name: "GuaranteedUpdateWithSuggestionAndConflict", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestGuaranteedUpdateWithSuggestionAndConflict(ctx, t, s)
	}},
	{name: "TransformationFailure", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestTransformationFailure(ctx, t, s)
	}},
	{name: "List", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestList(ctx, t, s, compaction(s), false, s.client.Kubernetes.(*storagetesting.KubernetesRecorder))
	}},
	{name: "ConsistentList", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestConsistentList(ctx, t, s, increaseRV(s), false, true, false)
	}},
	{name: "CompactRevision", gates: map[featuregate.Feature]bool{features.ListFromCacheSnapshot: true}, run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestCompactRevision(ctx, t, s, increaseRV(s), compaction(s))
	}},
	{name: "ListContinuation", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestListContinuation(ctx, t, s, checkCalls(s))
	}},
	{name: "ListPaginationRareObject", gates: map[featuregate.Feature]bool{features.ListFromCacheSnapshot: false}, run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestListPaginationRareObject(ctx, t, s, checkCalls(s))
	}},
	{name: "ListContinuationWithFilter", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestListContinuationWithFilter(ctx, t, s, checkCalls(s))
	}},
	{name: "NamespaceScopedList", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestNamespaceScopedList(ctx, t, s)
	}},
	{name: "ListInconsistentContinuation", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestListInconsistentContinuation(ctx, t, s, compaction(s))
	}},
	{name: "ListResourceVersionMatch", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestListResourceVersionMatch(ctx, t, s)
	}},
	{name: "Stats", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestStats(ctx, t, s, s.codec, s.tr, false)
	}},
	{name: "Watch", run: func(ctx context.Context, t *testing.T, s *testStore) { storagetesting.RunTestWatch(ctx, t, s) }},
	{name: "ClusterScopedWatch", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestClusterScopedWatch(ctx, t, s)
	}},
	{name: "NamespaceScopedWatch", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestNamespaceScopedWatch(ctx, t, s)
	}},
	{name: "DeleteTriggerWatch", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestDeleteTriggerWatch(ctx, t, s)
	}},
	{name: "WatchFromZero", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestWatchFromZero(ctx, t, s, compaction(s))
	}},
	{name: "WatchFromNonZero", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestWatchFromNonZero(ctx, t, s)
	}},
	{name: "DelayedWatchDelivery", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestDelayedWatchDelivery(ctx, t, s)
	}},
	{name: "WatchError", run: func(ctx context.Context, t *testing.T, s *testStore) { storagetesting.RunTestWatchError(ctx, t, s) }},
	{name: "WatchContextCancel", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestWatchContextCancel(ctx, t, s)
	}},
	{name: "WatcherTimeout", run: func(ctx context.Context, t *testing.T, s *testStore) { storagetesting.RunTestWatcherTimeout(ctx, t, s) }},
	{name: "WatchDeleteEventObjectHaveLatestRV", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestWatchDeleteEventObjectHaveLatestRV(ctx, t, s)
	}},
	{name: "WatchInitializationSignal", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestWatchInitializationSignal(ctx, t, s)
	}},
	{name: "ProgressNotify", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunOptionalTestProgressNotify(ctx, t, s, increaseRV(s))
	}},
	{name: "WatchDispatchBookmarkEvents", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunTestWatchDispatchBookmarkEvents(ctx, t, s, false)
	}},
	{name: "SendInitialEventsBackwardCompatibility", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunSendInitialEventsBackwardCompatibility(ctx, t, s)
	}},
	{name: "WatchSemantics", run: func(ctx context.Context, t *testing.T, s *testStore) { storagetesting.RunWatchSemantics(ctx, t, s) }},
	{name: "WatchSemanticsWithConcurrentDecode", gates: map[featuregate.Feature]bool{features.ConcurrentWatchObjectDecode: true}, run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunWatchSemantics(ctx, t, s)
	}},
	{name: "WatchSemanticInitialEventsExtended", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunWatchSemanticInitialEventsExtended(ctx, t, s)
	}},
	{name: "WatchListMatchSingle", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunWatchListMatchSingle(ctx, t, s)
	}},
	{name: "WatchErrorIsBlockingFurtherEvents", run: func(ctx context.Context, t *testing.T, s *testStore) {
		storagetesting.RunWatchErrorIsBlockingFurtherEvents(ctx, t, s)
	}},
}

func TestConformance(t *testing.T) {
	for _, engine := range engines {
		t.Run(engine, func(t *testing.T) {
			for _, tc := range conformance {
				t.Run(tc.name, func(t *testing.T) {
					for gate, on := range tc.gates {
						featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, gate, on)
					}
					ctx, s := setup(t, engine)
					tc.run(ctx, t, s)
				})
			}
		})
	}
}
