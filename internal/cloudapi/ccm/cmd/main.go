// Command lotse-cloud-controller-manager is the cloud controller manager
// of one tenant cluster: upstream's k8s.io/cloud-provider command (its
// flags, leader election, secure serving and controllers) with the
// provider "lotse", which asks Lotse's cloud API. Lotse builds it with
// every Kubernetes release it offers, against that release's
// k8s.io/cloud-provider, so a cluster's cloud controllers are never newer
// than its API server and move with its upgrades.
package main

import (
	"os"

	"k8s.io/apimachinery/pkg/util/wait"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/cloud-provider/app"
	"k8s.io/cloud-provider/app/config"
	"k8s.io/cloud-provider/names"
	"k8s.io/cloud-provider/options"
	"k8s.io/component-base/cli"
	cliflag "k8s.io/component-base/cli/flag"
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go's metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // the version metric
	"k8s.io/klog/v2"

	"github.com/lotse/lotse/internal/cloudapi/ccm/provider"
)

func main() {
	provider.Register()
	opts, err := options.NewCloudControllerManagerOptions()
	if err != nil {
		klog.Fatalf("cloud controller manager options: %v", err)
	}
	cmd := app.NewCloudControllerManagerCommand(opts, initCloud, app.DefaultInitFuncConstructors,
		names.CCMControllerAliases(), cliflag.NamedFlagSets{}, wait.NeverStop)
	os.Exit(cli.Run(cmd))
}

// initCloud starts the provider named by --cloud-provider with
// --cloud-config; the command cannot go on without it.
func initCloud(c *config.CompletedConfig) cloudprovider.Interface {
	shared := c.ComponentConfig.KubeCloudShared.CloudProvider
	cloud, err := cloudprovider.InitCloudProvider(shared.Name, shared.CloudConfigFile)
	if err != nil {
		klog.Fatalf("cloud provider %q: %v", shared.Name, err)
	}
	if cloud == nil {
		klog.Fatalf("cloud provider %q is not known (this command offers %q)", shared.Name, provider.Name)
	}
	return cloud
}
