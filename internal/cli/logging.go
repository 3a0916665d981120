package cli

import (
	"io"
	"os"
	"path/filepath"

	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

// setupLogging sends controller logs to file (or stderr when file is empty),
// so the terminal of `lotse up` shows progress, not controller chatter.
func setupLogging(file string) {
	var w io.Writer = os.Stderr
	if file != "" {
		if err := os.MkdirAll(filepath.Dir(file), 0o700); err == nil {
			if f, err := os.OpenFile(file, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err == nil {
				w = f
			}
		}
	}
	logger := zap.New(zap.WriteTo(w), zap.UseDevMode(false))
	ctrl.SetLogger(logger)
	klog.SetLogger(logger)
}
