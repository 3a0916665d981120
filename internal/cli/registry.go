package cli

import (
	"fmt"
	"os"

	"github.com/spf13/pflag"

	"github.com/lotse/lotse/internal/images"
)

// registryFlags say where the seed-hosted control planes' images come
// from when a seed's nodes pull them from a registry.
type registryFlags struct {
	repository, credentials, pullCredentials string
	plainHTTP                                bool
}

func (f *registryFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&f.repository, "image-registry", "", "repository of a registry every seed's nodes pull from, e.g. registry.example.net:5000/lotse: the control planes' images are pushed there (by digest), so a seed need not be a Lotse cluster of this host")
	fs.BoolVar(&f.plainHTTP, "image-registry-plain-http", false, "the --image-registry speaks HTTP, not HTTPS (the seeds' container runtimes must allow it too)")
	fs.StringVar(&f.credentials, "image-registry-credentials", "", "Docker config file (its \"auths\", as docker login writes it) with the credentials to push to --image-registry")
	fs.StringVar(&f.pullCredentials, "image-pull-credentials", "", "Docker config file the seed-hosted control planes' pods pull their images with (an image pull Secret in each control plane's namespace)")
}

// options checks the flags and returns the manager's registry and pull
// credentials (nil when not given).
func (f *registryFlags) options(controlPlaneImage string) (*images.Repository, []byte, error) {
	var repo *images.Repository
	if f.repository != "" {
		if controlPlaneImage != "" {
			return nil, nil, fmt.Errorf("--image-registry and --control-plane-image exclude each other: with --control-plane-image no image is built or pushed")
		}
		repo = &images.Repository{Name: f.repository, PlainHTTP: f.plainHTTP, Credentials: f.credentials}
		if err := repo.Validate(); err != nil {
			return nil, nil, fmt.Errorf("--image-registry: %w", err)
		}
	} else if f.plainHTTP || f.credentials != "" {
		return nil, nil, fmt.Errorf("--image-registry-plain-http and --image-registry-credentials need --image-registry")
	}
	if f.credentials != "" {
		if _, err := readDockerConfig(f.credentials); err != nil {
			return nil, nil, fmt.Errorf("--image-registry-credentials: %w", err)
		}
		// It must name the registry, or every push would fail.
		if err := repo.CheckCredentials(); err != nil {
			return nil, nil, fmt.Errorf("--image-registry-credentials: %w", err)
		}
	}
	var pull []byte
	if f.pullCredentials != "" {
		var err error
		if pull, err = readDockerConfig(f.pullCredentials); err != nil {
			return nil, nil, fmt.Errorf("--image-pull-credentials: %w", err)
		}
	}
	return repo, pull, nil
}

// readDockerConfig reads a Docker config file and checks it has "auths".
func readDockerConfig(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if _, err := images.ParseDockerConfig(data); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return data, nil
}
