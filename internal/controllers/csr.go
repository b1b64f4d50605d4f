package controllers

// The kubelet serving certificate approver: upstream approves nodes'
// client certificates (kube-controller-manager's csrapproving) but leaves
// serving certificates to the operator, since the names in them cannot
// be checked against anything it trusts. Here they can: the Node object.
// A CSR is approved when the requester is system:node:<name> in
// system:nodes, the Node exists, and every name in the request is the
// node's name or one of its addresses; denied otherwise; left pending
// (and looked at again when the Node appears) while the Node is not
// registered.

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"

	certsv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	certslisters "k8s.io/client-go/listers/certificates/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
)

// CSR approval reasons, as they appear on the CSR's condition.
const (
	ReasonKnownNode   = "CloudlessKnownNode"
	ReasonUnknownName = "CloudlessUnknownName"
)

const nodeUserPrefix = "system:node:"

type csrApprover struct {
	*queue
	client kubernetes.Interface
	csrs   certslisters.CertificateSigningRequestLister
	nodes  corelisters.NodeLister
}

// NewServingCSRApprover approves and denies kubelet serving CSRs.
func NewServingCSRApprover(env Env) (Controller, error) {
	csrInf := env.Informers.Certificates().V1().CertificateSigningRequests()
	nodeInf := env.Informers.Core().V1().Nodes()
	c := &csrApprover{client: env.Client, csrs: csrInf.Lister(), nodes: nodeInf.Lister()}
	c.queue = newQueue("serving-csr-approver", env.Log, c.reconcile)
	if _, err := csrInf.Informer().AddEventHandler(c.handler(func(obj any) string {
		if csr, ok := obj.(*certsv1.CertificateSigningRequest); ok && pending(csr) {
			return csr.Name
		}
		return ""
	})); err != nil {
		return nil, err
	}
	// A CSR that waited for its Node is decided when the Node appears or
	// gets its addresses.
	if _, err := nodeInf.Informer().AddEventHandler(c.handler(func(obj any) string {
		node, ok := obj.(*corev1.Node)
		if !ok {
			return ""
		}
		all, _ := c.csrs.List(labels.Everything())
		for _, csr := range all {
			if pending(csr) && csr.Spec.Username == nodeUserPrefix+node.Name {
				c.add(csr.Name)
			}
		}
		return ""
	})); err != nil {
		return nil, err
	}
	return c, nil
}

func pending(csr *certsv1.CertificateSigningRequest) bool {
	return csr.Spec.SignerName == certsv1.KubeletServingSignerName && len(csr.Status.Conditions) == 0
}

func (c *csrApprover) reconcile(ctx context.Context, name string) error {
	csr, err := c.csrs.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil || !pending(csr) {
		return err
	}
	v, reason := servingCSRVerdict(csr, c.nodes)
	if v == wait {
		return nil
	}
	cond := certsv1.CertificateSigningRequestCondition{Type: certsv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: ReasonKnownNode, Message: reason}
	if v == deny {
		cond.Type, cond.Reason = certsv1.CertificateDenied, ReasonUnknownName
		c.log.Warn("denied kubelet serving certificate", "csr", csr.Name, "user", csr.Spec.Username, "reason", reason)
	}
	csr = csr.DeepCopy()
	csr.Status.Conditions = append(csr.Status.Conditions, cond)
	_, err = c.client.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, csr.Name, csr, metav1.UpdateOptions{})
	if err != nil {
		return fmt.Errorf("record the verdict on CSR %s: %w", csr.Name, err)
	}
	return nil
}

type verdict int

const (
	wait verdict = iota
	approve
	deny
)

func (v verdict) String() string { return [...]string{"wait", "approve", "deny"}[v] }

// servingCSRVerdict decides a kubelet serving CSR against the nodes.
func servingCSRVerdict(csr *certsv1.CertificateSigningRequest, nodes corelisters.NodeLister) (verdict, string) {
	nodeName, ok := strings.CutPrefix(csr.Spec.Username, nodeUserPrefix)
	if !ok || !slices.Contains(csr.Spec.Groups, "system:nodes") {
		return deny, "not requested by a node"
	}
	node, err := nodes.Get(nodeName)
	if apierrors.IsNotFound(err) || (err == nil && len(node.Status.Addresses) == 0) {
		return wait, "node not registered yet"
	}
	if err != nil {
		return wait, err.Error()
	}
	block, _ := pem.Decode(csr.Spec.Request)
	if block == nil {
		return deny, "no PEM request"
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil || req.CheckSignature() != nil {
		return deny, "bad certificate request"
	}
	if req.Subject.CommonName != csr.Spec.Username {
		return deny, "subject is not the requesting node"
	}
	known := map[string]bool{nodeName: true}
	for _, a := range node.Status.Addresses {
		known[a.Address] = true
	}
	for _, d := range req.DNSNames {
		if !known[d] {
			return deny, fmt.Sprintf("name %s is not one of node %s's", d, nodeName)
		}
	}
	for _, ip := range req.IPAddresses {
		if !known[ip.String()] {
			return deny, fmt.Sprintf("address %s is not one of node %s's", ip, nodeName)
		}
	}
	if len(req.EmailAddresses) > 0 || len(req.URIs) > 0 {
		return deny, "unexpected email or URI names"
	}
	return approve, "names match node " + nodeName
}
