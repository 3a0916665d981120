package images

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Repository is a repository of a real container registry that images are
// pushed to, for nodes that cannot be given them with Import (the nodes of
// a seed that is not a Lotse cluster of this host): each image goes to
// NAME/IMAGE:TAG and is pulled by digest.
type Repository struct {
	// Name is the registry host (with its port, if any) and the path
	// under it, e.g. "registry.example.net:5000/lotse".
	Name string
	// PlainHTTP: the registry speaks HTTP, not HTTPS (one on a private
	// network). Its nodes' container runtime must allow that too.
	PlainHTTP bool
	// Credentials is a Docker config file (config.json, its "auths") with
	// the credentials to push with; "" pushes anonymously.
	Credentials string
	// Transport, if set, carries the requests (tests).
	Transport http.RoundTripper
}

// Validate checks that Name is a repository reference: a registry host and
// at least one path element, no tag and no digest.
func (r Repository) Validate() error {
	_, err := r.repository()
	return err
}

func (r Repository) repository() (name.Repository, error) {
	if r.Name == "" {
		return name.Repository{}, errors.New("no repository given, e.g. registry.example.net:5000/lotse")
	}
	if !strings.Contains(r.Name, "/") {
		return name.Repository{}, fmt.Errorf("repository %q: give the registry host and a path under it, e.g. %s/lotse", r.Name, r.Name)
	}
	if strings.ContainsAny(r.Name, "@") || strings.Contains(r.Name[strings.LastIndex(r.Name, "/")+1:], ":") {
		return name.Repository{}, fmt.Errorf("repository %q: give no tag or digest, images get their own", r.Name)
	}
	var opts []name.Option
	if r.PlainHTTP {
		opts = append(opts, name.Insecure)
	}
	repo, err := name.NewRepository(r.Name, append(opts, name.StrictValidation)...)
	if err != nil {
		return name.Repository{}, fmt.Errorf("repository %q: %w", r.Name, err)
	}
	return repo, nil
}

// Push puts the image built at tarPath (a Builder's tarball of img) into the
// repository, unless the registry has it already, and returns the reference
// nodes pull it by: NAME/IMAGE:TAG-ID@DIGEST. The tag names the content
// too (ID: the start of the manifest digest), so managers that build the
// same version differently never move each other's tags, and a registry
// that drops untagged manifests keeps every image a pod pins.
func (r Repository) Push(ctx context.Context, tarPath string, img Image) (string, error) {
	repo, err := r.repository()
	if err != nil {
		return "", err
	}
	// Computing the digest compresses the layers: callers keep the
	// result (see Has) rather than push again.
	image, err := tarball.ImageFromPath(tarPath, nil)
	if err != nil {
		return "", fmt.Errorf("image %s: %w", img.Ref(), err)
	}
	digest, err := image.Digest()
	if err != nil {
		return "", fmt.Errorf("image %s: %w", img.Ref(), err)
	}
	opts, err := r.options(ctx, repo)
	if err != nil {
		return "", err
	}
	tag := repo.Registry.Repo(repo.RepositoryStr(), img.Name).Tag(img.Tag + "-" + digest.Hex[:12])
	pinned := tag.Name() + "@" + digest.String()
	// Already there under its tag: nothing to send (a HEAD, not blobs).
	if d, err := remote.Head(tag, opts...); err == nil && d.Digest == digest {
		return pinned, nil
	} else if err != nil && !isNotFound(err) {
		return "", fmt.Errorf("registry %s: %w", repo.RegistryStr(), err)
	}
	if err := remote.Write(tag, image, opts...); err != nil {
		return "", fmt.Errorf("pushing %s to %s: %w", img.Ref(), tag.Name(), err)
	}
	return pinned, nil
}

// Has says whether the registry has the image pinned (as Push returned
// it): a HEAD request, nothing compressed or sent.
func (r Repository) Has(ctx context.Context, pinned string) (bool, error) {
	repo, err := r.repository()
	if err != nil {
		return false, err
	}
	var nameOpts []name.Option
	if r.PlainHTTP {
		nameOpts = append(nameOpts, name.Insecure)
	}
	ref, err := name.ParseReference(pinned, nameOpts...)
	if err != nil {
		return false, err
	}
	opts, err := r.options(ctx, repo)
	if err != nil {
		return false, err
	}
	switch _, err := remote.Head(ref, opts...); {
	case err == nil:
		return true, nil
	case isNotFound(err):
		return false, nil
	default:
		return false, fmt.Errorf("registry %s: %w", repo.RegistryStr(), err)
	}
}

// options carry the credentials, and keep every request on HTTPS unless
// PlainHTTP: go-containerregistry falls back to HTTP for loopback and
// private addresses by itself, which would send credentials in clear.
func (r Repository) options(ctx context.Context, repo name.Repository) ([]remote.Option, error) {
	auth, err := r.authenticator(repo.RegistryStr())
	if err != nil {
		return nil, err
	}
	rt := r.Transport
	if rt == nil {
		rt = remote.DefaultTransport
	}
	if !r.PlainHTTP {
		rt = httpsOnly{rt}
	}
	return []remote.Option{remote.WithContext(ctx), remote.WithAuth(auth), remote.WithTransport(rt)}, nil
}

type httpsOnly struct{ next http.RoundTripper }

func (h httpsOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" {
		return nil, fmt.Errorf("not sending %s %s: the registry is reached over HTTPS only (set PlainHTTP, lotse manager --image-registry-plain-http, for a registry that speaks HTTP)", req.Method, req.URL.Redacted())
	}
	return h.next.RoundTrip(req)
}

func isNotFound(err error) bool {
	var terr *transport.Error
	return errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound
}

// CheckCredentials reads the push credentials for the repository's
// registry, as Push will.
func (r Repository) CheckCredentials() error {
	repo, err := r.repository()
	if err != nil {
		return err
	}
	_, err = r.authenticator(repo.RegistryStr())
	return err
}

// authenticator reads the credentials for host from the Docker config
// file; without one it is anonymous.
func (r Repository) authenticator(host string) (authn.Authenticator, error) {
	if r.Credentials == "" {
		return authn.Anonymous, nil
	}
	data, err := os.ReadFile(r.Credentials)
	if err != nil {
		return nil, fmt.Errorf("registry credentials: %w", err)
	}
	auths, err := ParseDockerConfig(data)
	if err != nil {
		return nil, fmt.Errorf("registry credentials %s: %w", r.Credentials, err)
	}
	cfg, ok := auths[host]
	if !ok {
		return nil, fmt.Errorf("registry credentials %s: no entry for %s in its \"auths\"", r.Credentials, host)
	}
	return authn.FromConfig(cfg), nil
}

// ParseDockerConfig reads the "auths" of a Docker config file (as
// `docker login` writes it, and as a kubernetes.io/dockerconfigjson Secret
// holds it), keyed by registry host. Keys written as URLs
// ("https://host/v1/") count as their host.
func ParseDockerConfig(data []byte) (map[string]authn.AuthConfig, error) {
	var file struct {
		Auths map[string]struct {
			Auth          string `json:"auth"`
			Username      string `json:"username"`
			Password      string `json:"password"`
			IdentityToken string `json:"identitytoken"`
			RegistryToken string `json:"registrytoken"`
		} `json:"auths"`
	}
	if err := json.Unmarshal(data, &file); err != nil {
		return nil, fmt.Errorf("not a Docker config file: %w", err)
	}
	if len(file.Auths) == 0 {
		return nil, errors.New(`it has no "auths"`)
	}
	out := map[string]authn.AuthConfig{}
	for key, a := range file.Auths {
		host := strings.TrimPrefix(strings.TrimPrefix(key, "https://"), "http://")
		if i := strings.Index(host, "/"); i >= 0 {
			host = host[:i]
		}
		cfg := authn.AuthConfig{Username: a.Username, Password: a.Password, IdentityToken: a.IdentityToken, RegistryToken: a.RegistryToken}
		if a.Auth != "" {
			raw, err := base64.StdEncoding.DecodeString(a.Auth)
			if err != nil {
				return nil, fmt.Errorf("auths[%q].auth: not base64: %w", key, err)
			}
			user, pass, ok := strings.Cut(string(raw), ":")
			if !ok {
				return nil, fmt.Errorf("auths[%q].auth: not USER:PASSWORD in base64", key)
			}
			cfg.Username, cfg.Password = user, pass
		}
		out[host] = cfg
	}
	return out, nil
}
