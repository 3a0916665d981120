package images

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
)

// Namespace is the containerd namespace the CRI plugin (and so kubelet)
// uses; images imported anywhere else are invisible to pods.
const Namespace = "k8s.io"

// Import loads the image tarball at tarPath (docker-save or OCI archive) into
// the containerd at containerdSocket, in the k8s.io namespace, and unpacks
// it into the default snapshotter so the first pod using it starts without
// delay. ctrBinary is the ctr executable ("" means "ctr" on PATH); it comes
// with Debian's containerd package. Importing an image again is harmless:
// the name is re-pointed and the blobs are already there.
func Import(ctx context.Context, ctrBinary, containerdSocket, tarPath string) error {
	// --no-unpack=false is ctr's default, spelled out because kubelet needs the
	// unpacked snapshot; --platform keeps the import to what the image has.
	_, err := runCtr(ctx, ctrBinary, containerdSocket,
		"images", "import", "--no-unpack=false", "--platform", "linux/amd64", tarPath)
	if err != nil {
		return fmt.Errorf("import %s: %w", tarPath, err)
	}
	return nil
}

// ImportedID returns the image ID (the digest of its config, as kubelet and
// `crictl images` show it) of ref in the containerd at containerdSocket, or
// "" if containerd has no image of that name.
func ImportedID(ctx context.Context, ctrBinary, containerdSocket, ref string) (string, error) {
	out, err := runCtr(ctx, ctrBinary, containerdSocket, "images", "ls", "name=="+ref)
	if err != nil {
		return "", err
	}
	// REF TYPE DIGEST SIZE PLATFORMS LABELS
	var manifest string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == ref {
			manifest = f[2]
		}
	}
	if manifest == "" {
		return "", nil
	}
	blob, err := runCtr(ctx, ctrBinary, containerdSocket, "content", "get", manifest)
	if err != nil {
		return "", err
	}
	var m struct {
		Config struct {
			Digest string `json:"digest"`
		} `json:"config"`
	}
	if err := json.Unmarshal(blob, &m); err != nil || m.Config.Digest == "" {
		return "", fmt.Errorf("image %s: manifest %s has no config digest (is it an index?)", ref, manifest)
	}
	return m.Config.Digest, nil
}

// EnsureImported imports the tarball unless containerd already has ref with
// image ID wantID (see Builder.Stamp).
func EnsureImported(ctx context.Context, ctrBinary, containerdSocket, tarPath, ref, wantID string) error {
	if wantID != "" {
		if id, err := ImportedID(ctx, ctrBinary, containerdSocket, ref); err == nil && id == wantID {
			return nil
		}
	}
	return Import(ctx, ctrBinary, containerdSocket, tarPath)
}

func runCtr(ctx context.Context, ctrBinary, containerdSocket string, args ...string) ([]byte, error) {
	if ctrBinary == "" {
		ctrBinary = "ctr"
	}
	full := append([]string{"--address", containerdSocket, "--namespace", Namespace}, args...)
	cmd := exec.CommandContext(ctx, ctrBinary, full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", ctrBinary, strings.Join(full, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}
