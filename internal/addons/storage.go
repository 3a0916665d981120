package addons

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

// Names of the storage addon.
const (
	// StorageName names the addon, its Deployment and ServiceAccount.
	StorageName = "local-path-provisioner"
	// StorageClassName is the default StorageClass.
	StorageClassName = "local-path"
	// StorageProvisioner is the provisioner name of the StorageClass.
	StorageProvisioner = "rancher.io/local-path"
	// DefaultLocalVolumesPath is where volumes live on nodes whose machine
	// does not say (nodes with a file system of their own).
	DefaultLocalVolumesPath = "/var/lib/lotse/local-volumes"
)

// Storage configures dynamic node-local volumes.
type Storage struct {
	// ProvisionerImage and HelperImage are loaded on every node.
	ProvisionerImage, HelperImage string
	// NodePaths maps node names to the directory their volumes live in
	// (the machine's disk); other nodes use DefaultLocalVolumesPath.
	NodePaths map[string]string
}

type localPathConfig struct {
	NodePathMap []nodePath `json:"nodePathMap"`
}

type nodePath struct {
	Node  string   `json:"node"`
	Paths []string `json:"paths"`
}

func renderStorage(cfg Config) ([]runtime.Object, error) {
	s := cfg.Storage
	if s == nil {
		return nil, nil
	}
	if s.ProvisionerImage == "" || s.HelperImage == "" {
		return nil, fmt.Errorf("the provisioner and helper images are required")
	}
	conf := localPathConfig{NodePathMap: []nodePath{{Node: "DEFAULT_PATH_FOR_NON_LISTED_NODES", Paths: []string{DefaultLocalVolumesPath}}}}
	nodes := make([]string, 0, len(s.NodePaths))
	for n := range s.NodePaths {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	for _, n := range nodes {
		p := s.NodePaths[n]
		if !filepath.IsAbs(p) {
			return nil, fmt.Errorf("volumes path %q of node %s is not absolute", p, n)
		}
		conf.NodePathMap = append(conf.NodePathMap, nodePath{Node: n, Paths: []string{p}})
	}
	confJSON, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return nil, err
	}
	helper, err := yaml.Marshal(&corev1.Pod{
		TypeMeta:   typeMeta("v1", "Pod"),
		ObjectMeta: metav1.ObjectMeta{Name: "helper-pod"},
		Spec: corev1.PodSpec{
			PriorityClassName: "system-node-critical",
			Containers: []corev1.Container{{
				Name: "helper-pod", Image: s.HelperImage, ImagePullPolicy: corev1.PullNever,
				Resources: requests("10m", "8Mi", "32Mi"),
			}},
		},
	})
	if err != nil {
		return nil, err
	}
	data := map[string]string{
		"config.json": string(confJSON),
		// The helper pods run these with /bin/sh (busybox).
		"setup":          "#!/bin/sh\nset -eu\nmkdir -m 0777 -p \"$VOL_DIR\"\n",
		"teardown":       "#!/bin/sh\nset -eu\nrm -rf \"$VOL_DIR\"\n",
		"helperPod.yaml": string(helper),
	}
	// The provisioner reads its configuration at start (and every 30 s
	// from a volume the kubelet refreshes within a minute): a checksum in
	// the pod template restarts it at once when nodes come or go.
	sum := sha256.Sum256(confJSON)
	selector := map[string]string{"app": StorageName}
	deployment := &appsv1.Deployment{
		TypeMeta:   typeMeta("apps/v1", "Deployment"),
		ObjectMeta: objectMeta(systemNamespace, StorageName, selector),
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr(int32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: selector},
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels:      withPolicyLabels(selector, LabelToAPIServer),
					Annotations: map[string]string{"lotse.dev/config-checksum": hex.EncodeToString(sum[:8])},
				},
				Spec: corev1.PodSpec{
					ServiceAccountName: StorageName,
					PriorityClassName:  "system-cluster-critical",
					Tolerations:        cfg.deploymentTolerations(),
					Containers: []corev1.Container{{
						Name:            "provisioner",
						Image:           s.ProvisionerImage,
						ImagePullPolicy: corev1.PullNever,
						Args: []string{"start",
							"--config", "/etc/config/config.json",
							"--provisioner-name", StorageProvisioner,
							"--namespace", systemNamespace,
							"--service-account-name", StorageName,
							"--configmap-name", StorageName,
							"--helper-image", s.HelperImage,
						},
						Env:             []corev1.EnvVar{fieldEnv("POD_NAMESPACE", "metadata.namespace")},
						Resources:       requests("10m", "24Mi", "128Mi"),
						SecurityContext: restricted(65534),
						VolumeMounts:    []corev1.VolumeMount{{Name: "config", MountPath: "/etc/config", ReadOnly: true}},
					}},
					Volumes: []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
						LocalObjectReference: corev1.LocalObjectReference{Name: StorageName}}}}},
				},
			},
		},
	}
	read := []string{"get", "list", "watch"}
	reclaim := corev1.PersistentVolumeReclaimDelete
	binding := storagev1.VolumeBindingWaitForFirstConsumer
	return []runtime.Object{
		serviceAccount(systemNamespace, StorageName, true),
		clusterRole("lotse:"+StorageName,
			rule([]string{""}, []string{"nodes", "persistentvolumeclaims", "configmaps", "pods", "pods/log"}, read),
			rule([]string{""}, []string{"persistentvolumes"}, []string{"get", "list", "watch", "create", "patch", "update", "delete"}),
			rule([]string{""}, []string{"events"}, []string{"create", "patch"}),
			rule([]string{"storage.k8s.io"}, []string{"storageclasses"}, read)),
		clusterRoleBinding("lotse:"+StorageName, "lotse:"+StorageName, serviceAccountSubject(systemNamespace, StorageName)),
		// Helper pods run in kube-system; only there may it create them.
		role(systemNamespace, "lotse:"+StorageName,
			rule([]string{""}, []string{"pods"}, []string{"get", "list", "watch", "create", "patch", "update", "delete"})),
		roleBinding(systemNamespace, "lotse:"+StorageName, "lotse:"+StorageName, serviceAccountSubject(systemNamespace, StorageName)),
		&corev1.ConfigMap{TypeMeta: typeMeta("v1", "ConfigMap"), ObjectMeta: objectMeta(systemNamespace, StorageName, nil), Data: data},
		deployment,
		&storagev1.StorageClass{
			TypeMeta: typeMeta("storage.k8s.io/v1", "StorageClass"),
			ObjectMeta: metav1.ObjectMeta{Name: StorageClassName,
				Annotations: map[string]string{"storageclass.kubernetes.io/is-default-class": "true"}},
			Provisioner:       StorageProvisioner,
			ReclaimPolicy:     &reclaim,
			VolumeBindingMode: &binding,
		},
	}, nil
}
