package controllers

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/cloudless-dev/cloudless/internal/dns"
	"github.com/cloudless-dev/cloudless/internal/dns/zone"
)

// dnsSources are the listers both DNS controllers build from: zone
// ConfigMaps, Services and Ingresses from the start, and the custom
// resources of dns.OptionalAPIs (DNSEndpoint, the Gateway API) from the
// moment their CRDs are established, without restarting anything.
type dnsSources struct {
	zones     corelisters.ConfigMapLister // kube-system, labelled dns.ZoneLabel (the serials too)
	services  corelisters.ServiceLister
	ingresses networkinglisters.IngressLister
	crds      cache.GenericLister
	dyn       dynamicinformer.DynamicSharedInformerFactory
	enqueue   cache.ResourceEventHandler
	builder   *dns.Builder

	mu      sync.Mutex
	started map[string]informers.GenericInformer // by GroupVersionResource
}

const dnsKey = "zones"

func newDNSSources(env Env, q *queue) (*dnsSources, error) {
	cmInf := env.Informers.InformerFor(&corev1.ConfigMap{}, func(c kubernetes.Interface, resync time.Duration) cache.SharedIndexInformer {
		return coreinformers.NewFilteredConfigMapInformer(c, metav1.NamespaceSystem, resync, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc},
			func(o *metav1.ListOptions) { o.LabelSelector = dns.ZoneLabel })
	})
	svcInf := env.Informers.Core().V1().Services()
	ingInf := env.Informers.Networking().V1().Ingresses()
	crdInf := env.DynamicInformers.ForResource(dns.CRDResource)
	// Every change of a source enqueues the one key, which coalesces
	// bursts into one build. Every Service change: one that stops being
	// a LoadBalancer, or loses its annotation, must take its records
	// away.
	all := q.handler(func(any) string { return dnsKey })
	for _, inf := range []cache.SharedIndexInformer{cmInf, svcInf.Informer(), ingInf.Informer()} {
		if _, err := inf.AddEventHandler(all); err != nil {
			return nil, err
		}
	}
	optional := map[string]bool{}
	for _, api := range dns.OptionalAPIs {
		optional[api.CRD()] = true
	}
	if _, err := crdInf.Informer().AddEventHandler(q.handler(func(obj any) string {
		if m, ok := obj.(metav1.Object); ok && optional[m.GetName()] {
			return dnsKey
		}
		return ""
	})); err != nil {
		return nil, err
	}
	return &dnsSources{
		zones: corelisters.NewConfigMapLister(cmInf.GetIndexer()), services: svcInf.Lister(), ingresses: ingInf.Lister(),
		crds: crdInf.Lister(), dyn: env.DynamicInformers, enqueue: all, builder: dns.NewBuilder(),
		started: map[string]informers.GenericInformer{},
	}, nil
}

// build lists the sources and builds the zones; it also returns the
// recorded serials and their ConfigMap.
func (s *dnsSources) build(ctx context.Context) (map[string]*zone.Zone, []zone.Problem, map[string]dns.Record, *corev1.ConfigMap, error) {
	var objs dns.Objects
	var err error
	if objs.ConfigMaps, err = s.zones.ConfigMaps(metav1.NamespaceSystem).List(labels.Everything()); err != nil {
		return nil, nil, nil, nil, err
	}
	if objs.Services, err = s.services.List(labels.Everything()); err != nil {
		return nil, nil, nil, nil, err
	}
	if objs.Ingresses, err = s.ingresses.List(labels.Everything()); err != nil {
		return nil, nil, nil, nil, err
	}
	if objs.Custom, err = s.custom(ctx); err != nil {
		return nil, nil, nil, nil, err
	}
	zones, problems := s.builder.Build(objs)
	serials, err := s.zones.ConfigMaps(metav1.NamespaceSystem).Get(dns.SerialsConfigMap)
	if apierrors.IsNotFound(err) {
		serials, err = nil, nil
	}
	return zones, problems, dns.Recorded(serials), serials, err
}

// custom returns the objects of every optional API whose CRD is
// established now, starting an informer the first time one is, and
// waiting for its cache: a build never sees half a source.
func (s *dnsSources) custom(ctx context.Context) (map[string][]*unstructured.Unstructured, error) {
	out := map[string][]*unstructured.Unstructured{}
	for _, api := range dns.OptionalAPIs {
		obj, err := s.crds.Get(api.CRD())
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var crd apiextensionsv1.CustomResourceDefinition
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.(*unstructured.Unstructured).Object, &crd); err != nil {
			return nil, fmt.Errorf("read CRD %s: %w", api.CRD(), err)
		}
		v := dns.ServedVersion(&crd, api)
		if v == "" {
			continue
		}
		inf := s.informer(ctx, api.GVR(v))
		if !cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
			return nil, fmt.Errorf("the %s cache did not sync", api.Kind)
		}
		list, err := inf.Lister().List(labels.Everything())
		if err != nil {
			return nil, err
		}
		for _, o := range list {
			out[api.Kind] = append(out[api.Kind], o.(*unstructured.Unstructured))
		}
		slices.SortFunc(out[api.Kind], func(a, b *unstructured.Unstructured) int {
			return cmp.Compare(a.GetNamespace()+"/"+a.GetName(), b.GetNamespace()+"/"+b.GetName())
		})
	}
	return out, nil
}

// informer returns gvr's informer, starting it the first time.
func (s *dnsSources) informer(ctx context.Context, gvr schema.GroupVersionResource) informers.GenericInformer {
	s.mu.Lock()
	defer s.mu.Unlock()
	if inf, ok := s.started[gvr.String()]; ok {
		return inf
	}
	inf := s.dyn.ForResource(gvr)
	// The handler only enqueues; an error means the informer stopped.
	_, _ = inf.Informer().AddEventHandler(s.enqueue)
	s.dyn.Start(ctx.Done()) // starts the informers not started yet
	s.started[gvr.String()] = inf
	return inf
}

// customObject returns an object of an optional API from its cache, or
// nil.
func (s *dnsSources) customObject(kind, namespace, name string) runtime.Object {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, api := range dns.OptionalAPIs {
		if api.Kind != kind {
			continue
		}
		for _, v := range api.Versions {
			if inf, ok := s.started[api.GVR(v).String()]; ok {
				if o, err := inf.Lister().ByNamespace(namespace).Get(name); err == nil {
					return o
				}
			}
		}
	}
	return nil
}
