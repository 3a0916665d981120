package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// ReasonImageNotInBundle is the reason of the event Lotse adds to a pod
// whose image cannot be pulled in a cluster without egress.
const ReasonImageNotInBundle = "ImageNotInBundle"

// imagePullHandler reports, on every pod update, the images that wait on
// a failed pull (see reportImageNotInBundle).
func imagePullHandler(ctx context.Context, cs kubernetes.Interface, logger logr.Logger) cache.ResourceEventHandler {
	check := func(obj any) {
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return
		}
		for _, image := range failedPulls(pod) {
			if err := reportImageNotInBundle(ctx, cs, pod, image); err != nil && ctx.Err() == nil {
				logger.Error(err, "report image not in bundle", "pod", pod.Namespace+"/"+pod.Name)
			}
		}
	}
	return cache.ResourceEventHandlerFuncs{AddFunc: check, UpdateFunc: func(_, obj any) { check(obj) }}
}

// failedPulls lists the images of a pod's containers that wait on a failed pull.
func failedPulls(pod *corev1.Pod) []string {
	var out []string
	for _, list := range [][]corev1.ContainerStatus{pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses} {
		for _, s := range list {
			if w := s.State.Waiting; w != nil && (w.Reason == "ErrImagePull" || w.Reason == "ImagePullBackOff") {
				out = append(out, s.Image)
			}
		}
	}
	return out
}

// ImageNotInBundleMessage tells the tenant why a pull failed and what to do.
func ImageNotInBundleMessage(image string) string {
	return fmt.Sprintf("image %q is not in this cluster's offline image bundle, and the cluster sends nothing outside "+
		"(spec.networking.egress: Deny), so it cannot be pulled; add it to the bundle with "+
		"`lotse image add NAME:TAG --binary PATH` and use imagePullPolicy: Never or IfNotPresent", image)
}

// reportImageNotInBundle records one event per pod and image (its name is
// derived from both, so a pod in back-off does not pile up events).
func reportImageNotInBundle(ctx context.Context, cs kubernetes.Interface, pod *corev1.Pod, image string) error {
	sum := sha256.Sum256([]byte(string(pod.UID) + "/" + image))
	now := metav1.Now()
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name + ".lotse-" + hex.EncodeToString(sum[:])[:10], Namespace: pod.Namespace},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: pod.Namespace, Name: pod.Name,
			UID: pod.UID, ResourceVersion: pod.ResourceVersion},
		Reason:         ReasonImageNotInBundle,
		Message:        ImageNotInBundleMessage(image),
		Type:           corev1.EventTypeWarning,
		Source:         corev1.EventSource{Component: "lotse"},
		FirstTimestamp: now,
		LastTimestamp:  now,
		Count:          1,
	}
	_, err := cs.CoreV1().Events(pod.Namespace).Create(ctx, ev, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}
