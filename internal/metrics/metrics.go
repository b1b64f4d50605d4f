// Package metrics serves the resource metrics API (metrics.k8s.io/v1beta1:
// NodeMetrics, PodMetrics) from inside every server, for `kubectl top` and
// HorizontalPodAutoscalers. It runs sigs.k8s.io/metrics-server as a
// library: it scrapes each kubelet's /metrics/resource, verifying the
// kubelets' serving certificates (the cluster CA signs them, with the
// nodes' addresses), and answers kube-apiserver's aggregator on
// 127.0.0.1:Port.
//
// Every server runs one, and its kube-apiserver reaches its own: the
// APIService names an ExternalName Service whose name is localhost. So
// there is no pod, no image, no ClusterIP to route, and nothing to elect.
//
// This file is the only one importing metrics-server; objects.go holds
// the cluster objects (APIService, Service, RBAC).
package metrics

import (
	"context"
	"errors"
	"fmt"
	"time"

	openapinamer "k8s.io/apiserver/pkg/endpoints/openapi"
	genericapiserver "k8s.io/apiserver/pkg/server"
	k8sopenapi "k8s.io/kubernetes/pkg/generated/openapi"
	msoptions "sigs.k8s.io/metrics-server/cmd/metrics-server/app/options"
	msapi "sigs.k8s.io/metrics-server/pkg/api"
)

// Port is where each server's metrics API listens, on 127.0.0.1 only: its
// one client is the kube-apiserver of the same server.
const Port = 10261

// DefaultResolution is how often kubelets are scraped.
const DefaultResolution = 15 * time.Second

// Config says where the metrics server finds its credentials.
type Config struct {
	// Kubeconfig is its identity (User), for the API and the kubelets.
	Kubeconfig string
	// ServingCert and ServingKey: a certificate for ServiceHost, signed
	// by the CA in the APIService's caBundle.
	ServingCert, ServingKey string
	// ClientCA verifies client certificates; FrontProxyCA the
	// aggregator's (CN front-proxy-client).
	ClientCA, FrontProxyCA string
	// KubeletCA verifies the kubelets' serving certificates.
	KubeletCA  string
	Resolution time.Duration
}

// Run serves until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Resolution == 0 {
		cfg.Resolution = DefaultResolution
	}
	o := msoptions.NewOptions()
	o.MetricResolution = cfg.Resolution
	o.Kubeconfig = cfg.Kubeconfig
	o.SecureServing.BindPort = Port
	o.SecureServing.BindAddress = []byte{127, 0, 0, 1}
	o.SecureServing.ServerCert.CertKey.CertFile = cfg.ServingCert
	o.SecureServing.ServerCert.CertKey.KeyFile = cfg.ServingKey
	o.Authentication.RemoteKubeConfigFile = cfg.Kubeconfig
	o.Authentication.ClientCert.ClientCA = cfg.ClientCA
	o.Authentication.RequestHeader.ClientCAFile = cfg.FrontProxyCA
	o.Authentication.RequestHeader.AllowedNames = []string{"front-proxy-client"}
	o.Authorization.RemoteKubeConfigFile = cfg.Kubeconfig
	o.KubeletClient.KubeletCAFile = cfg.KubeletCA
	o.KubeletClient.KubeletPreferredAddressTypes = []string{"InternalIP", "Hostname"}
	// Not o.Validate(): it applies logging options to the whole process
	// (klog's logger, slog's default), which the in-process kubelet
	// already did, and which may be done only once. Its other checks:
	var errs []error
	errs = append(errs, o.KubeletClient.Validate()...)
	errs = append(errs, o.GenericServerRunOptions.Validate()...)
	if o.MetricResolution < 10*time.Second || o.MetricResolution*9/10 < o.KubeletClient.KubeletRequestTimeout {
		errs = append(errs, fmt.Errorf("metrics resolution %s: want 10s or more, and over %s (the kubelet request timeout)", o.MetricResolution, o.KubeletClient.KubeletRequestTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("metrics server: %w", err)
	}
	sc, err := o.ServerConfig()
	if err != nil {
		return fmt.Errorf("metrics server: %w", err)
	}
	// metrics-server v0.8.0's generated OpenAPI names its types by Go
	// path, but k8s.io/metrics 0.35 names them by OpenAPIModelName, so
	// Complete cannot find NodeMetrics; Kubernetes' own definitions
	// (linked by kube-apiserver) hold the same types under the new names.
	namer := openapinamer.NewDefinitionNamer(msapi.Scheme)
	sc.Apiserver.OpenAPIConfig = genericapiserver.DefaultOpenAPIConfig(k8sopenapi.GetOpenAPIDefinitions, namer)
	sc.Apiserver.OpenAPIV3Config = genericapiserver.DefaultOpenAPIV3Config(k8sopenapi.GetOpenAPIDefinitions, namer)
	sc.Apiserver.OpenAPIConfig.Info.Title = "Cloudless metrics"
	sc.Apiserver.OpenAPIV3Config.Info.Title = "Cloudless metrics"
	sc.Apiserver.EnableProfiling = false
	s, err := sc.Complete()
	if err != nil {
		return fmt.Errorf("metrics server: %w", err)
	}
	if err := s.RunUntil(ctx.Done()); err != nil {
		return fmt.Errorf("metrics server: %w", err)
	}
	return ctx.Err()
}
