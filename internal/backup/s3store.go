package backup

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sort"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Config says where an S3Store keeps its files.
type S3Config struct {
	// Endpoint is the server's URL: https://host[:port], or http://host[:port]
	// which sends credentials and data in the clear and so is meant only
	// for a server on loopback (tests, a local gateway).
	Endpoint string
	// Bucket holds the files, under Prefix ("a/b/" style; a missing
	// trailing slash is added, and "" means the bucket's top level).
	Bucket, Prefix string
	// Region is the bucket's region; empty asks the server for it.
	Region string
	// AccessKeyID and SecretAccessKey sign the requests; both empty sends
	// anonymous requests.
	AccessKeyID, SecretAccessKey string
	// CABundle holds PEM certificates trusted, besides the system's, for an
	// https endpoint.
	CABundle []byte
}

// S3Store is a Store in a bucket of an S3-compatible server (AWS S3, MinIO,
// Ceph RGW, versitygw, ...), addressed path-style so that any server works.
// Each file is one object, PREFIX+NAME; a PUT or a completed multipart
// upload appears whole, so no half-written file is ever visible.
type S3Store struct {
	client   *minio.Client
	endpoint string // as configured, without credentials
	bucket   string
	prefix   string
}

// s3PartSize is the multipart part size: a Put of unknown size buffers one
// part at a time, so it bounds the memory an upload takes. With S3's
// 10,000-part limit it allows files up to about 156 GiB.
const s3PartSize = 16 << 20

// s3MaxRetries bounds how often the client retries a failed request (with
// backoff), so that an unreachable server is reported within seconds.
const s3MaxRetries = 3

var _ Store = (*S3Store)(nil)

// NewS3Store checks cfg and returns a store for it. It does not contact the
// server: Check does.
func NewS3Store(cfg S3Config) (*S3Store, error) {
	u, err := url.Parse(cfg.Endpoint)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return nil, fmt.Errorf("S3 endpoint %q is not a URL like https://host:port", cfg.Endpoint)
	}
	if u.User != nil {
		return nil, fmt.Errorf("S3 endpoint %s://%s must not hold credentials: give them as the access key and secret", u.Scheme, u.Host)
	}
	var secure bool
	switch u.Scheme {
	case "https":
		secure = true
	case "http":
		// Signed requests in the clear: only to this machine.
		if ip := net.ParseIP(u.Hostname()); u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return nil, fmt.Errorf("S3 endpoint %q: http:// is only for a store on this machine's loopback; use https://", cfg.Endpoint)
		}
	default:
		return nil, fmt.Errorf("S3 endpoint %q: the scheme must be https (or http for a server on loopback)", cfg.Endpoint)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("S3 endpoint %q must be just scheme://host:port: the bucket and prefix are set apart", cfg.Endpoint)
	}
	endpoint := u.Scheme + "://" + u.Host
	if cfg.Bucket == "" {
		return nil, fmt.Errorf("S3 store at %s: no bucket given", endpoint)
	}
	prefix := strings.TrimLeft(cfg.Prefix, "/")
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	if strings.Contains(prefix, "//") {
		return nil, fmt.Errorf("S3 prefix %q has an empty path segment", cfg.Prefix)
	}

	transport, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, err
	}
	if len(cfg.CABundle) > 0 {
		if !secure {
			return nil, fmt.Errorf("S3 endpoint %s: a CA bundle is given but the endpoint is not https", endpoint)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(cfg.CABundle) {
			return nil, fmt.Errorf("S3 endpoint %s: the CA bundle holds no PEM certificate", endpoint)
		}
		transport.TLSClientConfig.RootCAs = pool
	}
	var creds *credentials.Credentials
	if cfg.AccessKeyID != "" || cfg.SecretAccessKey != "" {
		creds = credentials.NewStaticV4(cfg.AccessKeyID, cfg.SecretAccessKey, "")
	} else {
		creds = credentials.New(&credentials.Static{}) // anonymous
	}
	client, err := minio.New(u.Host, &minio.Options{
		Creds:        creds,
		Secure:       secure,
		Transport:    transport,
		Region:       cfg.Region,
		BucketLookup: minio.BucketLookupPath,
		MaxRetries:   s3MaxRetries,
	})
	if err != nil {
		return nil, fmt.Errorf("S3 endpoint %s: %w", endpoint, err)
	}
	return &S3Store{client: client, endpoint: endpoint, bucket: cfg.Bucket, prefix: prefix}, nil
}

// String is "s3://BUCKET/PREFIX at ENDPOINT".
func (s *S3Store) String() string {
	return fmt.Sprintf("s3://%s/%s at %s", s.bucket, s.prefix, s.endpoint)
}

// Check verifies that the bucket exists and that the credentials may list
// it. It lists rather than asking with HEAD, whose errors have no body: a
// server may answer a HEAD with a bare 404 for an unknown access key
// (versitygw does), which would read as a missing bucket.
func (s *S3Store) Check(ctx context.Context) error {
	// Leaving a listing early needs its context cancelled, or its goroutine stays.
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	objs := s.client.ListObjects(lctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix, MaxKeys: 1})
	if obj, ok := <-objs; ok && obj.Err != nil {
		return s.fail("access", "", obj.Err)
	}
	if err := ctx.Err(); err != nil {
		return s.fail("access", "", err)
	}
	return nil
}

// Put uploads r as name; size -1 streams it in parts of s3PartSize.
func (s *S3Store) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	if err := checkName(name); err != nil {
		return err
	}
	_, err := s.client.PutObject(ctx, s.bucket, s.prefix+name, r, size, minio.PutObjectOptions{
		ContentType: "application/octet-stream",
		PartSize:    s3PartSize,
		// One part in flight: memory stays at one part, whatever the size.
		NumThreads: 1,
	})
	if err != nil {
		return s.fail("upload", name, err)
	}
	return nil
}

// Get opens name for reading; ErrNotFound if the bucket does not hold it.
func (s *S3Store) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	obj, err := s.client.GetObject(ctx, s.bucket, s.prefix+name, minio.GetObjectOptions{})
	if err != nil {
		return nil, s.fail("download", name, err)
	}
	// GetObject is lazy: Stat sends the request and reports a missing key.
	if _, err := obj.Stat(); err != nil {
		obj.Close()
		if minio.ToErrorResponse(err).Code == minio.NoSuchKey {
			// Some servers (versitygw) answer NoSuchKey for a missing
			// bucket too, or for an unknown access key: only a bucket
			// that Check can use makes it a missing file.
			if cerr := s.Check(ctx); cerr != nil {
				return nil, cerr
			}
			return nil, fmt.Errorf("%w: %s in %s", ErrNotFound, name, s)
		}
		return nil, s.fail("download", name, err)
	}
	return obj, nil
}

// List returns the files directly under the prefix, sorted by name; deeper
// keys (other prefixes' files) are not this store's.
func (s *S3Store) List(ctx context.Context) ([]Object, error) {
	lctx, cancel := context.WithCancel(ctx) // stops the listing on an early return
	defer cancel()
	var out []Object
	for obj := range s.client.ListObjects(lctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix}) {
		if obj.Err != nil {
			return nil, s.fail("list", "", obj.Err)
		}
		name := strings.TrimPrefix(obj.Key, s.prefix)
		if name == "" || strings.Contains(name, "/") {
			continue // the prefix's own marker, or a common prefix below it
		}
		out = append(out, Object{Name: name, Size: obj.Size, Modified: obj.LastModified})
	}
	if err := ctx.Err(); err != nil {
		return nil, s.fail("list", "", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Delete removes name; a missing one is not an error.
func (s *S3Store) Delete(ctx context.Context, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	err := s.client.RemoveObject(ctx, s.bucket, s.prefix+name, minio.RemoveObjectOptions{})
	if err != nil && minio.ToErrorResponse(err).Code != minio.NoSuchKey {
		return s.fail("delete", name, err)
	}
	return nil
}

func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\\") {
		return fmt.Errorf("invalid backup file name %q: want a plain file name", name)
	}
	return nil
}

func (s *S3Store) noBucket() error {
	return fmt.Errorf("bucket %s does not exist at %s; create it or fix spec.backup.s3.bucket", s.bucket, s.endpoint)
}

// fail describes err for an operation on name ("" for the store itself):
// where it happened, and what to check.
func (s *S3Store) fail(op, name string, err error) error {
	what := s.String()
	if name != "" {
		what = name + " in " + what
	}
	resp := minio.ToErrorResponse(err)
	var hint string
	switch resp.Code {
	case minio.NoSuchBucket:
		if op == "access" {
			return s.noBucket()
		}
		return fmt.Errorf("%s %s: %w", op, what, s.noBucket())
	case "SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidSecretAccessKey", "XAdminUserNotFound":
		hint = "check the access key ID and secret access key (accessKeyID and secretAccessKey in the Secret of spec.backup.s3.credentialsSecretRef)"
	case minio.AccessDenied, "AllAccessDisabled", "InvalidToken", "ExpiredToken":
		// A HEAD request's 403 has no body: it may be a wrong key as well.
		hint = fmt.Sprintf("check the access key ID and secret access key (the Secret of spec.backup.s3.credentialsSecretRef), and that they may read and write bucket %s", s.bucket)
	case "AuthorizationHeaderMalformed", "InvalidRegion", "IllegalLocationConstraintException":
		hint = "check spec.backup.s3.region"
	}
	if hint == "" {
		var netErr net.Error
		var x509Err x509.UnknownAuthorityError
		var hostErr x509.HostnameError
		switch {
		case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		case errors.As(err, &x509Err), errors.As(err, &hostErr), strings.Contains(err.Error(), "x509:"):
			hint = "check the server's certificate, or give its CA as ca.crt in the Secret of spec.backup.s3.credentialsSecretRef"
		case errors.As(err, &netErr), resp.Code == "" && resp.StatusCode == 0:
			hint = fmt.Sprintf("check that %s is reachable from here and serves S3", s.endpoint)
		}
	}
	if hint == "" {
		return fmt.Errorf("%s %s: %w", op, what, err)
	}
	return &hintedError{
		msg: fmt.Sprintf("%s %s: %s; %s", op, what, strings.TrimSuffix(err.Error(), "."), hint),
		err: err,
	}
}

// hintedError is an error with advice appended to its message.
type hintedError struct {
	msg string
	err error
}

func (e *hintedError) Error() string { return e.msg }
func (e *hintedError) Unwrap() error { return e.err }
