// Package provider is the cloud provider "lotse" as a cloud controller
// manager process sees it: every question of k8s.io/cloud-provider's
// controllers (a node's machine, a Service's balancer) is one request to
// the cloud API of Lotse's manager, over mutual TLS with the cluster's own
// client certificate. The answers, and the rules behind them (annotations,
// addresses, which machine is whose), stay in the manager.
//
// The package is built twice: into Lotse, where the manager serves the
// same wire types, and into each Kubernetes release's
// lotse-cloud-controller-manager against that release's k8s.io/cloud-provider
// (internal/cloudapi/ccm writes its source into the release build). So it
// imports the standard library and k8s.io modules only, and uses no
// k8s.io API that differs between the minors Lotse offers.
package provider

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	cloudprovider "k8s.io/cloud-provider"
)

// Name is the provider's name (--cloud-provider) and its provider IDs'
// scheme.
const Name = "lotse"

// Paths of the cloud API.
const (
	PathInstance           = "/v1/instance"
	PathLoadBalancerGet    = "/v1/loadbalancer/get"
	PathLoadBalancerEnsure = "/v1/loadbalancer/ensure"
	PathLoadBalancerDelete = "/v1/loadbalancer/delete"
)

const (
	clientCertificatePrefix = "lotse:cloud-controller-manager:"
	maxResponseBytes        = 1 << 20
	requestTimeout          = 30 * time.Second
)

// ClientCommonName is the common name of a cluster's client certificate
// for the cloud API: the manager serves that cluster only to it. The
// cluster's UID is part of it, so a certificate of a deleted cluster is
// worth nothing to a new one of the same name.
func ClientCommonName(namespace, name, uid string) string {
	return clientCertificatePrefix + namespace + "/" + name + "/" + uid
}

// ParseClientCommonName returns the cluster a client certificate's common
// name stands for.
func ParseClientCommonName(cn string) (namespace, name, uid string, ok bool) {
	rest, ok := strings.CutPrefix(cn, clientCertificatePrefix)
	if !ok {
		return "", "", "", false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return "", "", "", false
	}
	return parts[0], parts[1], parts[2], true
}

// InstanceRequest asks about the machine behind a node.
type InstanceRequest struct {
	Node corev1.Node `json:"node"`
}

// Instance is what the cloud knows of a node's machine.
type Instance struct {
	// Exists is false when the node has no machine (any more); the other
	// fields are then empty.
	Exists       bool                 `json:"exists"`
	Shutdown     bool                 `json:"shutdown,omitempty"`
	ProviderID   string               `json:"providerID,omitempty"`
	InstanceType string               `json:"instanceType,omitempty"`
	Zone         string               `json:"zone,omitempty"`
	Region       string               `json:"region,omitempty"`
	Addresses    []corev1.NodeAddress `json:"addresses,omitempty"`
}

// LoadBalancerRequest asks about a Service's balancer; Nodes are the
// backends for an ensure.
type LoadBalancerRequest struct {
	Service corev1.Service `json:"service"`
	Nodes   []corev1.Node  `json:"nodes,omitempty"`
}

// LoadBalancerResponse is a balancer's status; Exists is false when the
// Service has none.
type LoadBalancerResponse struct {
	Exists bool                       `json:"exists"`
	Status *corev1.LoadBalancerStatus `json:"status,omitempty"`
}

// ErrorResponse is the body of every answer that is not 200.
type ErrorResponse struct {
	Error string `json:"error"`
}

// Config is the file --cloud-config names.
type Config struct {
	// Server is the cloud API's URL (https://127.0.0.1:PORT).
	Server string `json:"server"`
	// CAFile verifies the server; CertFile and KeyFile are the cluster's
	// client certificate.
	CAFile   string `json:"caFile"`
	CertFile string `json:"certFile"`
	KeyFile  string `json:"keyFile"`
}

// Register makes the provider known to k8s.io/cloud-provider under Name.
func Register() {
	cloudprovider.RegisterCloudProvider(Name, func(config io.Reader) (cloudprovider.Interface, error) {
		if config == nil {
			return nil, errors.New("the lotse cloud provider needs --cloud-config")
		}
		var c Config
		if err := json.NewDecoder(config).Decode(&c); err != nil {
			return nil, fmt.Errorf("--cloud-config: %w", err)
		}
		return New(c)
	})
}

// New is the provider with the cloud API of c.
func New(c Config) (*Cloud, error) {
	if !strings.HasPrefix(c.Server, "https://") {
		return nil, fmt.Errorf("--cloud-config: server %q must be an https:// URL", c.Server)
	}
	caPEM, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, fmt.Errorf("--cloud-config caFile: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("--cloud-config caFile %s: no certificate in it", c.CAFile)
	}
	if _, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile); err != nil {
		return nil, fmt.Errorf("--cloud-config certFile/keyFile: %w", err)
	}
	tlsConfig := &tls.Config{
		RootCAs:    pool,
		MinVersion: tls.VersionTLS12,
		// Read on every handshake, so a renewed certificate is used
		// without a restart.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
			if err != nil {
				return nil, err
			}
			return &cert, nil
		},
	}
	transport := &http.Transport{TLSClientConfig: tlsConfig, MaxIdleConnsPerHost: 4, IdleConnTimeout: time.Minute}
	return &Cloud{server: strings.TrimSuffix(c.Server, "/"), client: &http.Client{Transport: transport, Timeout: requestTimeout}}, nil
}

// Cloud is cloudprovider.Interface over the cloud API.
type Cloud struct {
	server string
	client *http.Client
}

var _ cloudprovider.Interface = (*Cloud)(nil)

// call posts in to the path and decodes the answer into out.
func (c *Cloud) call(ctx context.Context, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.server+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("the cloud API: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return fmt.Errorf("the cloud API: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e ErrorResponse
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("the cloud API answered %s", resp.Status)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(data, out)
}

// Initialize is part of cloudprovider.Interface; there is nothing to set up.
func (c *Cloud) Initialize(cloudprovider.ControllerClientBuilder, <-chan struct{}) {}

// LoadBalancer is the Service balancers.
func (c *Cloud) LoadBalancer() (cloudprovider.LoadBalancer, bool) { return loadBalancers{c}, true }

// Instances is the old instances API; InstancesV2 replaces it.
func (c *Cloud) Instances() (cloudprovider.Instances, bool) { return nil, false }

// InstancesV2 is the node metadata.
func (c *Cloud) InstancesV2() (cloudprovider.InstancesV2, bool) { return instances{c}, true }

// Zones is superseded by InstancesV2's metadata.
func (c *Cloud) Zones() (cloudprovider.Zones, bool) { return nil, false }

// Clusters is not offered.
func (c *Cloud) Clusters() (cloudprovider.Clusters, bool) { return nil, false }

// Routes are not needed: Lotse routes pod ranges itself.
func (c *Cloud) Routes() (cloudprovider.Routes, bool) { return nil, false }

// ProviderName is "lotse".
func (c *Cloud) ProviderName() string { return Name }

// HasClusterID: the client certificate names the cluster.
func (c *Cloud) HasClusterID() bool { return true }

type instances struct{ c *Cloud }

func (i instances) instance(ctx context.Context, node *corev1.Node) (*Instance, error) {
	var out Instance
	if err := i.c.call(ctx, PathInstance, InstanceRequest{Node: *node}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// InstanceExists: the node's machine exists.
func (i instances) InstanceExists(ctx context.Context, node *corev1.Node) (bool, error) {
	in, err := i.instance(ctx, node)
	if err != nil {
		return false, err
	}
	return in.Exists, nil
}

// InstanceShutdown: the node's machine exists but is stopped.
func (i instances) InstanceShutdown(ctx context.Context, node *corev1.Node) (bool, error) {
	in, err := i.instance(ctx, node)
	if err != nil {
		return false, err
	}
	return in.Exists && in.Shutdown, nil
}

// InstanceMetadata describes the node's machine.
func (i instances) InstanceMetadata(ctx context.Context, node *corev1.Node) (*cloudprovider.InstanceMetadata, error) {
	in, err := i.instance(ctx, node)
	if err != nil {
		return nil, err
	}
	if !in.Exists {
		return nil, cloudprovider.InstanceNotFound
	}
	return &cloudprovider.InstanceMetadata{ProviderID: in.ProviderID, InstanceType: in.InstanceType,
		NodeAddresses: in.Addresses, Zone: in.Zone, Region: in.Region}, nil
}

type loadBalancers struct{ c *Cloud }

func nodeValues(nodes []*corev1.Node) []corev1.Node {
	out := make([]corev1.Node, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, *n)
	}
	return out
}

// GetLoadBalancer returns the balancer's status, if it exists.
func (l loadBalancers) GetLoadBalancer(ctx context.Context, _ string, service *corev1.Service) (*corev1.LoadBalancerStatus, bool, error) {
	var out LoadBalancerResponse
	if err := l.c.call(ctx, PathLoadBalancerGet, LoadBalancerRequest{Service: *service}, &out); err != nil {
		return nil, false, err
	}
	return out.Status, out.Exists, nil
}

// GetLoadBalancerName is cloud-provider's name for the Service (the
// manager names the balancer the same way).
func (l loadBalancers) GetLoadBalancerName(_ context.Context, _ string, service *corev1.Service) string {
	return cloudprovider.DefaultLoadBalancerName(service)
}

// EnsureLoadBalancer creates or updates the Service's balancer.
func (l loadBalancers) EnsureLoadBalancer(ctx context.Context, _ string, service *corev1.Service, nodes []*corev1.Node) (*corev1.LoadBalancerStatus, error) {
	var out LoadBalancerResponse
	if err := l.c.call(ctx, PathLoadBalancerEnsure, LoadBalancerRequest{Service: *service, Nodes: nodeValues(nodes)}, &out); err != nil {
		return nil, err
	}
	if out.Status == nil {
		return nil, errors.New("the cloud API returned no balancer status")
	}
	return out.Status, nil
}

// UpdateLoadBalancer applies changed nodes (and everything else) in place.
func (l loadBalancers) UpdateLoadBalancer(ctx context.Context, clusterName string, service *corev1.Service, nodes []*corev1.Node) error {
	_, err := l.EnsureLoadBalancer(ctx, clusterName, service, nodes)
	return err
}

// EnsureLoadBalancerDeleted removes the balancer and releases its address.
func (l loadBalancers) EnsureLoadBalancerDeleted(ctx context.Context, _ string, service *corev1.Service) error {
	return l.c.call(ctx, PathLoadBalancerDelete, LoadBalancerRequest{Service: *service}, nil)
}
